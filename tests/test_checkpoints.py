"""Checkpoint loading: parity with the documented original architecture, layouts, wrappers, bad files."""

from __future__ import annotations

import os

import pytest
import torch
from diffusers import T2IAdapter
from safetensors.torch import save_file

import original_adapter_reference as ref
from t2i_adapter import load_adapter, save_adapter
from t2i_adapter.adapters import CoAdapterFuser, SpatialAdapterConfig, StyleAdapter, build_spatial_adapter
from t2i_adapter.checkpoints import convert_adapter, original_state_dict, read_checkpoint
from t2i_adapter.errors import InputFileError, MissingWeightsError, T2IAdapterError, UnknownNameError

TOLERANCE = 1e-5
CHANNELS = [8, 16, 32, 32]


def _max_diff(ours, theirs) -> float:
    assert len(ours) == len(theirs)
    return max((a - b).abs().max().item() for a, b in zip(ours, theirs, strict=True))


def _save(sd, path):
    if str(path).endswith(".safetensors"):
        save_file(sd, str(path))
    else:
        torch.save(sd, path)
    return path


@pytest.fixture
def condition():
    return torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------- parity with the original architecture


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_full_adapter_matches_original_architecture(tmp_path, condition, suffix):
    sd = ref.random_full(CHANNELS, 2, 64)
    adapter = load_adapter(_save(sd, tmp_path / f"sketch{suffix}"))
    assert adapter.adapter_kind == "full"
    assert adapter.in_condition_channels == 1
    assert adapter.feature_channels == tuple(CHANNELS)
    with torch.no_grad():
        ours = adapter(condition)
    assert [tuple(f.shape) for f in ours] == [(2, 8, 8, 8), (2, 16, 4, 4), (2, 32, 2, 2), (2, 32, 1, 1)]
    assert _max_diff(ours, ref.full_forward(sd, condition, 2)) <= TOLERANCE


def test_xl_adapter_matches_original_architecture(tmp_path):
    sd = ref.random_full(CHANNELS, 2, 3 * 256)
    adapter = load_adapter(_save(sd, tmp_path / "xl.pth"))
    assert adapter.adapter_kind == "xl"
    assert adapter.in_condition_channels == 3
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ours = adapter(x)
    # XL: H/16 for the first two levels, H/32 for the last two.
    assert [tuple(f.shape[1:]) for f in ours] == [(8, 4, 4), (16, 4, 4), (32, 2, 2), (32, 2, 2)]
    assert _max_diff(ours, ref.full_forward(sd, x, 2, xl=True)) <= TOLERANCE


def test_light_adapter_matches_original_architecture(tmp_path):
    sd = ref.random_light(CHANNELS, 4, 3 * 64)
    adapter = load_adapter(_save(sd, tmp_path / "color.pth"))
    assert adapter.adapter_kind == "light"
    assert adapter.feature_channels == tuple(CHANNELS)
    assert adapter.config.channels == CHANNELS[:-1]  # diffusers' convention for the light adapter
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ours = adapter(x)
    assert [tuple(f.shape[1:]) for f in ours] == [(8, 8, 8), (16, 4, 4), (32, 2, 2), (32, 1, 1)]
    assert _max_diff(ours, ref.light_forward(sd, x)) <= TOLERANCE


