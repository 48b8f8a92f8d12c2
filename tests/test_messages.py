"""What the commands say (issue 15 items 8 and 9): one short line each, naming the file or flag.

Notes on doubtful input (a 1x1 condition, `--width 7`, a 1-channel map for a 3-channel adapter, a
5000-word prompt) are one line; hub failures are one `error:` line without huggingface_hub's
retry notes or its advice to Python callers; the data check's verdict agrees with its exit
status; `train` ends with the command that uses its adapter.
"""

from __future__ import annotations

import logging
import socket
import time
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import LocalEntryNotFoundError
from PIL import Image, ImageDraw

from t2i_adapter import demo_weights, hub
from t2i_adapter.errors import MissingWeightsError
from t2i_adapter.interfaces.cli.main import main as cli
from t2i_adapter.interfaces.cli.train import try_command
from t2i_adapter.training import TrainConfig, loop
from t2i_adapter.training.logs import TrainingLog
from test_data_formats import TAG, write_folder

needs_demo = pytest.mark.skipif(not demo_weights.demo_weights_available(), reason="demo weights not built")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def drawing(tmp_path):
    picture = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(picture).ellipse((12, 12, 52, 52), outline="black", width=3)
    picture.save(tmp_path / "drawing.png")
    return tmp_path / "drawing.png"


def generate(tmp_path, *extra: str) -> list[str]:
    return ["generate", "--model", "demo", "--prompt", "a red ball", "--steps", "1"] + [
        *extra,
        "--out",
        str(tmp_path / "out.png"),
    ]


def notes(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]


# ---------------------------------------------------------------------------------------------
# Item 9: doubtful input gets one short line
# ---------------------------------------------------------------------------------------------


@needs_demo
def test_a_one_pixel_condition_is_noted_naming_the_file(tmp_path, caplog):
    Image.new("RGB", (1, 1), "white").save(tmp_path / "dot.png")
    args = generate(tmp_path, "--adapter", "demo:sketch", "--cond", str(tmp_path / "dot.png"))
    assert cli(args + ["--cond-type", "none"]) == 0
    said = [line for line in notes(caplog) if "dot.png" in line]
    assert len(said) == 1 and "1x1 pixels" in said[0] and "\n" not in said[0]


@needs_demo
def test_a_width_the_model_cannot_take_is_noted_with_the_flag(tmp_path, drawing, caplog):
    args = generate(tmp_path, "--adapter", "demo:sketch", "--cond", str(drawing), "--cond-type", "none")
    assert cli(args + ["--width", "7"]) == 0
    said = [line for line in notes(caplog) if "--width" in line]
    assert said == [said[0]] and "--width 7 is rounded to" in said[0]
    assert Image.open(tmp_path / "out.png").width % 8 == 0


@needs_demo
def test_a_one_channel_condition_type_for_a_three_channel_adapter_is_noted(tmp_path, drawing, caplog):
    args = generate(tmp_path, "--adapter", "demo:color", "--cond", str(drawing), "--cond-type", "sketch")
    assert cli(args) == 0
    said = [line for line in notes(caplog) if "channel" in line]
    assert len(said) == 1 and "'demo:color' reads 3-channel" in said[0] and "sketch" in said[0]
    caplog.clear()
    assert (
        cli(generate(tmp_path, "--adapter", "demo:color", "--cond", str(drawing), "--cond-type", "color"))
        == 0
    )
    assert not [line for line in notes(caplog) if "channel" in line]


@needs_demo
def test_a_5000_word_prompt_gives_one_short_line(tmp_path, drawing, caplog):
    args = ["generate", "--model", "demo", "--prompt", " ".join(["ball"] * 5000), "--steps", "1"]
    assert cli(args + ["--out", str(tmp_path / "long.png")]) == 0
    said = [line for line in notes(caplog) if "prompt" in line]
    assert len(said) == 1 and len(said[0]) < 200 and "tokens" in said[0]
    assert not [line for line in notes(caplog) if "indexing errors" in line]


