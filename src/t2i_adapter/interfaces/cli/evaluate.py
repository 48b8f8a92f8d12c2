"""`t2i-adapter evaluate`: how faithfully do generated pictures follow their condition?

The controllability protocol of ControlNet++: regenerate from each sample's condition, read the
condition back from every picture with the same kind of model, score agreement (canny F1,
sketch SSIM, depth RMSE, seg mIoU, pose PCK/OKS; CLIP score, FID, KID on request), for the
no-adapter baseline and every compared adapter on the same seeds. Without `--data` it runs on
fresh shapes-world scenes with the demo's shapes metrics. Writes report.md (beside the published
figures where the protocol matches), grid.png, samples.csv, summary.json and, for checkpoints of
one run, metrics_by_step.png to `--out`; generated pictures are kept there, so a rerun resumes.
"""

from __future__ import annotations

import argparse
import sys

from t2i_adapter.errors import T2IAdapterError
from t2i_adapter.interfaces.cli.generate import ForLastAdapter, condition_options, local_absolute, lora_flag


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score how well generated images follow their condition (adapters vs the no-adapter baseline)",
        description=__doc__.split("\n\n")[1].replace("\n", " ")
        + " Example: t2i-adapter evaluate --model stable-diffusion-v1-5/stable-diffusion-v1-5 --adapter "
        "TencentARC/t2iadapter_canny_sd15v2 --cond-type canny --data eval.jsonl --images-per-cond 4",
    )
    what = parser.add_argument_group("what to compare")
    what.add_argument(
        "--model", required=True, help="base model: 'demo', a hub id, a diffusers folder or a file"
    )
    what.add_argument(
        "--adapter",
        action="append",
        required=True,
        help="adapter to evaluate (repeat to compose several, each with its own --cond-type)",
    )
    what.add_argument(
        "--cond-type",
        action="append",
        required=True,
        help="condition type of each adapter (canny, sketch, depth, seg, openpose, color, ...): the "
        "dataset's <stem>.<cond-type> files, or the preprocessor computing them from the photos",
    )
    what.add_argument(
        "--cond-option",
        action=ForLastAdapter,
        dest="condition_options",
        default=[],
        metavar="KEY=VALUE",
        help="option of the preprocessor of the --adapter before it, used to compute missing conditions "
        "and to read them back (canny thresholds, detect_resolution, ...)",
    )
    what.add_argument(
        "--cond-model",
        action=ForLastAdapter,
        dest="condition_options",
        default=[],
        metavar="PATH_OR_ID",
        help="the re-extraction model of the --adapter before it (depth, seg, pose); short for "
        "--cond-option model=PATH_OR_ID",
    )
    what.add_argument(
        "--compare",
        action="extend",
        nargs="+",
        default=[],
        metavar="ADAPTER",
        help="other weights for the (first) adapter, on the same samples and seeds: adapter files, folders "
        "or hub ids, a checkpoint folder, or a training run's folder (each of its checkpoints)",
    )
    what.add_argument("--no-baseline", action="store_true", help="leave out the no-adapter baseline")

    data = parser.add_argument_group("samples")
    data.add_argument(
        "--data",
        default=None,
        help="dataset in any format train reads (meta file, folder, JSONL, .tar shards, datasets folder, "
        "hf:<name>), or a folder of <stem>.<cond-type>.png + <stem>.txt pairs (default: shapes-world scenes)",
    )
    data.add_argument("--data-format", default="auto", help="dataset format (default: detected)")
    data.add_argument("--num", type=int, default=200, help="number of samples (default 200)")
    data.add_argument("--image-column", default="image", help="Hugging Face datasets: photo column (image)")
    data.add_argument(
        "--condition-column",
        default="conditioning_image",
        help="Hugging Face datasets: condition column (conditioning_image; absent: computed from the photo)",
    )
    data.add_argument("--caption-column", default="text", help="Hugging Face datasets: caption column (text)")

    scores = parser.add_argument_group("metrics")
    scores.add_argument(
        "--metric",
        action="append",
        default=None,
        help="f1, ssim, rmse, miou, pck, clip, fid, kid (or shapes); repeat for several (default: the "
        "condition type's: canny f1, sketch-like ssim, depth rmse, seg miou, pose pck; shapes-world scenes: shapes)",
    )
    scores.add_argument(
        "--clip-model", default=None, help="CLIP model for --metric clip (openai/clip-vit-base-patch16)"
    )
    scores.add_argument(
        "--fid-model",
        default=None,
        help="NVIDIA's TorchScript inception-2015-12-05.pt (default: torch's hub cache)",
    )

    sampling = parser.add_argument_group("generation (the protocol: 20 steps, guidance 7.5, 4 per condition)")
    sampling.add_argument("--images-per-cond", type=int, default=1, help="pictures per condition (default 1)")
    sampling.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    sampling.add_argument(
        "--guidance-scale", type=float, default=7.5, help="classifier-free guidance (default 7.5)"
    )
    sampling.add_argument("--weight", type=float, default=1.0, help="adapter weight (default 1)")
    sampling.add_argument(
        "--seed", type=int, default=0, help="seed of the first sample; sample i uses seed+i"
    )
    sampling.add_argument("--negative-prompt", default="", help="negative prompt (default: none)")
    sampling.add_argument("--scheduler", default="ddim", help="sampler (default ddim)")
    sampling.add_argument(
        "--eta",
        type=float,
        default=None,
        help="the scheduler's step noise: DDIM's eta, TCD's gamma (default: the scheduler's own)",
    )
    sampling.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="PATH_OR_HUB_ID[:SCALE]",
        help="a LoRA on the base model for every variant and its scale (1.0); repeat for several",
    )
    sampling.add_argument(
        "--vae",
        metavar="PATH_OR_HUB_ID",
        help="another VAE instead of the base model's, for every variant (folder, hub id or file)",
    )
    sampling.add_argument(
        "--resolution", type=int, default=None, help="square size (default: the model's native)"
    )
    sampling.add_argument("--dtype", default="float32", help="float32 (default), float16, bfloat16")
    sampling.add_argument("--device", default=None, help="cpu, cuda, ... (default: a GPU when there is one)")
    parser.add_argument(
        "--out", default="evaluation", help="folder for the report, its files and the pictures"
    )
    parser.set_defaults(func=run)


