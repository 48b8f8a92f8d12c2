"""The trainer on tiny models (CPU): checkpoints that load everywhere, exact resume (also after
SIGKILL), NaN and disk-full handling, a loss that falls, cached latents, SDXL, 2-process DDP."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from t2i_adapter.errors import T2IAdapterError
from t2i_adapter.interfaces.cli.main import main as cli
from t2i_adapter.training import TrainConfig, checkpointing, loop, train
from t2i_adapter.training.check import DataCheckError
from t2i_adapter.training.data.batches import stream_resume_point
from t2i_adapter.training.data.shards import shard_share
from t2i_adapter.training.objective import diffusion_target, sample_timesteps
from test_data_formats import TAG, make_samples, write_dataset, write_folder, write_meta, write_shards

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    from tiny_models import save_tiny_sd

    return save_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="module")
def meta(tmp_path_factory) -> Path:
    return write_meta(tmp_path_factory.mktemp("data"))


# Two runs that should train alike, summed in another order: AdamW moves each weight by about lr
# (1e-3 here) per step whatever the gradient's size, so for a gradient near zero the summation
# noise becomes ~1e-5 (seen up to 2.3e-5); a real difference in training is ~1e-3.
SAME_RUN_ATOL = 1e-4


def config(model: Path, data: Path, output_dir: Path, **overrides) -> TrainConfig:
    """A fast run: 64 px, batch 2, constant LR (no warmup), caption dropout on."""
    values = dict(
        model=str(model),
        data=str(data),
        output_dir=str(output_dir),
        cond_type=TAG,
        resolution=64,
        batch_size=2,
        lr=1e-3,
        lr_warmup_steps=0,
        caption_dropout=0.3,
        max_steps=2,
        checkpoint_every=0,
        progress=False,
    )
    values.update(overrides)
    return TrainConfig(**values)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / checkpointing.ADAPTER_FILE))


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ---------------------------------------------------------------------------------------------
# A run, its files, and every format
# ---------------------------------------------------------------------------------------------


def test_trained_adapter_loads_with_load_adapter_and_diffusers(tiny_sd, meta, tmp_path):
    from diffusers import T2IAdapter

    from t2i_adapter.checkpoints import load_adapter

    out = train(
        config(
            tiny_sd, meta, tmp_path / "run", max_steps=3, checkpoint_every=2, log_every=1, validation_every=3,
            validation_steps=2, save_original_layout=True,
        )
    )  # fmt: skip
    assert [p.name for p in checkpointing.list_checkpoints(out)] == ["step-00000002", "step-00000003"]
    final = weights(out)
    ours = load_adapter(out)
    assert ours.adapter_kind == "full" and ours.in_condition_channels == 1
    assert_same_weights({k: v for k, v in ours.state_dict().items()}, final)
    theirs = T2IAdapter.from_pretrained(out / "checkpoints" / "step-00000003" / "adapter")
    features = theirs(torch.rand(1, 1, 64, 64))
    assert [tuple(f.shape) for f in features] == [(1, 32, 8, 8), (1, 64, 4, 4)]  # tiny UNet's levels
    single_file = load_adapter(out / "adapter.safetensors")
    assert_same_weights(single_file.state_dict(), final)
    original = load_file(str(out / "adapter.original.safetensors"))
    assert "conv_in.weight" in original and "body.0.block1.weight" in original  # TencentARC key names
    assert_same_weights(load_adapter(out / "adapter.original.safetensors").state_dict(), final)
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss") and [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3"]
    assert "10 usable" in (out / "data_check.txt").read_text()
    assert any((out / "tensorboard").iterdir())
    validation = sorted((out / "validation" / "step-00000003").glob("*.png"))
    assert len(validation) == 2  # the first two samples' conditions and captions


@pytest.mark.parametrize("kind", ["folder", "jsonl", "webdataset", "hf"])
def test_every_format_trains(tiny_sd, tmp_path, kind):
    data = write_dataset(kind, tmp_path)
    out = train(config(tiny_sd, data, tmp_path / "run", cond_type=None if kind == "jsonl" else TAG))
    state = torch.load(checkpointing.latest_checkpoint(out) / checkpointing.STATE_FILE, weights_only=True)
    assert state["step"] == 2 and state["samples_seen"] == 4
    assert all(torch.isfinite(t).all() for t in weights(out).values())


def test_bad_samples_are_skipped_or_refused_with_strict(tiny_sd, tmp_path):
    meta = write_meta(tmp_path / "data")
    (tmp_path / "data" / "images" / "s01.png").write_bytes(b"corrupt")
    out = train(config(tiny_sd, meta, tmp_path / "run"))
    assert "9 usable, 1 with problems" in (out / "data_check.txt").read_text()
    with pytest.raises(DataCheckError, match=r"meta.txt:4: .*--strict"):
        train(config(tiny_sd, meta, tmp_path / "strict", strict=True))


# ---------------------------------------------------------------------------------------------
# Resume
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def six_steps(tiny_sd, meta, tmp_path_factory) -> dict[str, torch.Tensor]:
    """The reference: 6 uninterrupted steps."""
    out = train(config(tiny_sd, meta, tmp_path_factory.mktemp("reference") / "run", max_steps=6))
    return weights(out)


def test_resume_with_more_steps_equals_one_run(tiny_sd, meta, tmp_path, six_steps):
    out = tmp_path / "run"
    train(config(tiny_sd, meta, out, max_steps=3))
    with pytest.raises(Exception, match="pass --resume"):
        train(config(tiny_sd, meta, out, max_steps=6))
    train(config(tiny_sd, meta, out, max_steps=6, resume=True))
    assert_same_weights(weights(out), six_steps)
    steps = [row.split(",")[0] for row in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == ["3", "6"]  # log_every=10: the last step of each run


def test_streamed_shards_resume_exactly(tiny_sd, tmp_path):
    shards = write_dataset("webdataset", tmp_path)
    reference = weights(train(config(tiny_sd, shards, tmp_path / "whole", max_steps=4, batch_size=3)))
    out = tmp_path / "split"
    train(config(tiny_sd, shards, out, max_steps=3, batch_size=3))  # 9 of 10 samples: mid-epoch
    state = torch.load(checkpointing.latest_checkpoint(out) / checkpointing.STATE_FILE, weights_only=True)
    assert state["stream"] == {"world_size": 1, "ranks": [{"epoch": 0, "offset": 9}]}
    train(config(tiny_sd, shards, out, max_steps=4, batch_size=3, resume=True))
    assert_same_weights(weights(out), reference)
    with pytest.raises(T2IAdapterError, match="--cache-latents needs a dataset that can be listed"):
        train(config(tiny_sd, shards, tmp_path / "cached", cache_latents=True))


def test_a_resume_with_another_number_of_processes_starts_the_next_epoch(caplog):
    saved = {"world_size": 2, "ranks": [{"epoch": 3, "offset": 5}, {"epoch": 4, "offset": 1}]}
    assert stream_resume_point(saved, 2, 1) == {"epoch": 4, "offset": 1}  # same processes: exact
    assert stream_resume_point(saved, 3, 0) == {"epoch": 5, "offset": 0}
    assert "dealt out anew" in caplog.text
    assert stream_resume_point({}, 4, 2) == {}


def test_each_process_reads_its_own_share_of_the_shards():
    shards = [f"s{i}" for i in range(5)]
    assert [shard_share(shards, 2, rank) for rank in (0, 1)] == [
        (["s0", "s2", "s4"], 1, 0),
        (["s1", "s3"], 1, 0),
    ]
    # fewer shards than processes: the processes on one shard take every k-th sample
    two = shards[:2]
    shares = [shard_share(two, 5, rank) for rank in range(5)]
    assert shares == [(["s0"], 3, 0), (["s1"], 2, 0), (["s0"], 3, 1), (["s1"], 2, 1), (["s0"], 3, 2)]


def test_sigkill_then_resume_is_bit_identical(tiny_sd, meta, tmp_path, six_steps):
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "t2i_adapter.interfaces.cli.main", "train",
        "--model", str(tiny_sd), "--data", str(meta), "--output-dir", str(out), "--cond-type", TAG,
        "--resolution", "64", "--batch-size", "2", "--lr", "1e-3", "--lr-warmup-steps", "0",
        "--caption-dropout", "0.3", "--max-steps", "6", "--checkpoint-every", "1", "--no-progress",
    ]  # fmt: skip
    # Bit-identical needs the same float summation order on both sides: the killed run gets the
    # thread count of this process, which runs the uninterrupted and the resumed halves.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while checkpointing.latest_checkpoint(out) is None and process.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        time.sleep(random.uniform(0.0, 0.1))  # somewhere in the next step or save
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL  # killed, not finished
    killed_at = checkpointing.latest_checkpoint(out)
    assert killed_at is not None and int(killed_at.name.split("-")[1]) < 6
    train(config(tiny_sd, meta, out, max_steps=6, resume=True, checkpoint_every=1))
    assert_same_weights(weights(out), six_steps)
    assert not list((out / "checkpoints").glob(".step-*"))  # leftovers of the killed save are gone
    assert len(checkpointing.list_checkpoints(out)) == 3  # keep_checkpoints


def test_data_loading_workers_do_not_change_the_result(tiny_sd, meta, tmp_path, six_steps):
    out = train(config(tiny_sd, meta, tmp_path / "workers", max_steps=6, num_workers=2))
    assert_same_weights(weights(out), six_steps)


def test_fine_tuning_starts_from_the_given_adapter(tiny_sd, meta, tmp_path):
    from t2i_adapter.checkpoints import load_adapter

    with pytest.raises(T2IAdapterError, match="light adapter"):  # tiny UNet: 32, 64 channels
        train(config(tiny_sd, meta, tmp_path / "light", adapter_type="light"))
    first = train(config(tiny_sd, meta, tmp_path / "first", max_steps=1))
    # lr ~ 0: the fine-tuned adapter is the starting one (AdamW's first step is ~lr in size)
    tuned = train(config(tiny_sd, meta, tmp_path / "tuned", adapter=str(first), lr=1e-12, max_steps=1))
    assert load_adapter(tuned).adapter_kind == "full"
    for key, value in weights(first).items():
        torch.testing.assert_close(weights(tuned)[key], value, atol=1e-9, rtol=0)
    with pytest.raises(T2IAdapterError, match="bitsandbytes"):
        train(config(tiny_sd, meta, tmp_path / "8bit", optimizer="adamw8bit"))


def test_gradient_accumulation_matches_a_larger_batch(tiny_sd, meta, tmp_path):
    big = weights(train(config(tiny_sd, meta, tmp_path / "big", batch_size=4, max_steps=2)))
    accumulated = weights(
        train(
            config(tiny_sd, meta, tmp_path / "acc", batch_size=2, gradient_accumulation_steps=2, max_steps=2)
        )
    )
    unaccumulated = weights(train(config(tiny_sd, meta, tmp_path / "small", batch_size=2, max_steps=2)))
    assert any(not torch.allclose(unaccumulated[key], big[key], atol=SAME_RUN_ATOL, rtol=0) for key in big)
    for key in big:
        torch.testing.assert_close(accumulated[key], big[key], atol=SAME_RUN_ATOL, rtol=0)


# ---------------------------------------------------------------------------------------------
# Bad events: NaN loss, disk full
# ---------------------------------------------------------------------------------------------


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_sd, meta, tmp_path, monkeypatch):
    real_loss = loop.compute_loss
    calls = []

    def loss_that_explodes(*args, **kwargs):
        calls.append(1)
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(loop, "compute_loss", loss_that_explodes)
    out = tmp_path / "run"
    with pytest.raises(loop.TrainingDivergedError, match=r"at step 3.*step-00000002"):
        train(config(tiny_sd, meta, out, max_steps=5, checkpoint_every=2))
    assert [p.name for p in checkpointing.list_checkpoints(out)] == ["step-00000002"]
    assert all(torch.isfinite(t).all() for t in weights(out / "checkpoints" / "step-00000002").values())
    assert not (out / "config.json").exists()  # no final adapter was published


def test_disk_full_during_save_leaves_the_previous_checkpoint(tiny_sd, meta, tmp_path, monkeypatch):
    real_save = checkpointing.torch.save
    saves = []

    def full_disk(obj, path, *args, **kwargs):
        saves.append(path)
        if len(saves) == 2:
            Path(path).write_bytes(b"half")  # a partial file, then the error
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpointing.torch, "save", full_disk)
    out = tmp_path / "run"
    with pytest.raises(
        checkpointing.CheckpointError,
        match=r"^no space left on .+ while writing .+step-00000002; .+step-00000001 is intact",
    ):
        train(config(tiny_sd, meta, out, max_steps=3, checkpoint_every=1))
    monkeypatch.setattr(checkpointing.torch, "save", real_save)
    assert [p.name for p in checkpointing.list_checkpoints(out)] == ["step-00000001"]
    assert not list((out / "checkpoints").glob(".step-*"))
    adapter_state, state = checkpointing.load_checkpoint(out / "checkpoints" / "step-00000001")
    assert state["step"] == 1 and adapter_state


# ---------------------------------------------------------------------------------------------
# Learning, caching, SDXL, the objective
# ---------------------------------------------------------------------------------------------


def _fixed_loss(model: Path, data: Path, adapter, positions: range) -> float:
    """The training loss on fixed samples with fixed noise (same draws for every adapter)."""
    import random

    from diffusers import DDPMScheduler

    from t2i_adapter.generation.base_model import load_base_model
    from t2i_adapter.training.data import open_dataset
    from t2i_adapter.training.data.batches import collate, prepared_to_item
    from t2i_adapter.training.data.transforms import prepare_example

    base = load_base_model(str(model))
    source = open_dataset(data, cond_type="none")
    frozen = loop.FrozenParts(
        base=base, vae_config=base.vae.config, is_sdxl=False, weight_dtype=torch.float32
    )
    items = []
    for position in positions:
        example = source.load(position % len(source))
        example.condition = example.image  # the `none` preprocessor: the image is its own condition
        prepared = prepare_example(
            example,
            resolution=64,
            condition_channels=3,
            center_crop=True,
            random_flip=False,
            rng=random.Random(0),
        )
        items.append(prepared_to_item(prepared, position, 64))
    batch = collate(items)
    with torch.no_grad():
        return loop.compute_loss(
            batch,
            adapter,
            frozen,
            DDPMScheduler.from_config(base.scheduler.config),
            seed=99,
            timestep_sampling="uniform",
            caption_dropout=0.0,
            device=torch.device("cpu"),
        ).item()


def test_loss_falls_on_a_learnable_toy_task(tiny_sd, tmp_path):
    """The condition is the image itself, so the adapter can tell the UNet where the box is."""
    from accelerate.utils import set_seed

    from t2i_adapter.adapters.factory import new_adapter_for_unet
    from t2i_adapter.checkpoints import load_adapter
    from t2i_adapter.generation.base_model import load_base_model

    data = tmp_path / "toy"
    data.mkdir()
    for index, (image, _, caption) in enumerate(make_samples(10)):
        image.save(data / f"{index}.png")
        (data / f"{index}.txt").write_text(caption)
    out = train(
        config(
            tiny_sd, data, tmp_path / "run", cond_type="none", batch_size=4, max_steps=30, caption_dropout=0.0
        )
    )
    set_seed(0)  # the trainer's seed: the same initial adapter
    initial = new_adapter_for_unet(load_base_model(str(tiny_sd)).unet, "full", 3)
    before = _fixed_loss(tiny_sd, data, initial, range(16))
    after = _fixed_loss(tiny_sd, data, load_adapter(out), range(16))
    assert after < 0.92 * before, (before, after)


def test_cached_latents_train_like_encoding_every_step(tiny_sd, meta, tmp_path):
    plain = train(config(tiny_sd, meta, tmp_path / "plain", max_steps=3, log_every=1))
    cached = train(config(tiny_sd, meta, tmp_path / "cached", max_steps=3, log_every=1, cache_latents=True))
    assert (cached / "cache" / "index.json").is_file()
    assert json.loads((cached / "cache" / "index.json").read_text())["samples"] == 10

    def losses(out: Path) -> list[float]:
        return [float(row.split(",")[1]) for row in (out / "metrics.csv").read_text().splitlines()[1:]]

    # Same samples, same noise; only the batching of the VAE/text encoder differs (float rounding).
    assert losses(cached) == pytest.approx(losses(plain), rel=1e-4)
    for key, value in weights(plain).items():
        torch.testing.assert_close(weights(cached)[key], value, atol=SAME_RUN_ATOL, rtol=0)
    # A resumed cached run reuses the cache (same fingerprint) and still matches.
    train(config(tiny_sd, meta, tmp_path / "cached", max_steps=4, cache_latents=True, resume=True))


def test_cached_training_on_prepared_shards_equals_cached_training_on_the_folder(tiny_sd, meta, tmp_path):
    from t2i_adapter.training.prepare import PrepareSettings, prepare_dataset

    prepared = tmp_path / "prepared"
    settings = PrepareSettings(
        str(meta),
        str(prepared),
        cond_type=TAG,
        model=str(tiny_sd),
        resolution=64,
        batch_size=2,
        samples_per_shard=4,
    )
    prepare_dataset(settings)
    folder = train(config(tiny_sd, meta, tmp_path / "folder", max_steps=3, cache_latents=True))
    shards = train(config(tiny_sd, prepared, tmp_path / "shards", max_steps=3, cache_latents=True))
    assert_same_weights(weights(shards), weights(folder))  # same samples, order, encodings and noise
    assert not (shards / "cache").exists()  # the shards' latents were read, nothing re-encoded
    for overrides, message in (
        ({"resolution": 128}, "made with --resolution 64, not 128"),
        ({"random_flip": True}, "centre crop without flips"),
        ({"cond_type": "canny"}, f"prepared with '{TAG}' conditions"),
    ):
        with pytest.raises(T2IAdapterError, match=message):
            train(config(tiny_sd, prepared, tmp_path / "refused", cache_latents=True, **overrides))
    plain = tmp_path / "plain"
    prepare_dataset(PrepareSettings(str(meta), str(plain), cond_type=TAG, progress=False))
    with pytest.raises(T2IAdapterError, match="prepared without --model"):
        train(config(tiny_sd, plain, tmp_path / "refused", cache_latents=True))


def test_condition_options_reach_the_preprocessor(tiny_sd, tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    for index, (image, _, caption) in enumerate(make_samples(4)):
        image.save(folder / f"{index}.png")
        (folder / f"{index}.txt").write_text(caption)
    with pytest.raises(T2IAdapterError, match="unknown canny option 'strength'"):
        train(config(tiny_sd, folder, tmp_path / "bad", cond_type="canny", cond_options=["strength=3"]))
    with pytest.raises(T2IAdapterError, match="has its own 'edge' maps"):
        train(config(tiny_sd, write_folder(tmp_path / "tagged"), tmp_path / "x", cond_options=["a=1"]))
    out = train(
        config(tiny_sd, folder, tmp_path / "ok", cond_type="canny", cond_options=["low_threshold=20"])
    )
    assert (out / "adapter.safetensors").is_file()


def test_sdxl_with_v_prediction_and_cubic_timesteps(tmp_path):
    from t2i_adapter.checkpoints import load_adapter
    from tiny_models import save_tiny_sdxl

    model = save_tiny_sdxl(tmp_path / "tiny-sdxl")
    scheduler_config = model / "scheduler" / "scheduler_config.json"
    settings = json.loads(scheduler_config.read_text())
    settings["prediction_type"] = "v_prediction"
    scheduler_config.write_text(json.dumps(settings))
    data = write_folder(tmp_path / "data")
    out = train(config(model, data, tmp_path / "run", max_steps=2))
    adapter = load_adapter(out)
    assert adapter.adapter_kind == "xl" and adapter.in_condition_channels == 1
    saved = (out / "train_config.yaml").read_text()
    assert "timestep_sampling: auto" in saved


def test_bf16_mixed_precision_trains_an_fp32_adapter(tiny_sd, meta, tmp_path):
    out = train(config(tiny_sd, meta, tmp_path / "bf16", mixed_precision="bf16", gradient_checkpointing=True))
    trained = weights(out)
    assert {value.dtype for value in trained.values()} == {torch.float32}
    assert all(torch.isfinite(value).all() for value in trained.values())
    assert float((out / "metrics.csv").read_text().splitlines()[-1].split(",")[1]) > 0


def test_objective_targets_and_timestep_sampling():
    from diffusers import DDPMScheduler

    u = torch.linspace(0, 0.999, 1000)
    uniform, cubic = sample_timesteps(u, 1000, "uniform"), sample_timesteps(u, 1000, "cubic")
    assert uniform.min() == 0 and uniform.max() == 999
    assert cubic.float().mean() > 700 > uniform.float().mean()  # E[1 - u^3] = 3/4: favours noisy steps
    latents, noise, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
    epsilon = DDPMScheduler(prediction_type="epsilon")
    velocity = DDPMScheduler(prediction_type="v_prediction")
    assert torch.equal(diffusion_target(epsilon, latents, noise, t), noise)
    alpha = velocity.alphas_cumprod[t].sqrt()[:, None, None, None]
    sigma = (1 - velocity.alphas_cumprod[t]).sqrt()[:, None, None, None]
    torch.testing.assert_close(diffusion_target(velocity, latents, noise, t), alpha * noise - sigma * latents)


# ---------------------------------------------------------------------------------------------
# CLI, config files, several processes
# ---------------------------------------------------------------------------------------------


def test_cli_config_file_with_flag_overrides(tiny_sd, meta, tmp_path, capsys):
    settings = tmp_path / "run.toml"
    settings.write_text(
        f'model = "{tiny_sd}"\ndata = "{meta}"\ncond-type = "{TAG}"\nresolution = 64\nbatch_size = 2\n'
        f'max_steps = 5\nlr = "1e-3"\nprogress = false\noutput_dir = "{tmp_path / "run"}"\n'
    )
    assert cli(["train", "--config", str(settings), "--max-steps", "1"]) == 0
    saved = (tmp_path / "run" / "train_config.yaml").read_text()
    assert "max_steps: 1" in saved and "lr: 0.001" in saved and "batch_size: 2" in saved
    out = capsys.readouterr().out
    assert "adapter written to" in out and "try it: t2i-adapter generate --model" in out
    # errors are one line, exit 2
    settings.write_text('model = "x"\nbatch_sise = 2\n')
    assert cli(["train", "--config", str(settings)]) == 2
    error = capsys.readouterr().err
    assert (
        "unknown training setting" in error
        and "'batch_sise'" in error
        and len(error.strip().splitlines()) == 1
    )
    yaml_settings = tmp_path / "run.yaml"
    yaml_settings.write_text(
        f"model: {tiny_sd}\ndata: {meta}\noutput_dir: {tmp_path / 'y'}\nresolution: 100\n"
    )
    assert cli(["train", "--config", str(yaml_settings)]) == 2
    assert "multiple of 64" in capsys.readouterr().err


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_stay_in_sync_and_match_one_process(tiny_sd, meta, tmp_path):
    """`accelerate launch` with 2 CPU processes (gloo): batch 2 each == one process with batch 4."""
    common = [
        "--model", str(tiny_sd), "--data", str(meta), "--cond-type", TAG, "--resolution", "64",
        "--lr", "1e-3", "--lr-warmup-steps", "0", "--max-steps", "2", "--no-progress",
        "--caption-dropout", "0.3",
    ]  # fmt: skip
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()), "-m", "t2i_adapter.interfaces.cli.main", "train",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        launch + common + ["--output-dir", str(tmp_path / "ddp"), "--batch-size", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    state = torch.load(
        checkpointing.latest_checkpoint(tmp_path / "ddp") / checkpointing.STATE_FILE, weights_only=True
    )
    assert state["world_size"] == 2 and state["samples_seen"] == 8
    assert len(state["ranks_in_sync"]) == 2 and state["ranks_in_sync"][0] == state["ranks_in_sync"][1]
    single = train(config(tiny_sd, meta, tmp_path / "single", batch_size=4))
    for key, value in weights(single).items():
        torch.testing.assert_close(weights(tmp_path / "ddp")[key], value, atol=SAME_RUN_ATOL, rtol=0)


@pytest.mark.slow
def test_each_of_two_processes_opens_only_its_own_shards(tiny_sd, tmp_path):
    shards = write_shards(tmp_path / "shards", count=8, shards=4)
    log = tmp_path / "opens"
    log.mkdir()
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()), str(TESTS / "open_counter.py"), "train",
        "--model", str(tiny_sd), "--data", str(shards), "--cond-type", TAG, "--resolution", "64",
        "--lr", "1e-3", "--lr-warmup-steps", "0", "--max-steps", "3", "--batch-size", "2", "--no-progress",
        "--output-dir", str(tmp_path / "ddp"),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "OPEN_LOG": str(log)}
    result = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    opened = {rank: set((log / f"rank-{rank}.txt").read_text().split()) for rank in (0, 1)}
    assert opened == {0: {"shard-0000.tar", "shard-0002.tar"}, 1: {"shard-0001.tar", "shard-0003.tar"}}
    state = torch.load(
        checkpointing.latest_checkpoint(tmp_path / "ddp") / checkpointing.STATE_FILE, weights_only=True
    )
    # 3 steps x 2 samples per process: each walked its 4 samples once and 2 of its next epoch
    assert state["stream"] == {
        "world_size": 2,
        "ranks": [{"epoch": 1, "offset": 2}, {"epoch": 1, "offset": 2}],
    }
    assert state["ranks_in_sync"][0] == state["ranks_in_sync"][1]


# ---------------------------------------------------------------------------------------------
# A new adapter is sized from the base model (issue 15, item 1)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_shaped_model(tmp_path_factory) -> Path:
    """An untrained model of the demo's shape: its VAE divides by 4, not 8."""
    from t2i_adapter.demo.tiny_model import TinyModelConfig, build_tiny_model, save_tiny_model

    folder = tmp_path_factory.mktemp("models") / "demo-shaped"
    save_tiny_model(build_tiny_model(TinyModelConfig()), folder, half=False)
    return folder


