"""`t2i-adapter convert`: rewrite an adapter checkpoint in the diffusers or the original layout.

`--to diffusers` writes a folder that diffusers' `T2IAdapter.from_pretrained` (and this package)
reads; `--to original` writes one `.safetensors` or `.pth` file with TencentARC key names, the
layout ComfyUI and the AUTOMATIC1111 ControlNet extension read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from t2i_adapter.adapters.kinds import ADAPTER_KINDS
from t2i_adapter.checkpoints.layout import LAYOUTS
from t2i_adapter.generation.settings import DTYPE_ALIASES, DTYPES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert an adapter checkpoint between the diffusers and the original layout",
        description=(
            "Convert a T2I-Adapter checkpoint (original .pth/.safetensors, diffusers folder, hub id) "
            "to the diffusers layout (a folder) or the original TencentARC layout (one file)."
        ),
    )
    parser.add_argument("source", metavar="SRC", help="adapter file, diffusers folder or hub id")
    parser.add_argument("--to", required=True, choices=LAYOUTS, help="layout to write")
    parser.add_argument(
        "--out",
        required=True,
        metavar="DEST",
        help="destination: a folder for --to diffusers, a .safetensors or .pth file for --to original",
    )
    parser.add_argument(
        "--kind",
        choices=ADAPTER_KINDS,
        help="adapter kind, when detection from the keys is not what you want",
    )
    parser.add_argument(
        "--num-res-blocks",
        type=int,
        metavar="N",
        help="resnet blocks per level, for original-layout files whose count the keys leave open",
    )
    parser.add_argument(
        "--dtype",
        choices=[*DTYPES, *DTYPE_ALIASES],
        help="store the weights in this precision (default: as loaded, float32)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace DEST if it exists")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from t2i_adapter.checkpoints import load_adapter, save_adapter
    from t2i_adapter.errors import InputFileError

    if args.num_res_blocks is not None and args.num_res_blocks < 1:
        raise InputFileError(args.source, "--num-res-blocks must be at least 1")
    if Path(args.out).expanduser().exists() and not args.overwrite:
        raise InputFileError(args.out, "already exists (pass --overwrite to replace it)")
    dtype = getattr(torch, DTYPE_ALIASES.get(args.dtype, args.dtype)) if args.dtype else None
    adapter = load_adapter(args.source, args.kind, num_res_blocks=args.num_res_blocks)
    dest = save_adapter(adapter, args.out, layout=args.to, dtype=dtype, overwrite=args.overwrite)
    parameters = sum(p.numel() for p in adapter.parameters())
    print(f"wrote {dest} ({adapter.adapter_kind} adapter, {parameters:,} parameters, {args.to} layout)")
    return 0
