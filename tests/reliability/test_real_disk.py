"""A real full or read-only disk: a small tmpfs as the runs folder (or the cache), filled up for real.

Nothing here raises a hand-made error: safetensors, ``torch.save``, ``json`` and ``open`` meet a filesystem
that refuses, and each says so its own way (``SafetensorError``, ``RuntimeError: ... unexpected pos``,
``OSError``). The run must end as a disk failure that says how much space there is and is needed, keep
the previous checkpoint, leave no temporary file (ours or safetensors' own), and resume once space is back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from lmstudio.engine import checkpoint as ckpt
from lmstudio.engine.session import Session
from lmstudio.engine.trainer import TrainControl, Trainer
from lmstudio.events import Checkpointed, Failed, Finished, Notice, StateChanged
from tests.reliability.conftest import leftovers, run_all, tiny_config

SMALL = "corpus.source=tiny_shakespeare"  # 65 characters: a checkpoint of ~110 KB fits the 400 KB disk
# after the checkpoint at step 10, leave room for the log lines but not for: the weights (19 KB each) /
# the training state (67 KB; both weight files fit first)
LEAVE = {"in-the-weights": 8 << 10, "in-the-state": 56 << 10}


def _fill_after_first_checkpoint(disk, leave: int):
    def on_event(event):
        if isinstance(event, Checkpointed) and event.step == 10:
            disk.fill(leave=leave)

    return on_event


@pytest.mark.parametrize("leave", LEAVE.values(), ids=LEAVE.keys())
def test_a_full_disk_at_a_checkpoint_is_a_disk_failure_that_keeps_the_previous_one(
    small_disk, tmp_path, leave
):
    run = small_disk.root / "run"
    trainer = Trainer(tiny_config("transformer", SMALL), run, cache_dir=tmp_path / "cache")
    events = run_all(trainer, _fill_after_first_checkpoint(small_disk, leave))
    failed = events[-1]
    assert isinstance(failed, Failed) and failed.kind == "disk", failed
    # safetensors passes the errno on; torch.save says only "unexpected pos", so the free space tells
    assert ("No space left on device" in failed.message and "errno 28" in failed.message) or (
        "not enough free space" in failed.message and "unexpected pos" in failed.message
    ), failed.message
    assert " free" in failed.message and "need about" in failed.message
    assert str(run) in failed.message and "the previous checkpoint is intact" in failed.message
    assert failed.step == 20
    assert ckpt.load_train_state(run)["step"] == 10 and Session.load(run).step == 10
    assert leftovers(small_disk.mount) == [], "a temporary file was left behind"
    # space back: the run resumes from the checkpoint that was kept
    small_disk.free_up()
    again = run_all(
        Trainer(tiny_config("transformer", SMALL), run, resume=True, cache_dir=tmp_path / "cache")
    )
    assert isinstance(again[-1], Finished) and again[-1].step == 20, again[-1]


def someone_is_there(error):
    """The app's answer to a checkpoint the disk refuses: pause, and save again on Resume."""
    assert error.description  # what the disk said, for the notice
    return True


def test_with_someone_at_the_controls_a_full_disk_pauses_and_resume_saves_again(small_disk, tmp_path):
    """The app's control: the save the disk refuses pauses the run; space freed, Resume saves those steps."""
    run = small_disk.root / "run"
    control = TrainControl()
    fill = _fill_after_first_checkpoint(small_disk, LEAVE["in-the-weights"])

    def on_event(event):
        fill(event)
        if isinstance(event, StateChanged) and event.state == "paused":
            assert ckpt.load_train_state(run)["step"] == 10
            small_disk.free_up()  # the user frees some space...
            control.resume()  # ...and presses Resume

    cfg = tiny_config("transformer", SMALL, "train.max_steps=30")
    trainer = Trainer(
        cfg, run, control=control, cache_dir=tmp_path / "cache", on_save_refused=someone_is_there
    )
    events = run_all(trainer, on_event)
    notice = next(e for e in events if isinstance(e, Notice))
    assert notice.step == 20 and "No space left on device" in notice.message and "Resume" in notice.message
    assert [e.step for e in events if isinstance(e, Checkpointed)].count(20) == 1
    assert isinstance(events[-1], Finished) and events[-1].reason == "completed" and events[-1].step == 30
    assert ckpt.load_train_state(run)["step"] == 30 and leftovers(small_disk.mount) == []


