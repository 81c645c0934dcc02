"""Reading and writing weights: the native format, the original files, named weights and model hubs."""

from .convert import ConvertReport
from .convert import convert as convert_weights
from .loading import READERS, load_model, read_weights
from .native import WeightsMeta, read_native, save_weights
from .pretrained import from_pretrained, push_to_hub, save_pretrained
from .registry import REGISTRY, WeightsEntry
from .registry import fetch as fetch_weights
from .state import load_state

__all__ = [
    "READERS", "REGISTRY", "ConvertReport", "WeightsEntry", "WeightsMeta", "convert_weights", "fetch_weights",
    "from_pretrained", "load_model", "load_state", "push_to_hub", "read_native", "read_weights", "save_pretrained",
    "save_weights",
]  # fmt: skip
