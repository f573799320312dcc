"""host_memory: off unless asked for; asked for, freed blocks are reused instead of faulted back in, and handed
back when the run ends.

Each case runs in a fresh interpreter: glibc's thresholds are process-wide and adapt to what a process has
already freed, so only a new process shows the defaults' behaviour.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lmstudio.engine import host_memory

pytestmark = pytest.mark.skipif(not host_memory.available(), reason="needs Linux with glibc")
ON = {host_memory.ENV: "1"}

# malloc, touch and free one 48 MiB block six times, straight through ctypes (nothing else allocates in between),
# counting the page faults of each round and the resident memory inside and after the block. 48 MiB is above
# glibc's largest adaptive mmap threshold (32 MiB), so with the defaults every round maps fresh pages.
BLOCKS = r"""
import ctypes, json, resource, sys
from contextlib import nullcontext
from lmstudio.engine import host_memory

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rss_mib = lambda: int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20
size, rounds = 48 << 20, []
with (host_memory.freed_memory_kept() if sys.argv[1] == "kept" else nullcontext()) as tuned:
    for _ in range(6):
        before = faults()
        block = libc.malloc(size)
        libc.memset(block, 1, size)
        libc.free(block)
        rounds.append(faults() - before)
    rss_inside = rss_mib()
print(json.dumps({"tuned": bool(tuned), "rounds": rounds, "rss_inside": rss_inside, "rss_after": rss_mib(),
                  "mmap_threshold": host_memory.mmap_threshold}))
"""

# A few training steps of nanoGPT's baby GPT, the pattern the setting is for: page faults per step once warm.
STEPS = r"""
import json, resource, sys
from contextlib import nullcontext
import torch
from lmstudio.config import ModelConfig
from lmstudio.engine import host_memory
from lmstudio.engine.models import build_model

torch.set_num_threads(1)
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.manual_seed(0)
model = build_model(ModelConfig(arch="transformer", vocab_size=65, n_layer=4, n_head=4, n_embd=128, block_size=64))
opt = torch.optim.AdamW(model.parameters())

def step():
    x = torch.randint(0, 65, (12, 64))
    _, loss = model(x, x)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)

with (host_memory.freed_memory_kept() if sys.argv[1] == "kept" else nullcontext()) as tuned:
    for _ in range(10):
        step()
    before = faults()
    for _ in range(10):
        step()
print(json.dumps({"tuned": bool(tuned), "faults_per_step": (faults() - before) / 10}))
"""


def probe(script: str, mode: str, env: dict[str, str]) -> dict:
    """``script`` in a fresh interpreter (``mode``: "kept" runs it inside ``freed_memory_kept``), with ``env``
    in place of the setting's variable."""
    base = {k: v for k, v in os.environ.items() if k != host_memory.ENV}
    out = subprocess.run(
        [sys.executable, "-c", script, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**base, **env},
        timeout=120,
    )
    return json.loads(out.stdout)


def test_default_allocator_faults_a_freed_block_back_in_every_time():
    """The reference: with glibc's defaults every round pays the first round's faults again."""
    rounds = probe(BLOCKS, "plain", {})["rounds"]
    assert rounds[0] > 0 and min(rounds[1:]) >= rounds[0] // 2


def test_kept_memory_is_reused_without_faults_and_returned_at_the_end():
    got = probe(BLOCKS, "kept", ON)
    assert got["tuned"] is True
    if got["mmap_threshold"] < 48 << 20:
        pytest.skip("this glibc caps the mmap threshold at 32 MiB: a 48 MiB block is mapped anyway")
    assert got["rounds"][0] > 0 and max(got["rounds"][1:]) <= got["rounds"][0] // 100
    assert got["rss_after"] < got["rss_inside"] - 40  # the freed block stayed with the process until the end


def test_training_steps_stop_faulting():
    """Warm baby-GPT steps: 0-16 faults each with the setting (190-2,700 without it, varying from run to run)."""
    got = probe(STEPS, "kept", ON)
    assert got["tuned"] is True and got["faults_per_step"] < 100


@pytest.mark.parametrize(
    "env", [{}, {host_memory.ENV: "0"}, {host_memory.ENV: "yes"}], ids=["unset", "0", "yes"]
)
def test_it_is_off_unless_asked_for(env):
    """Not asked for ("1"), the allocator is left as it is: no threshold is set."""
    got = probe(BLOCKS, "kept", env)
    assert got["tuned"] is False and got["mmap_threshold"] == 0


def test_nested_uses_keep_the_setting_until_the_last_one_leaves(monkeypatch):
    monkeypatch.setenv(host_memory.ENV, "1")
    with host_memory.freed_memory_kept() as outer:
        with host_memory.freed_memory_kept() as inner:
            assert outer and inner and host_memory._users == 2
        assert host_memory._users == 1
    assert host_memory._users == 0


@pytest.mark.parametrize("asked", [True, False], ids=["asked-for", "default"])
def test_the_trainer_keeps_freed_memory_during_its_step_loop_only_when_asked(tmp_path, monkeypatch, asked):
    from lmstudio.config import RunConfig
    from lmstudio.engine.trainer import Trainer
    from lmstudio.events import Finished, StepMetrics

    cfg = (
        RunConfig(name="t")
        .override(
            [
                "corpus.source=tang300",
                "tokenizer.kind=char",
                "model.arch=gru",
                "model.n_layer=1",
                "model.n_embd=16",
                "model.block_size=8",
                "train.batch_size=4",
                "train.max_steps=3",
                "train.log_interval=1",
                "train.eval_interval=100",
                "train.sample_interval=0",
                "train.device=cpu",
            ]
        )
        .validate()
    )
    if asked:
        monkeypatch.setenv(host_memory.ENV, "1")
    else:
        monkeypatch.delenv(host_memory.ENV, raising=False)
    seen = []
    for event in Trainer(cfg, tmp_path / "run", cache_dir=tmp_path / "cache").run():
        if isinstance(event, (StepMetrics, Finished)):
            seen.append((type(event).__name__, host_memory._users))
    held = 1 if asked else 0
    assert seen[:3] == [("StepMetrics", held)] * 3  # held while the steps run (when asked for)
    assert host_memory._users == 0  # let go when the run ends
