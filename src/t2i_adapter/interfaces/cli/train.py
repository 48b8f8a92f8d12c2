"""`t2i-adapter train`: train an adapter on your own data (flags = config-file keys = TrainConfig fields).

Every `TrainConfig` field is a flag (`batch_size` -> `--batch-size`), with its help text from the
field. `--config run.yaml` (or .toml) sets any of them; flags given on the command line win.
Several GPUs or machines: `accelerate launch -m t2i_adapter.interfaces.cli.main train ...`.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex

from t2i_adapter.interfaces.cli.dataclass_flags import add_field_flag
from t2i_adapter.training.config import TrainConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train an adapter on your own data (CPU, one GPU, or many through accelerate launch)",
        description="Train a T2I-Adapter for a frozen Stable Diffusion model. Every flag is also a key of "
        "the --config file (YAML or TOML); flags win. See docs/training.md for the dataset formats.",
    )
    parser.add_argument("--config", help="YAML or TOML file with any of the settings below")
    for field in dataclasses.fields(TrainConfig):
        add_field_flag(parser, field)
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults < config file < flags given on the command line."""
    names = {field.name for field in dataclasses.fields(TrainConfig)}
    overrides = {name: value for name, value in vars(args).items() if name in names and value is not None}
    if args.config:
        return TrainConfig.from_file(args.config, overrides)
    return TrainConfig().with_overrides(overrides)


def run(args: argparse.Namespace) -> int:
    import logging
    import os

    from t2i_adapter.training import train

    main_process = os.environ.get("RANK", "0") == "0"  # under accelerate launch, only rank 0 talks
    logging.basicConfig(level=logging.INFO if main_process else logging.WARNING, format="%(message)s")
    config = config_from_args(args)
    output_dir = train(config)
    if main_process:
        print(f"adapter written to {output_dir}")
        print(f"try it: {try_command(config, output_dir)}")
    return 0


def try_command(config: TrainConfig, output_dir) -> str:
    """The `t2i-adapter generate` command that uses the adapter just trained.

    A condition the dataset brought as files (not a preprocessor's name) is given ready: `none`.
    """
    from t2i_adapter.conditions.registry import available_conditions

    cond_type = config.cond_type if config.cond_type in available_conditions() else "none"
    vae = ["--vae", config.vae] if config.vae else []
    return shlex.join(
        ["t2i-adapter", "generate", "--model", config.model, *vae, "--adapter", str(output_dir)]
        + ["--cond", "CONDITION.png", "--cond-type", cond_type, "--prompt", "PROMPT", "--out", "out.png"]
    )