def test_style_adapter_matches_original_architecture(tmp_path):
    sd = ref.random_style(width=32, context_dim=16, num_layers=2, num_tokens=4)
    adapter = load_adapter(_save(sd, tmp_path / "style.pth"))
    assert adapter.adapter_kind == "style"
    assert (adapter.num_tokens, adapter.context_dim) == (4, 16)
    hidden = torch.randn(2, 10, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        tokens = adapter(hidden)
    assert tokens.shape == (2, 4, 16)
    assert (tokens - ref.style_forward(sd, hidden)).abs().max().item() <= TOLERANCE


def test_fuser_matches_original_architecture(tmp_path):
    sd = ref.random_fuser(CHANNELS, width=16, num_layers=2)
    fuser = load_adapter(_save(sd, tmp_path / "fuser.pth"))
    assert fuser.adapter_kind == "fuser"
    gen = torch.Generator().manual_seed(3)
    sizes = [8, 4, 2, 1]
    maps = {
        name: [torch.randn(2, c, s, s, generator=gen) for c, s in zip(CHANNELS, sizes, strict=True)]
        for name in ("canny", "depth")
    }
    features = {"canny": maps["canny"], "style": torch.randn(2, 4, 16, generator=gen), "depth": maps["depth"]}
    with torch.no_grad():
        fused_maps, fused_tokens = fuser(features)
    ref_maps, ref_tokens = ref.fuser_forward(sd, features)
    assert [f.shape for f in fused_maps] == [f.shape for f in maps["canny"]]
    assert fused_tokens.shape == (2, 4, 16)
    assert _max_diff(fused_maps, ref_maps) <= TOLERANCE
    assert (fused_tokens - ref_tokens).abs().max().item() <= TOLERANCE
    # The order of the conditions matters to the transformer (positions), so it must be kept.
    swapped = {"depth": maps["depth"], "style": features["style"], "canny": maps["canny"]}
    with torch.no_grad():
        swapped_maps, _ = fuser(swapped)
    assert _max_diff(swapped_maps, ref.fuser_forward(sd, swapped)[0]) <= TOLERANCE


# ---------------------------------------------------------------- sizes inferred from shapes


def test_resnet_blocks_per_level_inferred_from_original_keys(tmp_path, condition):
    sd = ref.random_full(CHANNELS, 3, 64)
    adapter = load_adapter(_save(sd, tmp_path / "three_blocks.pth"))
    assert adapter.config.num_res_blocks == 3
    with torch.no_grad():
        assert _max_diff(adapter(condition), ref.full_forward(sd, condition, 3)) <= TOLERANCE


def test_ambiguous_block_count_settled_by_argument_or_saved_metadata(tmp_path, condition):
    # [8, 8, 16, 16] with one block per level has in_conv at body.2 only: 2 levels x 2 blocks fit too.
    sd = ref.random_full([8, 8, 16, 16], 1, 64)
    path = _save(sd, tmp_path / "ambiguous.pth")
    assert load_adapter(path).config.num_res_blocks == 2  # the released default wins when it fits
    adapter = load_adapter(path, num_res_blocks=1)
    assert adapter.feature_channels == (8, 8, 16, 16)
    with torch.no_grad():
        assert _max_diff(adapter(condition), ref.full_forward(sd, condition, 1)) <= TOLERANCE
    # Our own original-layout safetensors carry the config, so they load back without the hint.
    save_adapter(adapter, tmp_path / "ambiguous.safetensors", layout="original")
    assert load_adapter(tmp_path / "ambiguous.safetensors").feature_channels == (8, 8, 16, 16)


def test_tiny_two_level_adapter_for_tiny_unets(tmp_path):
    sd = ref.random_full([32, 64], 2, 64)
    adapter = load_adapter(_save(sd, tmp_path / "tiny.pth"))
    assert adapter.feature_channels == (32, 64)
    assert adapter.total_downscale_factor == 16


# ---------------------------------------------------------------- prefixes, wrappers, layouts


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
        lambda sd: {f"adapter.{k}": v for k, v in sd.items()},
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"adapter": {f"module.{k}": v for k, v in sd.items()}, "optimizer": {"step": 1}},
    ],
    ids=["module-prefix", "adapter-prefix", "state_dict-wrapper", "adapter-wrapper"],
)
def test_prefixes_and_wrappers_are_removed(tmp_path, condition, wrap):
    sd = ref.random_full(CHANNELS, 2, 64)
    torch.save(wrap(sd), tmp_path / "wrapped.pth")
    adapter = load_adapter(tmp_path / "wrapped.pth")
    with torch.no_grad():
        assert _max_diff(adapter(condition), ref.full_forward(sd, condition, 2)) <= TOLERANCE


