"""convlab: a readable NumPy deep-learning library in the style of CS231n."""

from convlab.serialization import load_model, save_model

__version__ = "0.1.0"
__all__ = ["load_model", "save_model"]
