"""Classifiers following the ``params`` / ``loss(X, y=None)`` contract, and (as the course's
assignment-1 ``classifiers/__init__.py`` exports them) the kNN and linear classifiers."""

from convlab.classifiers.cnn import ThreeLayerConvNet
from convlab.classifiers.convnet import ConvNet
from convlab.classifiers.fc_net import FullyConnectedNet, TwoLayerNet
from convlab.classifiers.k_nearest_neighbor import KNearestNeighbor
from convlab.classifiers.linear_classifier import LinearClassifier, LinearSVM, Softmax
from convlab.classifiers.rnn import CaptioningRNN

__all__ = ["CaptioningRNN", "ConvNet", "FullyConnectedNet", "KNearestNeighbor",
           "LinearClassifier", "LinearSVM", "Softmax", "ThreeLayerConvNet", "TwoLayerNet"]
