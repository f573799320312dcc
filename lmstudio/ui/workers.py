"""Background work for the window: QObject workers moved to QThreads that report through signals.

Two rules from DESIGN.md shape this module:

* a lambda connected to a worker's signal runs in the worker's thread, so the window connects
  these signals to slots of objects that live in the GUI thread;
* the training worker's event loop is busy inside ``Trainer.run()``, so pause/stop/new-LR requests
  never travel as queued slots: the window calls the engine's thread-safe ``TrainControl`` directly.

Every thread started here is kept in ``live_threads()`` until it has finished, so the window can
wait for them on exit and tests can prove nothing was left running.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from PySide6.QtCore import QCoreApplication, QObject, Qt, QThread, Signal, Slot

from lmstudio.errors import UserError

_threads: dict[QThread, QObject] = {}
_reaper: _Reaper | None = None


class _Reaper(QObject):
    """Lives in the GUI thread; drops a finished thread (and its worker) only after ``wait()``.

    Dropping the last reference to a QThread that is still winding down aborts the process
    ("QThread: Destroyed while thread is still running"), so the drop happens here, in the GUI thread,
    after the thread has really ended.
    """

    @Slot()
    def reap(self) -> None:
        thread = self.sender()
        if isinstance(thread, QThread):
            thread.wait()
            _threads.pop(thread, None)


def live_threads() -> list[QThread]:
    """Threads started by ``start_worker`` that have not been reaped yet."""
    return [t for t in _threads if t.isRunning()]


def cancel_all() -> None:
    """Ask every running worker that can be cancelled to stop early."""
    for worker in list(_threads.values()):
        cancel = getattr(worker, "cancel", None)
        if callable(cancel):
            cancel()


def wait_all(timeout_ms: int = 30_000) -> bool:
    """Block until every worker thread has ended (used on exit); True when none is left running."""
    return all(t.wait(timeout_ms) for t in list(_threads))


def start_worker(worker: Worker) -> QThread:
    """Move ``worker`` to a new QThread and run ``worker.run`` there; call from the GUI thread.

    The thread quits when the worker emits ``finished``; the module keeps both alive until then, so a
    caller may drop its references. Connect the worker's signals to slots of GUI-thread objects.
    """
    global _reaper
    if _reaper is None:
        _reaper = _Reaper()
    thread = QThread()
    thread.setObjectName(type(worker).__name__)
    worker.moveToThread(thread)
    thread.started.connect(worker.run)
    # direct: QThread.quit is thread-safe, and a queued call would never run while the GUI thread
    # blocks in wait() on exit
    worker.finished.connect(thread.quit, Qt.ConnectionType.DirectConnection)
    thread.finished.connect(_reaper.reap)
    _threads[thread] = worker
    thread.start()
    return thread


class Worker(QObject):
    """Base of the workers: ``run`` calls ``work`` and always ends with ``finished``.

    Before ``finished`` the worker moves itself back to the GUI thread, so Python can delete it there
    once its thread has ended.
    """

    finished = Signal()

    def work(self) -> None:
        raise NotImplementedError

    @Slot()
    def run(self) -> None:
        try:
            self.work()
        finally:
            app = QCoreApplication.instance()
            if app is not None:
                self.moveToThread(app.thread())
            self.finished.emit()


def describe_error(exc: BaseException) -> str:
    """The message a person reads: a UserError's own text, anything else flagged as a bug."""
    if isinstance(exc, UserError):
        return str(exc)
    return (
        f"Unexpected error ({type(exc).__name__}: {exc}). This is a bug in lmstudio; "
        f"please report it with the details below.\n\n{''.join(traceback.format_exception(exc))}"
    )


class TaskWorker(Worker):
    """Runs ``fn(progress, cancel)`` off the GUI thread: corpus reading, tokenizer building, loading.

    ``progress`` is a callable taking a fraction 0..1 (emitted as ``progress``, throttled to 1% steps);
    ``cancel`` is a ``threading.Event`` set by ``cancel()``. The result (plain data) arrives in ``done``;
    any exception arrives as a readable message in ``failed``. ``finished`` always comes last.
    """

    progress = Signal(float)
    done = Signal(object)
    failed = Signal(str)

    def __init__(self, fn: Callable[[Callable[[float], None], threading.Event], Any]):
        super().__init__()
        self._fn = fn
        self._cancel = threading.Event()
        self._last = -1.0

    def cancel(self) -> None:
        self._cancel.set()

    def _progress(self, fraction: float) -> None:
        if fraction - self._last >= 0.01 or fraction >= 1.0:
            self._last = fraction
            self.progress.emit(float(fraction))

    def work(self) -> None:
        try:
            result = self._fn(self._progress, self._cancel)
        except Exception as exc:  # everything must reach the window as a message
            self.failed.emit(describe_error(exc))
        else:
            self.done.emit(result)


class TrainWorker(Worker):
    """Iterates the engine's event generator and re-emits every event (a frozen dataclass) as ``event``.

    ``make_events`` is called inside the worker thread so building the trainer (which imports torch and
    reads the corpus) never blocks the window. The generator turns training faults into ``Failed`` events;
    anything that still escapes is reported through ``crashed``.
    """

    event = Signal(object)
    crashed = Signal(str)

    def __init__(self, make_events: Callable[[], Iterable[Any]]):
        super().__init__()
        self._make_events = make_events

    def work(self) -> None:
        try:
            for ev in self._make_events():
                self.event.emit(ev)
        except Exception as exc:
            self.crashed.emit(describe_error(exc))
