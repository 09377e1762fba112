"""convlab: a readable NumPy deep-learning library in the style of CS231n."""

__version__ = "0.1.0"
