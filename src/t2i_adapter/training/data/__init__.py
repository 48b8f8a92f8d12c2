"""Training datasets: five formats, one record/example model, transforms, and a resumable order."""

from t2i_adapter.training.data.example import Example, Record
from t2i_adapter.training.data.open import detect_format, open_dataset, open_dataset_with
from t2i_adapter.training.data.shards import StreamSource
from t2i_adapter.training.data.source import IndexedSource

__all__ = [
    "Example",
    "IndexedSource",
    "Record",
    "StreamSource",
    "detect_format",
    "open_dataset",
    "open_dataset_with",
]
