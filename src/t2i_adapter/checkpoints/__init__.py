"""Adapter checkpoints: read any layout, detect kind and sizes, load, save and convert."""

from t2i_adapter.checkpoints.detect import detect_adapter, detect_kind, detect_layout
from t2i_adapter.checkpoints.layout import DIFFUSERS, LAYOUTS, ORIGINAL
from t2i_adapter.checkpoints.load import load_adapter
from t2i_adapter.checkpoints.read import read_checkpoint
from t2i_adapter.checkpoints.save import convert_adapter, original_state_dict, save_adapter

__all__ = [
    "DIFFUSERS",
    "LAYOUTS",
    "ORIGINAL",
    "convert_adapter",
    "detect_adapter",
    "detect_kind",
    "detect_layout",
    "load_adapter",
    "original_state_dict",
    "read_checkpoint",
    "save_adapter",
]