@pytest.mark.parametrize("model", ["tiny_sd", "demo_shaped_model"])
def test_a_new_adapter_fits_the_unet_of_every_model(model, meta, tmp_path, request):
    from t2i_adapter.checkpoints import load_adapter
    from t2i_adapter.generation.base_model import load_base_model
    from t2i_adapter.generation.sizes import unet_multiple

    folder = request.getfixturevalue(model)
    out = train(config(folder, meta, tmp_path / "run", max_steps=1, batch_size=1))
    base = load_base_model(str(folder))
    levels = len(base.unet.config.block_out_channels)
    adapter = load_adapter(out)
    assert adapter.config.downscale_factor == base.vae_scale_factor
    assert adapter.total_downscale_factor == unet_multiple(base.vae_scale_factor, levels)


def test_an_adapter_of_the_wrong_downscale_is_refused_before_step_one(demo_shaped_model, meta, tmp_path):
    from diffusers import T2IAdapter

    T2IAdapter(channels=[32, 64, 64], num_res_blocks=1, downscale_factor=8).save_pretrained(tmp_path / "a")
    with pytest.raises(T2IAdapterError, match="downscale factor is 8; .* needs 4"):
        train(config(demo_shaped_model, meta, tmp_path / "run", adapter=str(tmp_path / "a")))
    assert not (tmp_path / "run" / checkpointing.ADAPTER_FILE).exists()
