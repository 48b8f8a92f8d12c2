"""Learned sketch: PiDiNet edges thresholded at 0.5, what the released sketch adapter was trained on.

PiDiNet (Su et al. 2021, "Pixel Difference Networks for Efficient Edge Detection") is written
out here as a small module because no maintained library ships it usably: transformers has no
edge detector, and `controlnet_aux` (which vendors the same network) hard-requires torchvision
and timm, which CPU-only installs of this package do not have. The module's parameter names
follow the published `table5_pidinet.pth` checkpoint (the one the original T2I-Adapter loads),
so those weights load strictly; any mismatch is a clear error, not silent garbage.

The network's pixel-difference convolutions (central `cd`, angular `ad`, radial `rd`, plain
`cv`) are computed from the stored vanilla kernels at run time, as in the paper's training form.
Input is RGB in [0, 1]; the last output (the fused edge map) > 0.5 gives white lines on black.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from t2i_adapter.conditions.model_loading import (
    DEFAULT_DETECT_RESOLUTION,
    bounded,
    load_cached,
    release_memory,
    resolve_model_file,
    restore_size,
)
from t2i_adapter.conditions.registry import register_condition
from t2i_adapter.devices import resolve_device
from t2i_adapter.errors import InputFileError, T2IAdapterError

PIDINET_MODEL = "lllyasviel/Annotators/table5_pidinet.pth"
PIDINET_WIDTH = 60  # channels of the first stage of the "table 5" PiDiNet
PIDINET_DILATION = 24  # channels of the compact dilation modules (CDCM)
# The "carv4" layout: each stage cycles central, angular, radial, vanilla convolutions.
PIDINET_PDCS = ("cd", "ad", "rd", "cv") * 4

# ---------------------------------------------------------------------------------------------
# Pixel-difference convolutions (paper section 3.2)
# ---------------------------------------------------------------------------------------------

# Angular difference: each 3x3 tap minus its clockwise neighbour around the centre.
_CLOCKWISE_NEIGHBOUR = (3, 0, 1, 6, 4, 2, 7, 8, 5)
# Radial difference: the 8 outer taps of a 3x3 kernel placed on the rim of a 5x5 kernel (+) and
# on the inner ring (-), the centre unused.
_RIM_5X5 = (0, 2, 4, 10, 14, 20, 22, 24)
_RING_5X5 = (6, 7, 8, 11, 13, 16, 17, 18)


def pixel_difference_conv(
    kind: str,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int,
    padding: int,
    groups: int,
) -> torch.Tensor:
    """One PiDiNet convolution of `kind` (cv, cd, ad, rd) with the vanilla 3x3 `weight`."""
    if kind == "cv":
        return F.conv2d(x, weight, bias, stride, padding, 1, groups)
    if kind == "cd":  # x_i - x_centre summed over the kernel = conv(x, w) - x_centre * sum(w)
        centre = F.conv2d(x, weight.sum(dim=(2, 3), keepdim=True), None, stride, 0, 1, groups)
        return F.conv2d(x, weight, bias, stride, padding, 1, groups) - centre
    out_channels, in_channels = weight.shape[:2]
    flat = weight.reshape(out_channels, in_channels, 9)
    if kind == "ad":
        angular = (flat - flat[:, :, list(_CLOCKWISE_NEIGHBOUR)]).reshape(weight.shape)
        return F.conv2d(x, angular, bias, stride, padding, 1, groups)
    if kind == "rd":
        radial = weight.new_zeros(out_channels, in_channels, 25)
        radial[:, :, list(_RIM_5X5)] = flat[:, :, 1:]
        radial[:, :, list(_RING_5X5)] = -flat[:, :, 1:]
        return F.conv2d(
            x, radial.reshape(out_channels, in_channels, 5, 5), bias, stride, 2 * padding, 1, groups
        )
    raise ValueError(f"unknown pixel difference convolution '{kind}'")


class PixelDifferenceConv2d(nn.Module):
    """A 3x3 convolution whose kernel is applied as a pixel-difference operator."""

    def __init__(self, kind: str, in_channels: int, out_channels: int, groups: int = 1, bias: bool = False):
        super().__init__()
        self.kind, self.groups = kind, groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_difference_conv(self.kind, x, self.weight, self.bias, 1, 1, self.groups)


# ---------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------


class PixelDifferenceBlock(nn.Module):
    """Depthwise pixel-difference conv -> ReLU -> pointwise conv, plus a (pooled) shortcut."""

    def __init__(self, kind: str, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.stride = stride
        if stride > 1:
            self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
            self.shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        self.conv1 = PixelDifferenceConv2d(kind, in_channels, in_channels, groups=in_channels)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = self.pool(x)
        y = self.conv2(self.relu2(self.conv1(x)))
        return y + (self.shortcut(x) if self.stride > 1 else x)


class CompactDilationModule(nn.Module):
    """CDCM: 1x1 reduction, then four dilated 3x3 convs (rates 5, 7, 9, 11) summed."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        for index, rate in enumerate((5, 7, 9, 11), start=1):
            conv = nn.Conv2d(out_channels, out_channels, 3, dilation=rate, padding=rate, bias=False)
            self.add_module(f"conv2_{index}", conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.relu1(x))
        return self.conv2_1(x) + self.conv2_2(x) + self.conv2_3(x) + self.conv2_4(x)


