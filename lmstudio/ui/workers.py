"""Background work for the window: QObject workers moved to QThreads that report through signals.

Two rules shape this module:

* a lambda connected to a worker's signal runs in the worker's thread, so the window connects
  these signals to slots of objects that live in the GUI thread;
* the training worker's event loop is busy inside ``Trainer.run()``, so pause/stop/new-LR requests
  never travel as queued slots: the window calls the engine's thread-safe ``TrainControl`` directly.

Two kinds of worker share one registry (``live_threads``, ``cancel_all``, ``wait_all``), so the window can
wait for every thread on exit and tests can prove nothing was left running:

* a task worker (``TaskWorker``, ``TrainWorker``) runs one job in its own thread, which ends with it;
* an ``EngineWorker`` is one long-lived thread that runs the calls submitted to it one at a time, in
  order (loading a run, generating, reading run folders): ``submit(fn, ...)`` gives a ``Job`` whose
  ``done`` / ``failed`` signals arrive on the GUI thread.
"""

from __future__ import annotations

import itertools
import queue
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


def live_threads(*, engines: bool = True) -> list[QThread]:
    """Threads started by ``start_worker`` that have not been reaped yet; ``engines=False`` leaves out the
    long-lived ``EngineWorker`` threads (they run until the window closes)."""
    return [t for t, w in _threads.items() if t.isRunning() and (engines or not isinstance(w, _JobLoop))]


def cancel_all() -> None:
    """Ask every running worker that can be cancelled to stop early."""
    for worker in list(_threads.values()):
        cancel = getattr(worker, "cancel", None)
        if callable(cancel):
            cancel()


def wait_all(timeout_ms: int = 30_000) -> bool:
    """Block until every worker thread has ended (used on exit); True when none is left running."""
    return all(t.wait(timeout_ms) for t in list(_threads))


def start_worker(worker: Worker, name: str = "") -> QThread:
    """Move ``worker`` to a new QThread and run ``worker.run`` there; call from the GUI thread.

    The thread quits when the worker emits ``finished``; the module keeps both alive until then, so a
    caller may drop its references. Connect the worker's signals to slots of GUI-thread objects.
    """
    global _reaper
    if _reaper is None:
        _reaper = _Reaper()
    thread = QThread()
    thread.setObjectName(name or type(worker).__name__)
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


class Job(QObject):
    """One call submitted to an ``EngineWorker``. Its signals arrive on the GUI thread, in this order:
    ``reported`` (any number of times, only for ``submit_reporting``), then ``done(result)`` or
    ``failed(message)`` (``describe_error``'s text), then ``finished``."""

    reported = Signal(object)
    done = Signal(object)
    failed = Signal(str)
    finished = Signal()


class _JobLoop(Worker):
    """The part of an ``EngineWorker`` that lives in its thread: takes calls off a queue until cancelled."""

    settled = Signal(int, bool, object)  # job id, ok, result or message
    reported = Signal(int, object)  # job id, value

    def __init__(self, cancel: threading.Event | None) -> None:
        super().__init__()
        # (job id, fn, args, kwargs, reporting) or None to stop; ids, never Job objects: the last reference
        # to a QObject must not die in this thread
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._cancel = cancel

    def put(self, call: tuple) -> None:
        self._calls.put(call)

    def cancel(self) -> None:
        """Run no further call (the one in progress finishes) and end the thread; thread-safe."""
        if self._cancel is not None:
            self._cancel.set()  # a call that checks it ends early
        self._stopping.set()
        self._calls.put(None)

    def work(self) -> None:
        while not self._stopping.is_set():
            call = self._calls.get()
            if call is None or self._stopping.is_set():
                break
            self._run(*call)
            del call  # nothing of a call outlives it in this thread

    def _run(self, job_id: int, fn: Callable[..., Any], args: tuple, kwargs: dict, reporting: bool) -> None:
        if reporting:
            args = (lambda value: self.reported.emit(job_id, value), *args)
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:  # everything must reach the window as a message
            self.settled.emit(job_id, False, describe_error(exc))
        else:
            self.settled.emit(job_id, True, result)


