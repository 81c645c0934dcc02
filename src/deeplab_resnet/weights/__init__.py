"""Reading and writing weights: the native format and (through readers) the original files."""

from .loading import READERS, load_model, load_state, read_weights
from .native import WeightsMeta, read_native, save_weights

__all__ = ["READERS", "WeightsMeta", "load_model", "load_state", "read_native", "read_weights", "save_weights"]
