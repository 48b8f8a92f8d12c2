"""Prompt agreement (CLIP score) and image quality (FID, KID) of a set of generated pictures.

CLIP score: a transformers CLIP model (default `openai/clip-vit-base-patch16`, as ControlNet++),
loaded through the preprocessors' loader, so the hub cache, offline mode and `model=PATH` apply.

FID and KID: torchmetrics' `FrechetInceptionDistance` / `KernelInceptionDistance` over Inception
features computed once per picture. The features come from NVIDIA's TorchScript Inception
(`inception-2015-12-05.pt`, the network clean-fid and StyleGAN use, and so the one behind the
published FIDs) after clean-fid's "clean" resize (bicubic per channel in float to 299 px). It is
used instead of torchmetrics' default network because that one needs torch-fidelity, which
requires torchvision (no CPU build of it exists for every platform). The file is TorchScript,
i.e. code: load only NVIDIA's file or one you made.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from t2i_adapter.conditions.model_loading import (
    load_cached,
    load_pretrained,
    resolve_model_folder,
)
from t2i_adapter.devices import resolve_device
from t2i_adapter.errors import InputFileError, MissingWeightsError
from t2i_adapter.evaluation.metrics import clip_score

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch16"
INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = f"https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/{INCEPTION_FILE}"
INCEPTION_SIZE = 299
KID_SUBSET_SIZE = 1000  # torchmetrics' and clean-fid's default; smaller sets use all their pictures
KID_SUBSETS = 100


# ---------------------------------------------------------------------------------------------
# CLIP score
# ---------------------------------------------------------------------------------------------


class ClipScorer:
    """CLIP score of pictures against their prompts with one transformers CLIP model."""

    def __init__(self, name: str = DEFAULT_CLIP_MODEL, device: str | None = None):
        from transformers import AutoTokenizer, CLIPModel  # here: transformers takes seconds to import

        self.loaded = load_pretrained(name, CLIPModel, what="CLIP score", device=device)
        folder = resolve_model_folder(name, what="CLIP score")
        self.tokenizer = load_cached(
            ("clip-tokenizer", str(name)), lambda: AutoTokenizer.from_pretrained(folder)
        )

    def __call__(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        """One score per (picture, prompt) pair; prompts past CLIP's 77 tokens are cut."""
        loaded = self.loaded
        pixels = loaded.processor(images=[image.convert("RGB") for image in images], return_tensors="pt")
        text = self.tokenizer(list(prompts), padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            outputs = loaded.model(
                input_ids=text["input_ids"].to(loaded.device),
                attention_mask=text["attention_mask"].to(loaded.device),
                pixel_values=pixels["pixel_values"].to(loaded.device, loaded.dtype),
            )
        image_embeds = outputs.image_embeds.float().cpu().numpy()  # (N, D)
        text_embeds = outputs.text_embeds.float().cpu().numpy()  # (N, D)
        return [float(value) for value in clip_score(image_embeds, text_embeds)]


# ---------------------------------------------------------------------------------------------
# Inception features
# ---------------------------------------------------------------------------------------------


def default_inception_path() -> Path:
    """Where the Inception network is looked for (and downloaded to): torch's hub cache."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def clean_resize(image: Image.Image, size: int = INCEPTION_SIZE) -> np.ndarray:
    """clean-fid's resize: each channel bicubic in float (no 8-bit rounding), (3, size, size) in 0-255."""
    channels = np.asarray(image.convert("RGB"), dtype=np.float32)
    resized = [
        np.asarray(
            Image.fromarray(channels[:, :, c], mode="F").resize((size, size), Image.Resampling.BICUBIC)
        )
        for c in range(3)
    ]
    return np.clip(np.stack(resized), 0.0, 255.0)


class InceptionFeatures:
    """The (N, D) Inception features of pictures, from a TorchScript network `net(x, return_features=True)`."""

    def __init__(self, network: torch.jit.ScriptModule, device: torch.device):
        self.network = network
        self.device = device

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        batch = torch.from_numpy(np.stack([clean_resize(image) for image in images]))  # (N, 3, 299, 299)
        with torch.inference_mode():
            features = self.network(batch.to(self.device), return_features=True)
        return features.float().cpu().numpy().reshape(len(images), -1)


def load_inception(path: str | None = None, device: str | None = None) -> InceptionFeatures:
    """NVIDIA's Inception from `path` (or torch's hub cache, downloaded there once), once per process."""
    file = Path(path).expanduser() if path else default_inception_path()
    if path and not file.is_file():
        raise InputFileError(
            file, f"no such file (FID/KID need a TorchScript Inception like {INCEPTION_FILE})"
        )
    if not file.is_file():
        _download_inception(file)
    target = resolve_device(device)

    def load() -> InceptionFeatures:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter(
                    "ignore", DeprecationWarning
                )  # torch.jit.load: still the format's reader
                network = torch.jit.load(str(file), map_location=target).eval()
        except Exception as error:  # not a TorchScript archive, or a corrupt one
            raise InputFileError(
                file, f"not a TorchScript Inception network ({type(error).__name__})"
            ) from error
        return InceptionFeatures(network, target)

    return load_cached(("inception", str(file), str(target)), load)


def _download_inception(file: Path) -> None:
    hint = (
        f"FID/KID need NVIDIA's Inception network {INCEPTION_FILE} (the one clean-fid uses) at {file}: "
        f"download it once from {INCEPTION_URL} to that path, or pass --fid-model PATH"
    )
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise MissingWeightsError(f"{hint} (offline mode: not downloading)")
    file.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(INCEPTION_URL, str(file), progress=False)
    except Exception as error:  # no network, proxy, HTTP error: the same advice
        raise MissingWeightsError(f"{hint} ({type(error).__name__}: {error})") from error


# ---------------------------------------------------------------------------------------------
# FID and KID over precomputed features
# ---------------------------------------------------------------------------------------------


class _Precomputed(torch.nn.Module):
    """torchmetrics calls its feature network on what `update` gets: here the features themselves."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def frechet_distance(real: np.ndarray, generated: np.ndarray) -> float:
    """FID (Heusel et al. 2017) between two sets of features (N, D) with torchmetrics."""
    from torchmetrics.image.fid import FrechetInceptionDistance  # here: seconds of import, FID only

    if len(real) < 2 or len(generated) < 2:
        return float("nan")
    metric = FrechetInceptionDistance(feature=_Precomputed(real.shape[1]))
    metric.update(torch.from_numpy(real).double(), real=True)
    metric.update(torch.from_numpy(generated).double(), real=False)
    return float(metric.compute())


def kernel_distance(real: np.ndarray, generated: np.ndarray, seed: int = 0) -> float:
    """KID (Binkowski et al. 2018; cubic polynomial kernel MMD over random subsets), x1000, with torchmetrics."""
    from torchmetrics.image.kid import KernelInceptionDistance  # here: seconds of import, KID only

    subset_size = min(KID_SUBSET_SIZE, len(real), len(generated))
    if subset_size < 2:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "will save all extracted features": intended here
        metric = KernelInceptionDistance(
            feature=_Precomputed(real.shape[1]), subsets=KID_SUBSETS, subset_size=subset_size
        )
    metric.update(torch.from_numpy(real).double(), real=True)
    metric.update(torch.from_numpy(generated).double(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the random subsets: the same score for the same pictures
        mean, _ = metric.compute()
    return 1000.0 * float(mean)
