"""Classifiers following the ``params`` / ``loss(X, y=None)`` contract."""

from convlab.classifiers.cnn import ThreeLayerConvNet
from convlab.classifiers.convnet import ConvNet
from convlab.classifiers.fc_net import FullyConnectedNet, TwoLayerNet

__all__ = ["ConvNet", "FullyConnectedNet", "ThreeLayerConvNet", "TwoLayerNet"]