def test_a_scheduler_stable_diffusion_cannot_use_is_refused_before_loading(tmp_path, capsys):
    for name in ("FlowMatchEulerDiscreteScheduler", "AmusedScheduler", "SchedulerMixin"):
        args = ["generate", "--model", str(tmp_path / "absent-model"), "--prompt", "x"]
        assert cli(args + ["--scheduler", name, "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"unknown scheduler '{name}'" in err[0] and "absent-model" not in err[0]
    assert not (tmp_path / "x.png").exists()


# ---------------------------------------------------------------------------------------------
# Item 8: messages
# ---------------------------------------------------------------------------------------------


def test_train_ends_with_the_generate_command_for_its_adapter(tmp_path):
    config = TrainConfig(model="demo", data="d", output_dir=str(tmp_path / "my run"), cond_type="canny")
    command = try_command(config, tmp_path / "my run")
    assert command.startswith("t2i-adapter generate --model demo --adapter ")
    assert f"'{tmp_path / 'my run'}'" in command and "--cond-type canny" in command
    # a condition the dataset brought as files has no preprocessor: the map is given ready
    assert "--cond-type none" in try_command(TrainConfig(model="demo", cond_type=TAG), tmp_path)


def test_metrics_seconds_go_on_after_resume(tmp_path):
    (tmp_path / "metrics.csv").write_text(
        "step,loss,lr,samples_per_second,seconds\n10,0.5,1e-5,2.0,100.0\n20,0.4,1e-5,2.0,200.0\n"
    )
    log = TrainingLog(tmp_path, resume_step=10)
    log.close()
    assert log.seconds_before == 100.0
    assert (tmp_path / "metrics.csv").read_text().splitlines()[-1].startswith("10,")
    run = SimpleNamespace(
        config=SimpleNamespace(max_steps=30, progress=False), output_dir=tmp_path, step=10, is_main=True
    )
    logs = loop.start_logs(run)
    logs.log.close()
    assert 100.0 <= time.perf_counter() - logs.run_start < 150.0


def test_strict_data_check_says_refused_and_empty_captions_name_the_sample(tmp_path, capsys):
    folder = write_folder(tmp_path / "data", count=4)
    (folder / "s01.txt").write_text("   \n")
    (folder / "s02.png").write_bytes(b"not a png")
    assert cli(["data", "check", str(folder), "--cond-type", TAG]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("verdict: usable (1 sample(s) with problems")
    empty = out[out.index("empty caption") :].splitlines()
    assert "s01" in empty[1]
    assert cli(["data", "check", str(folder), "--cond-type", TAG, "--strict"]) == 2
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("verdict: REFUSED under --strict") and "usable" not in last


@needs_demo
def test_serve_prints_one_line_without_gradios_share_hint(monkeypatch, capfd):
    pytest.importorskip("gradio")
    import gradio

    monkeypatch.setattr(gradio.Blocks, "block_thread", lambda self: self.close())
    assert cli(["serve", "--port", str(_free_port())]) == 0
    captured = capfd.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("Closing server")]  # the test's close()
    assert len(lines) == 1 and lines[0].startswith("web UI: http://127.0.0.1:"), lines
    assert "share" not in captured.out + captured.err


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@needs_demo
def test_an_unreachable_hub_file_is_one_error_line_without_retry_notes(
    tmp_path, drawing, monkeypatch, capfd, caplog
):
    def offline_download(**kwargs):
        logging.getLogger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry 1/5].")
        raise LocalEntryNotFoundError(
            "Cannot find the requested files in the local cache; pass 'local_files_only=False'"
        )

    monkeypatch.setattr(hub, "hf_hub_download", offline_download)
    name = "owner/repo/models/adapter.safetensors"
    assert cli(generate(tmp_path, "--adapter", name, "--cond", str(drawing))) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and f"'{name}'" in err[0]
    assert "could not be reached (offline)" in err[0] and "local_files_only" not in err[0]
    assert not [line for line in notes(caplog) if "Retrying" in line]


def no_network(monkeypatch, failure: OSError) -> list[float]:
    """Online mode (the tests run offline), but every host name lookup fails with `failure`;
    huggingface_hub's waits between retries are recorded, not slept (the list returned)."""

    def getaddrinfo(*args, **kwargs):
        raise failure

    waits: list[float] = []
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(time, "sleep", waits.append)
    return waits


@pytest.mark.parametrize(
    "download",
    [
        lambda: hub.download_file("owner/not-cached", "adapter.safetensors", what="adapter"),
        lambda: hub.download_snapshot("owner/not-cached", what="adapter"),
    ],
    ids=["file", "snapshot"],
)
def test_a_hub_without_network_fails_at_once_without_retries(monkeypatch, tmp_path, download):
    """No address for the hub: one error at once, not after huggingface_hub's 5 retries (23 s)."""
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    waits = no_network(monkeypatch, socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    with pytest.raises(MissingWeightsError, match=r"could not be reached \(offline\)"):
        download()
    assert waits == []


def test_a_slow_hub_still_gets_huggingface_hubs_retries(monkeypatch, tmp_path):
    """A timeout may be a slow connection that works: huggingface_hub's retries stay."""
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    waits = no_network(monkeypatch, TimeoutError("timed out"))
    with pytest.raises(MissingWeightsError, match="(offline)"):
        hub.download_file("owner/not-cached", "adapter.safetensors", what="adapter")
    assert len(waits) == 5


def test_a_cached_hub_file_is_used_without_network(monkeypatch, tmp_path):
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--owner--cached"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "adapter.safetensors").write_bytes(b"weights")
    waits = no_network(monkeypatch, socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    path = hub.download_file("owner/cached", "adapter.safetensors", what="adapter")
    assert path.read_bytes() == b"weights" and waits == []


def test_an_offline_hub_model_is_one_error_line(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert (
        cli(
            [
                "generate",
                "--model",
                "owner/not-cached-model",
                "--prompt",
                "x",
                "--out",
                str(tmp_path / "x.png"),
            ]
        )
        == 2
    )
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'owner/not-cached-model'" in err[0] and "(offline)" in err[0], err
    assert "local_files_only" not in err[0] and "stacktrace" not in err[0]
    assert not (tmp_path / "x.png").exists()
