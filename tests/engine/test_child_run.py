"""The app's way of training on several GPUs: a child ``lmstudio train --nproc N --json`` followed as events."""

from __future__ import annotations

import dataclasses

import pytest

from lmstudio import events as ev
from lmstudio.config import RunConfig
from lmstudio.engine.child_run import _Relay, child_run_events, event_from_dict
from lmstudio.engine.train_control import TrainControl
from lmstudio.run_control import ControlFile


def test_every_event_survives_the_json_line_it_is_printed_as():
    for cls in (
        ev.Started,
        ev.StepMetrics,
        ev.EvalMetrics,
        ev.FullEvalMetrics,
        ev.Sample,
        ev.Checkpointed,
        ev.StateChanged,
        ev.Notice,
        ev.Finished,
        ev.Failed,
    ):
        values = {}
        for f in dataclasses.fields(cls):
            values[f.name] = {"int": 3, "float": 0.5, "str": "x", "bool": True, "dict": {"a": 1}}.get(
                str(f.type).split(" ")[0].split("|")[0].strip(), None
            )
        event = cls(**values)
        assert event_from_dict(event.to_dict()) == event
    assert event_from_dict({"event": "SomethingNewer", "step": 1}) is None
    assert event_from_dict({**ev.Sample(step=1, text="a").to_dict(), "added_later": 2}) == ev.Sample(1, "a")


def test_the_apps_pause_lr_and_stop_reach_the_child_through_the_control_file(tmp_path):
    app, child = TrainControl(), TrainControl()  # the app's, and rank 0's in the child
    relay, reader = _Relay(tmp_path, app), ControlFile(tmp_path)
    app.pause()
    app.set_lr(5e-4)
    relay.send()
    assert list(tmp_path.iterdir()) == []  # the child has not started the run: its folder stays empty
    relay.child_started()  # the request made meanwhile goes out now
    reader.apply(child)
    assert child.paused and child.take_lr() == 5e-4
    app.resume()
    relay.send()
    app.set_lr(2e-4)  # two changes back to back: each write is a new file, none is missed
    relay.send()
    reader.apply(child)
    assert not child.paused and child.take_lr() == 2e-4
    reader.apply(child)  # nothing new: nothing applied twice
    assert child.take_lr() is None
    app.stop()
    relay.send()
    reader.apply(child)
    assert child.stopping


@pytest.mark.slow
def test_a_child_that_fails_before_training_ends_the_stream_with_its_message(tmp_path):
    cfg = RunConfig(name="c").override(
        [
            "corpus.source=tang300",
            "tokenizer.kind=char",
            "model.n_layer=1",
            "model.n_embd=32",
            "model.n_head=2",
            "model.block_size=16",
            "train.batch_size=7",
            "train.device=cpu",
        ]
    )
    run = tmp_path / "run"
    run.mkdir()
    env = {"LMSTUDIO_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    events = list(child_run_events(cfg.to_json(), run, 2, TrainControl(), env=env))
    assert len(events) == 1 and isinstance(events[0], ev.Failed), events
    assert "multiple of 2" in events[0].message and events[0].message.count("multiple of 2") == 1
    assert not list(tmp_path.glob(".*.launch.json"))


@pytest.mark.slow
def test_a_request_while_the_child_starts_never_makes_it_refuse_its_fresh_folder(tmp_path):
    """Two real processes: the app makes the empty folder, starts the child and at once asks it to stop. A new
    run goes only into an empty folder, so the request waits for the child's Started instead of landing as
    control.json beside it. **Fixed**: the child refused its own folder ("not empty (it holds control.json)")."""
    cfg = RunConfig(name="c").override(
        [
            "corpus.source=tang300",
            "tokenizer.kind=char",
            "model.n_layer=1",
            "model.n_embd=16",
            "model.n_head=2",
            "model.block_size=8",
            "train.batch_size=4",
            "train.max_steps=100000",
            "train.eval_interval=100000",
            "train.sample_interval=0",
            "train.device=cpu",
        ]
    )
    run = tmp_path / "run"
    run.mkdir()
    control = TrainControl()
    control.stop()  # pressed before the child has even imported torch
    env = {"LMSTUDIO_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    events = list(child_run_events(cfg.to_json(), run, 1, control, env=env))
    assert isinstance(events[-1], ev.Finished) and events[-1].reason == "stopped", events[-1]
    assert any(isinstance(e, ev.Started) for e in events)
    assert (run / "model.safetensors").is_file()  # it trained in the folder it was given, then saved
