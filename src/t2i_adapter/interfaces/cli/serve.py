"""`t2i-adapter serve`: the web UI (Gradio) on this machine only, unless `--host` says otherwise."""

from __future__ import annotations

import argparse

from t2i_adapter.errors import T2IAdapterError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="start the web UI",
        description="Start the web UI: condition previews, 1-4 adapter units, gallery, PNGs with parameters.",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes it to the network)",
    )
    parser.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    parser.add_argument(
        "--model",
        default="demo",
        help="base model: 'demo', a diffusers folder, a checkpoint file or a hub id",
    )
    parser.add_argument(
        "--vae",
        default=None,
        metavar="PATH_OR_HUB_ID",
        help="another VAE for the model, the page's starting value of its VAE box: a diffusers VAE folder, "
        "a hub id or a .safetensors/.ckpt/.pt file (default: the model's own)",
    )
    parser.add_argument(
        "--adapter",
        action="append",
        default=None,
        metavar="NAME",
        help="adapter offered in the page's lists (repeatable; default: the demo adapters with --model demo)",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=20.0,
        help="largest upload accepted, in megabytes (default 20); larger files are refused in the page",
    )
    parser.add_argument("--size", type=int, default=None, help="default width and height in the page")
    parser.add_argument(
        "--steps", type=int, default=None, help="default number of sampling steps in the page"
    )
    parser.add_argument(
        "--output-dir", default=None, help="where generated PNGs are kept (default: a new temporary folder)"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the UNet for every generation (CUDA graphs on CUDA; the first one of a "
        "size compiles, later ones are faster; eager with a warning where compile cannot run)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise T2IAdapterError(
            "the web UI needs Gradio; install it with: pip install 't2i-adapter[web]'"
        ) from None
    from t2i_adapter.interfaces.webui import build_app, launch_app

    if args.max_upload_mb <= 0:
        raise T2IAdapterError(f"--max-upload-mb must be positive, not {args.max_upload_mb:g}")
    if not 0 < args.port < 65536:
        raise T2IAdapterError(f"--port must be within 1..65535, not {args.port}")
    from t2i_adapter.generation.api import ModelCache

    app = build_app(
        model=args.model,
        cache=ModelCache(),
        adapters=args.adapter,
        output_dir=args.output_dir,
        max_upload_mb=args.max_upload_mb,
        default_size=args.size,
        default_steps=args.steps,
        compile=args.compile,
        vae=_vae(args.vae),
    )
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host}: anyone who can reach this address can use the page")
    # quiet: Gradio's own start-up lines suggest share=True (a public link), which serve never makes
    _, url, _ = launch_app(app, host=args.host, port=args.port, prevent_thread_lock=True, quiet=True)
    print(f"web UI: {url} (Ctrl+C stops it)", flush=True)
    app.block_thread()
    return 0


def _vae(name: str | None) -> str | None:
    """`--vae`: a local path made absolute (the page's PNGs rerun from any folder), a missing one
    refused now in one line; a hub id as it is (it loads on the first generation, like the model)."""
    if not name or not name.strip():
        return None
    from t2i_adapter.hub import locate
    from t2i_adapter.interfaces.cli.generate import local_absolute

    locate(name, what="VAE")
    return local_absolute(name.strip())