def test_diffusers_folder_and_diffusers_layout_file(tmp_path, condition):
    torch.manual_seed(0)
    made_by_diffusers = T2IAdapter(
        in_channels=1, channels=CHANNELS, num_res_blocks=2, adapter_type="full_adapter"
    )
    made_by_diffusers.save_pretrained(tmp_path / "folder")
    save_file(made_by_diffusers.state_dict(), str(tmp_path / "bare.safetensors"))  # no config at all
    # A training module that holds the adapter as `.adapter` adds one more `adapter.` prefix.
    torch.save({f"adapter.{k}": v for k, v in made_by_diffusers.state_dict().items()}, tmp_path / "nested.pt")
    with torch.no_grad():
        expected = made_by_diffusers(condition)
        for source in (tmp_path / "folder", tmp_path / "bare.safetensors", tmp_path / "nested.pt"):
            adapter = load_adapter(source)
            assert adapter.adapter_kind == "full"
            assert _max_diff(adapter(condition), expected) == 0.0


def test_round_trip_original_diffusers_original_keeps_every_tensor(tmp_path):
    cases = {
        "full": ref.random_full(CHANNELS, 2, 64),
        "xl": ref.random_full(CHANNELS, 2, 256),
        "light": ref.random_light(CHANNELS, 4, 192),
        "style": ref.random_style(32, 16, 2, 4),
        "fuser": ref.random_fuser(CHANNELS, 16, 2),
    }
    for kind, sd in cases.items():
        src = _save(sd, tmp_path / f"{kind}.pth")
        folder, adapter = convert_adapter(src, tmp_path / f"{kind}-diffusers", to="diffusers")
        assert adapter.adapter_kind == kind
        back, _ = convert_adapter(folder, tmp_path / f"{kind}-back.pth", to="original")
        again = torch.load(back, weights_only=True)
        assert sorted(again) == sorted(sd), kind
        assert all(torch.equal(again[k], sd[k]) for k in sd), kind


def _config(adapter) -> dict:
    return {
        k: list(v) if isinstance(v, tuple) else v for k, v in adapter.config.items() if not k.startswith("_")
    }


def _written_kinds():
    """One adapter of every kind this package writes, with the sizes a file cannot always show:
    the demo adapters' downscale 4 and non-default attention heads next to the released sizes."""
    spatial = {
        "full": SpatialAdapterConfig("full", 1, (8, 16), 2, 8),
        "full-downscale-4": SpatialAdapterConfig("full", 1, (8, 16), 2, 4),
        "full-3ch-downscale-4": SpatialAdapterConfig("full", 3, (8, 16), 2, 4),
        "full-1-block": SpatialAdapterConfig("full", 3, (8, 16), 1, 8),
        "xl": SpatialAdapterConfig("xl", 3, (8, 16), 2, 16),
        "light": SpatialAdapterConfig("light", 3, (8, 16), 4, 8),
        "light-downscale-4": SpatialAdapterConfig("light", 3, (8, 16), 4, 4),
    }
    cases = {name: build_spatial_adapter(config) for name, config in spatial.items()}
    cases["style"] = StyleAdapter(width=16, context_dim=8, num_heads=8, num_layers=1, num_tokens=2)
    cases["style-4-heads"] = StyleAdapter(width=16, context_dim=8, num_heads=4, num_layers=1, num_tokens=2)
    cases["fuser"] = CoAdapterFuser(feature_channels=(8, 16), width=16, num_heads=8, num_layers=1)
    cases["fuser-2-heads"] = CoAdapterFuser(feature_channels=(8, 16), width=16, num_heads=2, num_layers=1)
    return cases


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_original_layout_loads_back_or_is_refused_before_writing(tmp_path, suffix):
    refused = set()
    for name, adapter in _written_kinds().items():
        dest = tmp_path / f"{name}{suffix}"
        try:
            save_adapter(adapter, dest, "original")
        except InputFileError as error:
            assert str(error).startswith(f"{dest}: not written") and "\n" not in str(error)
            assert ".safetensors" in str(error) and not dest.exists() and not list(tmp_path.glob(".*"))
            refused.add(name)
            continue
        back = load_adapter(dest)
        assert back.adapter_kind == adapter.adapter_kind, name
        assert _config(back) == _config(adapter), name
        ours = adapter.state_dict()
        assert all(torch.equal(back.state_dict()[k], v) for k, v in ours.items()), name
    if suffix == ".safetensors":
        assert refused == set()  # the metadata keeps every config
    else:  # a .pth holds only tensors: what the shapes cannot show is refused, with the reason
        assert refused == {
            "full-downscale-4",
            "full-3ch-downscale-4",
            "light-downscale-4",
            "style-4-heads",
            "fuser-2-heads",
        }


