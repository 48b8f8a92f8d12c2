"""Training an adapter: `train(TrainConfig(...)) -> output folder`; see docs/training.md.

```python
from t2i_adapter.training import TrainConfig, train

out = train(TrainConfig(model="demo", data="shapes/meta.txt", cond_type="sketch", output_dir="runs/sketch",
                        resolution=64, batch_size=4, max_steps=200, lr=1e-4))
adapter = load_adapter(out)
```
"""

from t2i_adapter.training.config import TrainConfig


def train(config: TrainConfig):
    """Train an adapter as `config` says; returns the output folder (`load_adapter` reads it)."""
    # the loop imports accelerate and diffusers: `TrainConfig` (the CLI's flags) must stay light
    from t2i_adapter.training.loop import train as run_training

    return run_training(config)


__all__ = ["TrainConfig", "train"]
