"""The engine worker: calls run in its one thread, in order; results, reports and errors arrive on the GUI
thread; it is registered with the other workers and ends cleanly."""

from __future__ import annotations

import threading

from PySide6.QtCore import QThread

from lmstudio import config as C
from lmstudio.ui import workers
from lmstudio.ui.workers import EngineWorker


def _where() -> int:
    return threading.get_ident()


def test_submitted_calls_run_in_order_in_one_other_thread_and_answer_on_the_gui_thread(qtbot):
    worker = EngineWorker("test-engine")
    try:
        answers = []
        jobs = [worker.submit(lambda i=i: (i, _where())) for i in range(5)]
        for job in jobs:
            job.done.connect(lambda result: answers.append((result, _where(), QThread.currentThread())))
        with qtbot.waitSignal(jobs[-1].finished, timeout=10_000):
            pass
        assert [r[0][0] for r in answers] == [0, 1, 2, 3, 4]  # in the order submitted
        ran_in = {r[0][1] for r in answers}
        assert len(ran_in) == 1 and ran_in != {threading.get_ident()}  # one thread, not this one
        gui = QThread.currentThread()
        assert all(r[1] == threading.get_ident() and r[2] is gui for r in answers)  # delivered here
        assert worker.idle()
    finally:
        worker.shutdown()
    assert not worker.is_running()


def test_a_failure_arrives_as_the_usual_message_and_the_next_call_still_runs(qtbot, tmp_path):
    worker = EngineWorker("test-engine")
    try:
        failed, done = [], []
        bad_config = worker.submit(C.RunConfig.load, tmp_path / "missing.json")  # a UserError: its own text
        bug = worker.submit(int, "not a number")  # anything else: flagged as a bug, with the traceback
        good = worker.submit(int, "42")
        for job in (bad_config, bug):
            job.failed.connect(failed.append)
        good.done.connect(done.append)
        with qtbot.waitSignal(good.finished, timeout=10_000):
            pass
        assert failed[0].startswith("missing.json") and "cannot read" in failed[0]
        assert "Unexpected error (ValueError" in failed[1] and "This is a bug" in failed[1]
        assert "Traceback" in failed[1] and "Traceback" not in failed[0]
        assert done == [42]
    finally:
        worker.shutdown()


def test_reports_arrive_in_order_before_done(qtbot):
    worker = EngineWorker("test-engine")
    try:
        seen = []

        def count(report, n):
            for i in range(n):
                report(i)
            return "end"

        job = worker.submit_reporting(count, 50)
        job.reported.connect(seen.append)
        job.done.connect(seen.append)
        with qtbot.waitSignal(job.finished, timeout=10_000):
            pass
        assert seen == list(range(50)) + ["end"]
    finally:
        worker.shutdown()


def test_the_registry_sees_the_engine_thread_and_cancel_all_ends_it(qtbot):
    stop = threading.Event()
    worker = EngineWorker("test-engine", cancel=stop)
    started = threading.Event()
    ran = []

    def long_call():
        started.set()
        stop.wait(30)  # ends when shutdown sets the worker's cancel event
        return "stopped early"

    worker.submit(long_call)
    worker.submit(ran.append, "queued after")  # dropped: nothing runs after a shutdown
    assert started.wait(10)
    engine_threads = [t for t in workers.live_threads() if t.objectName() == "test-engine"]
    assert len(engine_threads) == 1
    assert engine_threads[0] not in workers.live_threads(engines=False)
    workers.cancel_all()
    assert workers.wait_all(10_000)
    assert stop.is_set() and not worker.is_running() and ran == []
    late = worker.submit(ran.append, "after shutdown")
    assert late is not None and ran == []