def test_convert_demo_adapter_to_original_pth_is_refused_and_safetensors_round_trips(tmp_path):
    with pytest.raises(InputFileError, match="sketch.pth: not written.*8x8.*safetensors"):
        convert_adapter("demo:sketch", tmp_path / "sketch.pth", to="original")
    assert not (tmp_path / "sketch.pth").exists()
    dest, adapter = convert_adapter("demo:sketch", tmp_path / "sketch.safetensors", to="original")
    assert _config(load_adapter(dest)) == _config(adapter)


def test_our_diffusers_folder_loads_in_diffusers(tmp_path, condition):
    sd = ref.random_full(CHANNELS, 2, 64)
    folder, _ = convert_adapter(_save(sd, tmp_path / "a.pth"), tmp_path / "a-diffusers", to="diffusers")
    with torch.no_grad():
        features = T2IAdapter.from_pretrained(folder)(condition)
    assert _max_diff(features, ref.full_forward(sd, condition, 2)) <= TOLERANCE


def test_original_layout_keys_are_what_comfyui_reads(tmp_path):
    # The released layout ([320, 640, 1280, 1280], 2 blocks) scaled down: same keys, smaller tensors.
    adapter = load_adapter(_save(ref.random_full([16, 32, 64, 64], 2, 64), tmp_path / "a.pth"))
    keys = set(original_state_dict(adapter)[0])
    # ComfyUI / A1111 pick the class from these keys and read sizes from their shapes.
    assert {
        "conv_in.weight",
        "body.0.block2.weight",
        "body.2.in_conv.weight",
        "body.4.in_conv.weight",
    } <= keys
    assert "body.6.in_conv.weight" not in keys and not any(k.startswith("adapter.") for k in keys)


# ---------------------------------------------------------------- options


def test_kind_override_dtype_and_eval_mode(tmp_path):
    path = _save(ref.random_full(CHANNELS, 2, 64), tmp_path / "a.pth")
    adapter = load_adapter(path, dtype=torch.float16)
    assert not adapter.training
    assert {p.dtype for p in adapter.parameters()} == {torch.float16}
    with pytest.raises(InputFileError, match="a.pth: .*style"):
        load_adapter(path, kind="style")
    with pytest.raises(UnknownNameError, match="valid: full, fuser, light, style, xl"):
        load_adapter(path, kind="huge")


