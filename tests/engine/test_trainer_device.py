"""Device selection, precision and seeding (device.py)."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest
import torch

from lmstudio.engine import device as dev

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "mps_available", lambda: False)
    assert dev.resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(dev, "mps_available", lambda: True)
    assert dev.resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert dev.resolve_device("auto") == torch.device("cuda")
    assert dev.resolve_device("cpu") == torch.device("cpu")


@no_cuda
def test_unavailable_devices_are_clear_user_errors(monkeypatch):
    with pytest.raises(dev.DeviceError, match="CUDA.*auto or cpu"):
        dev.resolve_device("cuda")
    monkeypatch.setattr(dev, "mps_available", lambda: False)
    with pytest.raises(dev.DeviceError, match="MPS"):
        dev.resolve_device("mps")
    with pytest.raises(dev.DeviceError, match="unknown device"):
        dev.resolve_device("tpu")


def test_cpu_description_names_the_threads():
    assert dev.describe_device("cpu") == f"CPU, {torch.get_num_threads()} thread" + (
        "s" if torch.get_num_threads() != 1 else ""
    )


def test_precision_and_compile_defaults_per_device():
    cpu = torch.device("cpu")
    assert dev.choose_precision(cpu, "auto") == dev.Precision("fp32", None, False)
    assert dev.choose_precision(cpu, "bf16").autocast_dtype == torch.bfloat16
    with pytest.raises(dev.DeviceError, match="fp16"):
        dev.choose_precision(cpu, "fp16")
    assert dev.should_compile(cpu, "auto") is False and dev.should_compile(cpu, "on") is True
    assert dev.should_compile(torch.device("cuda"), "auto") is True
    assert dev.should_compile(torch.device("cuda"), "off") is False


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_precision_and_label():
    cuda = torch.device("cuda")
    p = dev.choose_precision(cuda, "auto")
    assert p.name == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    assert dev.choose_precision(cuda, "fp16").use_scaler is True
    assert dev.describe_device(cuda).startswith("CUDA: ")


def test_seeding_repeats_every_generator():
    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    dev.seed_everything(5)
    a = draw()
    dev.seed_everything(5)
    assert draw() == a
    state = dev.rng_state()
    b = torch.rand(3)
    dev.set_rng_state(state)
    assert torch.equal(torch.rand(3), b)


def test_a_run_on_one_thread_reports_it_and_puts_the_count_back(tmp_path):
    """``train.threads=1``: the run trains on one thread and says so; the training thread's previous count
    (3 here, so it differs from both 1 and this machine's default) is back when the run ends. The run is
    iterated in its own thread, as the app does."""
    from lmstudio.engine.trainer import Trainer
    from lmstudio.events import Finished, Started
    from tests.engine.test_trainer import tiny_config

    cfg = tiny_config("train.max_steps=3", "train.device=cpu", "train.threads=1")
    seen: dict = {}
    main_before = torch.get_num_threads()

    def train() -> None:
        torch.set_num_threads(3)
        events = list(Trainer(cfg, tmp_path / "run", cache_dir=tmp_path / "cache").run())
        seen["device"] = next(e for e in events if isinstance(e, Started)).device
        seen["finished"] = isinstance(events[-1], Finished)
        seen["after"] = torch.get_num_threads()

    worker = threading.Thread(target=train)
    worker.start()
    worker.join()
    assert seen == {"device": "CPU, 1 thread", "finished": True, "after": 3}
    assert torch.get_num_threads() == main_before  # this thread was never touched


def test_threads_zero_leaves_torch_as_it_is():
    before = torch.get_num_threads()
    with dev.cpu_threads(0):
        assert torch.get_num_threads() == before
    with dev.cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
