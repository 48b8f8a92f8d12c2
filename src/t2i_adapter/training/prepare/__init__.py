"""`t2i-adapter data prepare`: compute a training set's conditions (and latents) once, into shards.

```python
from t2i_adapter.training.prepare import PrepareSettings, prepare_dataset

summary = prepare_dataset(PrepareSettings(source="photos/", out="prepared/", cond_type="depth"))
```

See `run.py` for the steps and `training/data/prepared.py` for what the output folder holds.
"""

from t2i_adapter.training.prepare.run import PrepareSummary, prepare_dataset
from t2i_adapter.training.prepare.settings import PrepareSettings

__all__ = ["PrepareSettings", "PrepareSummary", "prepare_dataset"]
