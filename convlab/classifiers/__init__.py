"""Classifiers following the ``params`` / ``loss(X, y=None)`` contract."""

from convlab.classifiers.cnn import ThreeLayerConvNet
from convlab.classifiers.convnet import ConvNet
from convlab.classifiers.fc_net import FullyConnectedNet, TwoLayerNet
from convlab.classifiers.rnn import CaptioningRNN

__all__ = ["CaptioningRNN", "ConvNet", "FullyConnectedNet", "ThreeLayerConvNet", "TwoLayerNet"]
