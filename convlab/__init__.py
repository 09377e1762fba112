"""convlab: a readable NumPy deep-learning library in the style of CS231n."""

from convlab._threads import get_num_threads, set_num_threads
from convlab.serialization import load_model, save_model

__version__ = "0.1.0"
__all__ = ["get_num_threads", "load_model", "save_model", "set_num_threads"]
