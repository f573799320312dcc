"""Which run Generate and Inspect show: the one being trained (followed), or one the user pinned.

``RunFollower`` subscribes to the window's ``TrainingRun``. While it follows (the default), a new
training run replaces what Generate and Inspect show: until that run's first checkpoint they say they
are waiting for it, and every checkpoint after that reloads them (``SessionController`` reloads when
idle, or before its next request). A pinned run stays, whatever trains. ``RunHeader`` is the line at
the top of both tabs that says which run and step they show and offers Pin / Follow.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget

from lmstudio import run_status
from lmstudio.ui.session_controller import SessionController
from lmstudio.ui.training_run import TrainingRun


def _same(a: str, b: str) -> bool:
    return bool(a) and bool(b) and Path(a).resolve() == Path(b).resolve()


class RunFollower(QObject):
    changed = Signal()  # what the header says has changed

    def __init__(self, sessions: SessionController, run: TrainingRun, parent: QObject | None = None):
        super().__init__(parent)
        self.sessions = sessions
        self.run = run
        self.pinned = ""  # a run folder the user chose to keep; "" while following the live run
        self.target = ""  # the run shown, or waited for ("" while a new run has no folder yet)
        self.waiting = False  # following a live run that has no checkpoint yet
        run.run_changed.connect(self._on_run_changed)
        run.checkpoint_saved.connect(self._on_checkpoint)
        run.state_changed.connect(lambda _state: self.changed.emit())
        sessions.session_loaded.connect(lambda _info: self.changed.emit())
        sessions.session_cleared.connect(self.changed)

    @property
    def following(self) -> bool:
        return not self.pinned

    # ---- the user's choices ----------------------------------------------------------------------
    def show_run(self, run_dir: str) -> None:
        """The user chose ``run_dir`` (Runs table, File → Open run): pinned, unless it is the live run."""
        if self.run.is_running() and _same(run_dir, self.run.run_dir):
            self.follow_live()
        else:
            self.pin(run_dir)

    def pin(self, run_dir: str = "") -> None:
        """Keep ``run_dir`` (default: the one shown now) whatever trains next."""
        run_dir = run_dir or self.target
        if not run_dir:
            return
        self.pinned = run_dir
        self._load(run_dir)

    def follow_live(self) -> None:
        """Show the run being trained (or the last one the window showed) and switch with it."""
        self.pinned = ""
        live = self.run.run_dir
        if self.run.is_running() and not run_status.has_checkpoint(live):
            self._wait_for(live)
        elif live:
            self._load(live)
        else:
            self.changed.emit()

    def show_latest(self, run_dir: str) -> None:
        """At start-up: show the newest saved run, still following (the next training run replaces it)."""
        if not self.target and not self.run.is_running():
            self._load(run_dir)

    def run_moved(self, old: str, new: str) -> None:
        """A run was renamed (its folder moved): keep showing it under its new name."""
        if self.pinned == old:
            self.pinned = new
        if self.target == old:
            self.target = new
            self.sessions.set_run(new)
        self.changed.emit()

    def run_deleted(self, run_dir: str) -> None:
        if self.pinned == run_dir:
            self.pinned = ""
        if self.target == run_dir:
            self.target, self.waiting = "", False
            self.sessions.unload()
        self.changed.emit()

    # ---- reactions -------------------------------------------------------------------------------
    def _on_run_changed(self, run_dir: str) -> None:
        if self.pinned:
            self.changed.emit()
            return
        if not self.run.is_running():  # a saved run opened in the Training tab
            if run_dir:
                self._load(run_dir)
        elif run_dir and run_status.has_checkpoint(
            run_dir
        ):  # continuing a run: its checkpoint is there already
            self._load(run_dir)
        else:
            self._wait_for(run_dir)

    def _on_checkpoint(self, run_dir: str, step: int) -> None:
        if self.pinned:
            return
        self.waiting = False
        self.target = run_dir
        self.sessions.checkpoint_written(run_dir)
        self.changed.emit()

    def _load(self, run_dir: str) -> None:
        self.target, self.waiting = run_dir, False
        info = self.sessions.info
        if info is None or not _same(info.get("run_dir", ""), run_dir):
            self.sessions.set_run(run_dir)
        self.changed.emit()

    def _wait_for(self, run_dir: str) -> None:
        self.target, self.waiting = run_dir, True
        if self.sessions.info is not None:
            self.sessions.unload()
        self.changed.emit()

    # ---- what the header says --------------------------------------------------------------------
    def describe(self) -> str:
        info = self.sessions.info
        live = self.run.is_running()
        if self.waiting:
            who = f"<b>{Path(self.target).name}</b>" if self.target else "the new run"
            return f"Following the run being trained: waiting for {who}'s first checkpoint…"
        if not self.target:
            return "No run yet: start training (Setup tab) or open a run (Ctrl+R)."
        name = Path(self.target).name
        shown = info is not None and _same(info.get("run_dir", ""), self.target)
        step = f"checkpoint at step {info['step']:,}" if shown else "loading its checkpoint…"
        if self.pinned:
            trains = (
                f" (training <b>{self.run.name}</b> goes on without it)"
                if live and self.run.name and not _same(self.run.run_dir, self.target)
                else ""
            )
            return f"Pinned to <b>{name}</b> · {step}{trains}"
        if live and _same(self.run.run_dir, self.target):
            return f"Following the run being trained: <b>{name}</b> · {step}"
        return f"Showing <b>{name}</b> · {step} · a new training run will replace it here (pin to keep it)"


class RunHeader(QWidget):
    """The line on top of Generate and Inspect: which run, which step, followed or pinned."""

    def __init__(self, follower: RunFollower, parent: QWidget | None = None):
        super().__init__(parent)
        self.follower = follower
        self.label = QLabel()
        self.label.setObjectName("runHeader")
        self.label.setWordWrap(True)
        self.button = QPushButton()
        self.button.setObjectName("runHeaderPin")
        self.button.clicked.connect(self._toggle)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.button)
        follower.changed.connect(self.update_text)
        self.update_text()

    def update_text(self) -> None:
        f = self.follower
        self.label.setText(f.describe())
        self.button.setText("Follow the run being trained" if f.pinned else "Pin this run")
        self.button.setToolTip(
            "Show the run being trained, switching to each new run"
            if f.pinned
            else "Keep showing this run when another run trains"
        )
        self.button.setEnabled(bool(f.pinned) or (bool(f.target) and not f.waiting))

    def _toggle(self) -> None:
        if self.follower.pinned:
            self.follower.follow_live()
        else:
            self.follower.pin()
