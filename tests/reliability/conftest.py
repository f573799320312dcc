"""Shared pieces for the reliability tests: tiny configs (1 layer, context 8) and a finished run to damage."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lmstudio.config import RunConfig

# a model small enough that a 20-step run takes well under a second on 2 CPU cores
TINY = [
    "corpus.source=tang300",
    "tokenizer.kind=char",
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=16",
    "model.hidden_size=16",
    "model.block_size=8",
    "train.batch_size=4",
    "train.max_steps=20",
    "train.log_interval=1",
    "train.eval_interval=10",
    "train.eval_iters=1",
    "train.sample_interval=0",
    "train.warmup_steps=0",
    "train.min_lr=0",
    "train.device=cpu",
    "train.seed=3",
]


def tiny_config(arch: str = "transformer", *overrides: str) -> RunConfig:
    return RunConfig(name=f"rel-{arch}").override(TINY + [f"model.arch={arch}", *overrides]).validate()


def run_all(trainer, on_event=None) -> list:
    events = []
    for event in trainer.run():
        events.append(event)
        if on_event is not None:
            on_event(event)
    return events


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="session")
def finished_runs(tmp_path_factory):
    """A finished tiny run per architecture, trained on first use and shared read-only (tests damage copies):
    ``finished_runs["lstm"]``."""
    root = tmp_path_factory.mktemp("reliability-runs")

    class Runs(dict):
        def __missing__(self, arch: str) -> Path:
            from lmstudio.engine.trainer import Trainer

            run = root / arch
            events = list(Trainer(tiny_config(arch), run, cache_dir=root / "cache").run())
            assert type(events[-1]).__name__ == "Finished", events[-1]
            self[arch] = run
            return run

    return Runs()


# ---- real faults ----------------------------------------------------------------------------------------
class SmallDisk:
    """A real, small filesystem (a tmpfs) to fill up or make read-only; ``root`` is where runs go."""

    def __init__(self, mount: Path):
        self.mount = mount
        self.root = mount / "runs"
        self.root.mkdir()
        self._filler = mount / "filler.bin"  # outside the runs, on the same filesystem

    def free(self) -> int:
        return shutil.disk_usage(self.mount).free

    def fill(self, leave: int = 0) -> None:
        """Write until the filesystem refuses (a real ENOSPC), then give back about ``leave`` bytes."""
        import errno

        fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
        finally:
            os.close(fd)
        size = self._filler.stat().st_size
        os.truncate(self._filler, max(size - leave, 0) // 4096 * 4096)

    def free_up(self) -> None:
        self._filler.unlink(missing_ok=True)

    def read_only(self, on: bool = True) -> None:
        done = _mount("-o", f"remount,{'ro' if on else 'rw'}", str(self.mount))
        assert done.returncode == 0, done.stderr


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def mounted_tmpfs(mount: Path, size: str):
    """A tmpfs of ``size`` (e.g. "400k") at ``mount`` (needs root, as on the test machines), unmounted after;
    skips the test with the reason where mounting is refused."""
    mount.mkdir()
    done = _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)) if shutil.which("mount") else None
    if done is None or done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({(done.stderr.strip() if done else 'no mount')})")
    try:
        yield SmallDisk(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


@pytest.fixture
def small_disk(tmp_path):
    """A 400 KB tmpfs; ``test_real_disk.py::test_a_file_size_limit_*`` covers the same fault without mounting."""
    with mounted_tmpfs(tmp_path / "disk", "400k") as disk:
        yield disk


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary files any writer may leave: ours (``.<name>.*.tmp``) and safetensors' (``.tmpXXXXXX``)."""
    return sorted(
        p.name for p in Path(folder).rglob(".*") if p.name.endswith(".tmp") or p.name.startswith(".tmp")
    )


@contextlib.contextmanager
def capped_address_space(room: int):
    """Let this process grow by ``room`` bytes of address space only (``RLIMIT_AS``): an allocation beyond
    that fails for real in the allocator, as on a machine out of memory. Linux only."""
    resource = pytest.importorskip("resource")
    if not Path("/proc/self/statm").exists():
        pytest.skip("needs /proc/self/statm (Linux)")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    used = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + room, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
