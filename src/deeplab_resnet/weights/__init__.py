"""Reading and writing weights: the native format, the original files, and named weights."""

from .convert import ConvertReport
from .convert import convert as convert_weights
from .loading import READERS, load_model, read_weights
from .native import WeightsMeta, read_native, save_weights
from .registry import REGISTRY, WeightsEntry
from .registry import fetch as fetch_weights
from .state import load_state

__all__ = [
    "READERS", "REGISTRY", "ConvertReport", "WeightsEntry", "WeightsMeta", "convert_weights", "fetch_weights",
    "load_model", "load_state", "read_native", "read_weights", "save_weights",
]  # fmt: skip