def test_save_refuses_to_overwrite_and_leaves_the_file(tmp_path):
    path = _save(ref.random_full(CHANNELS, 2, 64), tmp_path / "a.pth")
    adapter = load_adapter(path)
    before = path.read_bytes()
    with pytest.raises(InputFileError, match="already exists"):
        save_adapter(adapter, path, layout="original")
    assert path.read_bytes() == before
    save_adapter(adapter, tmp_path / "out", layout="diffusers")
    save_adapter(adapter, tmp_path / "out", layout="diffusers", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "config.json",
        "diffusion_pytorch_model.safetensors",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers
    with pytest.raises(InputFileError, match=r"\.safetensors or \.pth"):
        save_adapter(adapter, tmp_path / "noext", layout="original")


# ---------------------------------------------------------------- bad input


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickle_that_runs_code_is_refused_and_never_executed(tmp_path):
    marker = str(tmp_path / "code-ran")
    torch.save({"conv_in.weight": torch.zeros(1), "x": _RunsCode(marker)}, tmp_path / "evil.pth")
    with pytest.raises(InputFileError, match=r"evil\.pth: refused: .*could run code"):
        load_adapter(tmp_path / "evil.pth")
    assert not os.path.exists(marker)


def test_bad_files_give_one_line_errors(tmp_path):
    good = torch.save(ref.random_full(CHANNELS, 2, 64), tmp_path / "good.pth") or (tmp_path / "good.pth")
    data = good.read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "text.pth").write_bytes(b"not a checkpoint at all\n" * 20)
    (tmp_path / "text.safetensors").write_bytes(b"not a checkpoint at all\n" * 20)
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other-model.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    (tmp_path / "no-weights").mkdir()
    (tmp_path / "no-weights" / "config.json").write_text("{}")
    broken = ref.random_full(CHANNELS, 2, 64)
    del broken["body.3.block1.weight"]
    torch.save(broken, tmp_path / "missing-key.pth")
    expected = {
        "truncated.pth": "truncated or corrupt",
        "empty.pth": "empty file",
        "text.pth": "PyTorch checkpoint",
        "text.safetensors": "not a valid safetensors file",
        "other-model.pth": "does not look like a T2I-Adapter",
        "list.pth": "not a dictionary of weights",
        "no-weights": "holds no weights file",
        "missing-key.pth": "missing: adapter.body.1.resnets.1.block1.weight",
    }
    for name, problem in expected.items():
        with pytest.raises(InputFileError) as caught:
            load_adapter(tmp_path / name)
        message = str(caught.value)
        assert name in message and problem in message, message
        assert "\n" not in message
    with pytest.raises(InputFileError, match="absent.pth: no such file"):
        load_adapter(tmp_path / "absent.pth")
    with pytest.raises(T2IAdapterError):
        load_adapter("absent-adapter.pth")


def test_read_checkpoint_reports_metadata(tmp_path):
    adapter = load_adapter(_save(ref.random_full(CHANNELS, 3, 64), tmp_path / "a.pth"))
    save_adapter(adapter, tmp_path / "a.safetensors", layout="original")
    raw = read_checkpoint(tmp_path / "a.safetensors")
    assert raw.metadata["t2i_adapter.kind"] == "full"
    assert '"num_res_blocks": 3' in raw.metadata["t2i_adapter.config"]


def test_early_adapter_variants_are_refused_clearly(tmp_path):
    sd = ref.random_full(CHANNELS, 2, 64)
    sd["body.0.skep.weight"] = torch.zeros(8, 8, 1, 1)
    with pytest.raises(InputFileError, match="early T2I-Adapter variant"):
        load_adapter(_save(sd, tmp_path / "skep.pth"))


# ---------------------------------------------------------------- hub ids and demo names


def test_hub_id_offline_without_cache_is_a_missing_weights_error():
    with pytest.raises(MissingWeightsError, match="TencentARC/t2iadapter_never_cached_sd14v1"):
        load_adapter("TencentARC/t2iadapter_never_cached_sd14v1")


def test_hub_repository_falls_back_to_bin_weights(tmp_path, monkeypatch, condition):
    torch.manual_seed(0)
    made = T2IAdapter(in_channels=1, channels=CHANNELS, num_res_blocks=2)
    made.save_pretrained(tmp_path / "snapshot", safe_serialization=False)  # an older repository: only .bin
    calls = []

    def fake_fetch(location, *, what, allow_patterns=None):
        calls.append((location.repo_id, tuple(allow_patterns)))
        return tmp_path / "snapshot"

    monkeypatch.setattr("t2i_adapter.checkpoints.load.fetch", fake_fetch)
    adapter = load_adapter("someone/t2iadapter_test")
    assert [patterns for _, patterns in calls] == [("*.json", "*.safetensors"), ("*.json", "*.bin")]
    assert all(p.device.type == "cpu" and p.requires_grad for p in adapter.parameters())
    with torch.no_grad():
        assert _max_diff(adapter(condition), made(condition)) == 0.0


def test_demo_name_without_packaged_adapter_is_a_user_error():
    with pytest.raises(T2IAdapterError):
        load_adapter("demo:no-such-condition")