@pytest.mark.parametrize("free_space_first", [False, True], ids=["still-full", "space-freed"])
def test_stop_while_paused_on_a_full_disk(small_disk, tmp_path, free_space_first):
    """Stop at the pause: with the disk still full the run ends as a disk failure with the last checkpoint;
    with space freed first, the stop saves the steps that were waiting."""
    run = small_disk.root / "run"
    control = TrainControl()
    fill = _fill_after_first_checkpoint(small_disk, LEAVE["in-the-state"])

    def on_event(event):
        fill(event)
        if isinstance(event, StateChanged) and event.state == "paused":
            if free_space_first:
                small_disk.free_up()
            control.stop()

    cfg = tiny_config("transformer", SMALL, "train.max_steps=30")
    trainer = Trainer(
        cfg, run, control=control, cache_dir=tmp_path / "cache", on_save_refused=someone_is_there
    )
    events = run_all(trainer, on_event)
    if free_space_first:
        assert isinstance(events[-1], Finished) and events[-1].reason == "stopped" and events[-1].step == 20
        assert [e.step for e in events if isinstance(e, Checkpointed)] == [10, 20]
        assert ckpt.load_train_state(run)["step"] == 20
    else:
        assert isinstance(events[-1], Failed) and events[-1].kind == "disk", events[-1]
        assert "previous checkpoint is intact" in events[-1].message
        assert ckpt.load_train_state(run)["step"] == 10
    assert leftovers(small_disk.mount) == []


def test_a_full_disk_while_logging_metrics_is_a_disk_failure(small_disk, tmp_path):
    run = small_disk.root / "run"
    events = run_all(
        Trainer(tiny_config("transformer", SMALL), run, cache_dir=tmp_path / "cache"),
        _fill_after_first_checkpoint(small_disk, 0),
    )
    failed = events[-1]
    assert isinstance(failed, Failed) and failed.kind == "disk", failed
    assert "No space left on device" in failed.message and failed.step < 20
    assert Session.load(run).step == 10 and leftovers(small_disk.mount) == []


def test_a_full_disk_at_the_start_leaves_nothing_behind(small_disk, tmp_path):
    """config.json fits, the 50 KB tokenizer.json does not: the failed start removes what it wrote."""
    small_disk.fill(leave=8 << 10)
    run = small_disk.root / "run"
    events = run_all(Trainer(tiny_config("transformer"), run, cache_dir=tmp_path / "cache"))
    failed = events[-1]
    assert isinstance(failed, Failed) and failed.kind == "disk", failed
    assert (
        "No space left on device" in failed.message and "no checkpoint had been saved yet" in failed.message
    )
    assert "previous checkpoint is intact" not in failed.message
    assert leftovers(small_disk.mount) == []
    assert not run.exists(), list(run.iterdir())


def test_a_read_only_filesystem_mid_run_is_a_disk_failure(small_disk, tmp_path):
    run = small_disk.root / "run"

    def on_event(event):
        if isinstance(event, Checkpointed) and event.step == 10:
            small_disk.read_only()

    try:
        events = run_all(
            Trainer(tiny_config("transformer", SMALL), run, cache_dir=tmp_path / "cache"), on_event
        )
    finally:
        small_disk.read_only(False)
    failed = events[-1]
    assert isinstance(failed, Failed) and failed.kind == "disk", failed
    assert "Read-only file system" in failed.message and "errno 30" in failed.message
    assert Session.load(run).step == 10 and leftovers(small_disk.mount) == []


def test_a_full_disk_while_caching_the_encoded_corpus_is_a_clear_data_failure(small_disk, tmp_path):
    cache = small_disk.mount / "cache"
    small_disk.fill(leave=0)
    events = run_all(Trainer(tiny_config("transformer"), tmp_path / "run", cache_dir=cache))
    failed = events[-1]
    assert isinstance(failed, Failed) and failed.kind == "data", failed
    assert "No space left" in failed.message and "LMSTUDIO_CACHE" in failed.message
    assert leftovers(small_disk.mount) == [] and not list(cache.glob("*.bin"))
    small_disk.free_up()
    again = run_all(
        Trainer(tiny_config("transformer", "train.max_steps=2"), tmp_path / "run2", cache_dir=cache)
    )
    assert isinstance(again[-1], Finished), again[-1]


_FSIZE_CHILD = textwrap.dedent(
    """
    import json, resource, signal, sys
    from lmstudio.engine.trainer import Trainer
    from tests.reliability.conftest import tiny_config

    run, cache, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    trainer = Trainer(tiny_config("transformer", "corpus.source=tiny_shakespeare"), run, cache_dir=cache)
    events = trainer.run()
    for event in events:
        if type(event).__name__ == "Checkpointed" and event.step == 10:
            # from now on no file may grow past `limit` bytes: a write beyond it fails with EFBIG
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        last = event
    print(json.dumps(last.to_dict()))
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE and SIGXFSZ as on Linux")
def test_a_file_size_limit_in_a_real_process_is_a_disk_failure(tmp_path):
    """Where no tmpfs can be mounted this is the real fault the tests still make: the kernel refuses to let
    the 19 KB weights file grow past 10 KB, and safetensors passes the kernel's EFBIG on."""
    run, cache = tmp_path / "run", tmp_path / "cache"
    done = subprocess.run(
        [sys.executable, "-c", _FSIZE_CHILD, str(run), str(cache), str(10_000)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    last = json.loads(done.stdout.strip().splitlines()[-1])
    assert last["event"] == "Failed" and last["kind"] == "disk", last
    assert (
        "File too large (errno 27" in last["message"] and "previous checkpoint is intact" in last["message"]
    )
    assert ckpt.load_train_state(run)["step"] == 10 and Session.load(run).step == 10
    assert leftovers(run) == []