def _variants(args: argparse.Namespace):
    from t2i_adapter.evaluation import Variant, baseline
    from t2i_adapter.training.evaluation import checkpoint_variants

    variants = [] if args.no_baseline else [baseline()]
    variants += (
        checkpoint_variants(args.adapter[0], name_runs=bool(args.compare))
        if len(args.adapter) == 1
        else [Variant(" + ".join(args.adapter), tuple(args.adapter))]
    )
    for name in args.compare:
        for variant in checkpoint_variants(name, name_runs=len(args.compare) > 1):
            adapters = (*variant.adapters, *args.adapter[1:])  # the other composed adapters stay
            variants.append(Variant(variant.label, adapters, variant.step, variant.run))
    return variants


def _samples(args: argparse.Namespace):
    """The samples and, for the shapes world, its scorer."""
    from t2i_adapter.demo import evaluate as shapes

    if args.data is None:
        return shapes.synthetic_samples(args.cond_type, args.num), "fresh shapes-world scenes", True
    if shapes.is_pairs_folder(args.data, args.cond_type[0]):
        return shapes.folder_samples(args.data, args.cond_type, args.num), f"folder {args.data}", True
    from t2i_adapter.training.evaluation import dataset_samples

    samples = dataset_samples(
        args.data,
        args.cond_type,
        args.num,
        data_format=args.data_format,
        image_column=args.image_column,
        condition_column=args.condition_column,
        caption_column=args.caption_column,
    )
    return samples, args.data, False


def run(args: argparse.Namespace) -> int:
    from t2i_adapter.demo import evaluate as shapes
    from t2i_adapter.evaluation import EvalSettings, run_evaluation
    from t2i_adapter.evaluation.image_quality import DEFAULT_CLIP_MODEL
    from t2i_adapter.evaluation.report import table, write_report

    if len(args.cond_type) != len(args.adapter):
        raise T2IAdapterError(
            f"{len(args.adapter)} --adapter but {len(args.cond_type)} --cond-type; give one --cond-type per --adapter"
        )
    if args.num < 1:
        raise T2IAdapterError(f"--num must be at least 1, not {args.num}")
    options = condition_options(args)
    samples, data, shapes_world = _samples(args)
    metrics = args.metric
    if shapes_world and metrics is None:
        metrics = [shapes.SHAPES_METRICS]
    settings = EvalSettings(
        model=args.model,
        cond_types=list(args.cond_type),
        variants=_variants(args),
        metrics=metrics,
        images_per_cond=args.images_per_cond,
        steps=args.steps,
        guidance_scale=args.guidance_scale,
        weight=args.weight,
        seed=args.seed,
        negative_prompt=args.negative_prompt,
        scheduler=args.scheduler,
        eta=args.eta,
        loras=[lora_flag(text) for text in args.lora],
        vae=local_absolute(args.vae) if args.vae else None,
        resolution=args.resolution,
        dtype=args.dtype,
        device=args.device,
        cond_options=options,
        clip_model=args.clip_model or DEFAULT_CLIP_MODEL,
        fid_model=args.fid_model,
        data=data,
    )
    wants_shapes = metrics is not None and shapes.SHAPES_METRICS in metrics
    result = run_evaluation(
        settings,
        samples,
        out_dir=args.out,
        scorers=[shapes.score] if wants_shapes else [],
        scorer_metrics=[shapes.SHAPES_METRICS],
        progress=_progress,
    )
    files = write_report(
        result,
        args.out,
        extra_titles=shapes.METRIC_TITLES,
        notes=shapes.METRIC_NOTES if wants_shapes else "",
    )
    print(table(result, shapes.METRIC_TITLES))
    for name in ("report", "grid", "samples", "steps"):
        if name in files:
            print(f"{name}: {files[name]}")
    return 0


def _progress(done: int, total: int) -> None:
    if sys.stderr.isatty() or done == total or done % 50 == 0:
        print(f"\revaluated {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)