class EngineWorker(QObject):
    """One long-lived thread (Qt's worker pattern) that runs submitted calls one at a time, in order.

        worker = EngineWorker("lmstudio-files", parent=self)       # starts its thread; call from the GUI thread
        job = worker.submit(controller.scan_runs)                    # scan_runs() runs in the worker thread
        job.done.connect(self._show_runs)                            # its result, on the GUI thread
        job.failed.connect(self.error_shown)                         # describe_error's text, on the GUI thread

        def stream(report, prompt):                                  # submit_reporting passes a report callable
            for piece in pieces(prompt):
                report(piece)                                        # -> job.reported(piece), in order
            return "completed"
        worker.submit_reporting(stream, "Once").reported.connect(self._append)

        worker.shutdown()   # on close: no further call runs, the one in progress finishes, the thread ends
                            # (EngineWorker(name, cancel=event): shutdown sets the event first)

    Connecting right after ``submit`` is always in time: a Job's signals are emitted by the GUI thread's
    event loop, never during ``submit``. Any callable may be connected (a lambda too): it runs on the GUI
    thread. The thread is registered like every worker's, so ``cancel_all()`` + ``wait_all()`` end it too
    and the tests' dangling-thread check sees it. Calls must not touch widgets; they return plain data. A
    call submitted after ``shutdown`` never runs (its ``Job`` stays silent).
    """

    def __init__(self, name: str, parent: QObject | None = None, *, cancel: threading.Event | None = None):
        """``cancel``: set by ``shutdown`` (and ``cancel_all``) first, for long calls that check it."""
        super().__init__(parent)
        self._jobs: dict[int, Job] = {}
        self._ids = itertools.count()
        self._loop = _JobLoop(cancel)
        self._loop.settled.connect(self._on_settled)  # queued: this object lives in the GUI thread
        self._loop.reported.connect(self._on_reported)
        self._thread = start_worker(self._loop, name)
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Job:
        """Run ``fn(*args, **kwargs)`` in the worker thread after the calls already submitted."""
        return self._submit(fn, args, kwargs, reporting=False)

    def submit_reporting(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Job:
        """Like ``submit`` with ``fn(report, *args, **kwargs)``: each ``report(value)`` (from the worker
        thread) arrives as the job's ``reported(value)`` on the GUI thread, before its ``done``."""
        return self._submit(fn, args, kwargs, reporting=True)

    def _submit(self, fn: Callable[..., Any], args: tuple, kwargs: dict, reporting: bool) -> Job:
        job = Job(self)
        if self.is_running():
            job_id = next(self._ids)
            self._jobs[job_id] = job
            self._loop.put((job_id, fn, args, kwargs, reporting))
        return job

    def is_running(self) -> bool:
        return self._thread.isRunning() and not self._loop._stopping.is_set()

    def idle(self) -> bool:
        """No submitted call is waiting or running (as far as the GUI thread has heard)."""
        return not self._jobs

    @Slot(int, object)
    def _on_reported(self, job_id: int, value: object) -> None:
        job = self._jobs.get(job_id)
        if job is not None:
            job.reported.emit(value)

    @Slot(int, bool, object)
    def _on_settled(self, job_id: int, ok: bool, payload: object) -> None:
        job = self._jobs.pop(job_id, None)
        if job is None:
            return
        if ok:
            job.done.emit(payload)
        else:
            job.failed.emit(str(payload))
        job.finished.emit()
        job.deleteLater()

    @Slot()
    def shutdown(self) -> None:
        """Run no further call, let the one in progress finish, end the thread and wait (safe twice)."""
        self._loop.cancel()
        self._jobs.clear()
        self._thread.wait()