class CompactSpatialAttention(nn.Module):
    """CSAM: a sigmoid spatial gate computed from the features themselves."""

    def __init__(self, channels: int):
        super().__init__()
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(channels, 4, kernel_size=1)
        self.conv2 = nn.Conv2d(4, 1, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv2(self.conv1(self.relu1(x))))


class MapReduce(nn.Module):
    """1x1 conv to one edge logit map."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PiDiNet(nn.Module):
    """PiDiNet with CDCM + CSAM side outputs: (N, 3, H, W) RGB in [0, 1] -> 5 edge maps in [0, 1]."""

    def __init__(self, width: int = PIDINET_WIDTH, dilation: int = PIDINET_DILATION, pdcs=PIDINET_PDCS):
        super().__init__()
        if len(pdcs) != 16:
            raise ValueError("PiDiNet needs 16 pixel difference convolution kinds")
        self.init_block = PixelDifferenceConv2d(pdcs[0], 3, width)
        stage_widths = (width, 2 * width, 4 * width, 4 * width)
        # stage 1 has 3 blocks after the init conv, stages 2-4 have 4, each opening with stride 2;
        # block k of the whole network (init = 0) uses pdcs[k]
        self.stage_blocks: list[list[str]] = []
        layer, in_channels = 1, width
        for stage, out_channels in enumerate(stage_widths, start=1):
            names = []
            for index in range(1, 4 if stage == 1 else 5):
                stride = 2 if stage > 1 and index == 1 else 1
                names.append(f"block{stage}_{index}")
                self.add_module(
                    names[-1], PixelDifferenceBlock(pdcs[layer], in_channels, out_channels, stride)
                )
                layer, in_channels = layer + 1, out_channels
            self.stage_blocks.append(names)
        self.dilations = nn.ModuleList(CompactDilationModule(c, dilation) for c in stage_widths)
        self.attentions = nn.ModuleList(CompactSpatialAttention(dilation) for _ in stage_widths)
        self.conv_reduces = nn.ModuleList(MapReduce(dilation) for _ in stage_widths)
        self.classifier = nn.Conv2d(4, 1, kernel_size=1)  # fuses the 4 side outputs
        nn.init.constant_(self.classifier.weight, 0.25)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        height, width = x.shape[2:]
        features = self.init_block(x)  # (N, C, H, W)
        side_logits = []
        for stage, names in enumerate(self.stage_blocks):
            for name in names:
                features = getattr(self, name)(features)  # (N, C_stage, H / 2^stage, W / 2^stage)
            gated = self.attentions[stage](self.dilations[stage](features))
            logit = self.conv_reduces[stage](gated)
            side_logits.append(F.interpolate(logit, (height, width), mode="bilinear", align_corners=False))
        fused = self.classifier(torch.cat(side_logits, dim=1))
        return [torch.sigmoid(logit) for logit in (*side_logits, fused)]  # 5 x (N, 1, H, W)


# ---------------------------------------------------------------------------------------------
# Loading and running
# ---------------------------------------------------------------------------------------------


def load_pidinet(name_or_path: str = PIDINET_MODEL, device: str | None = None) -> PiDiNet:
    """PiDiNet with the `table5_pidinet.pth` weights (a local file or `owner/repo/file`), once per process."""
    target = resolve_device(device)
    return load_cached(
        ("pidinet", str(name_or_path), str(target)), lambda: _load_pidinet(name_or_path, target)
    )


def _load_pidinet(name_or_path: str, device: torch.device) -> PiDiNet:
    path = resolve_model_file(name_or_path, what="PiDiNet sketch")
    try:
        checkpoint = _read_state_dict(path)
    except Exception as error:  # pickle, zip or safetensors errors: all "not a checkpoint" to the user
        raise InputFileError(
            path, f"not a readable PiDiNet checkpoint ({type(error).__name__}: {error})"
        ) from error
    state = checkpoint.get("state_dict", checkpoint)
    state = {key.removeprefix("module."): value for key, value in state.items()}
    network = PiDiNet()
    if "init_block.bias" in state:  # some PiDiNet variants train the first conv with a bias
        network.init_block.bias = nn.Parameter(torch.zeros(network.init_block.weight.shape[0]))
    result = network.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        problems = [
            *(f"missing {k}" for k in result.missing_keys[:3]),
            *(f"unexpected {k}" for k in result.unexpected_keys[:3]),
        ]
        raise InputFileError(path, f"not a table5 PiDiNet checkpoint ({', '.join(problems)})")
    return network.eval().requires_grad_(False).to(device)


def _read_state_dict(path: Path) -> dict:
    if path.suffix == ".safetensors":
        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def pidinet_edges(network: PiDiNet, image: Image.Image) -> np.ndarray:
    """PiDiNet's fused edge probability of `image`: (H, W) float32 in [0, 1]."""
    device = next(network.parameters()).device
    rgb = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)  # (H, W, 3)
    with torch.inference_mode():
        edges = network(rgb.permute(2, 0, 1)[None].to(device))[-1][0, 0]  # (H, W)
    result = edges.float().cpu().numpy()
    release_memory(device)
    return result


@register_condition(
    "pidinet",
    channels=1,
    description="learned sketch: PiDiNet edges thresholded at 0.5, white on black (the sketch adapter's input)",
    needs_weights=True,
    aliases=("sketch_pidinet", "learned_sketch"),
)
def pidinet(
    image: Image.Image,
    model: str | None = None,
    detect_resolution: int = DEFAULT_DETECT_RESOLUTION,
    device: str | None = None,
    threshold: float = 0.5,
    binary: bool = True,
) -> Image.Image:
    """PiDiNet edge detection (Su et al. 2021); `binary=False` keeps the soft edge map."""
    if not 0.0 <= float(threshold) <= 1.0:
        raise T2IAdapterError(f"option threshold={threshold} is out of range [0, 1]")
    network = load_pidinet(model or PIDINET_MODEL, device=device)
    small = bounded(image, detect_resolution)
    edges = pidinet_edges(network, small)
    if binary:
        edges = (edges > float(threshold)).astype(np.float32)
    gray = Image.fromarray(np.clip(np.rint(edges * 255.0), 0, 255).astype(np.uint8), mode="L")
    resample = Image.Resampling.NEAREST if binary else Image.Resampling.BILINEAR
    return restore_size(gray, image.size, resample)
