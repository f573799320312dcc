"""Shared test setup: offscreen Qt, isolated settings and folders, and no QThread left running.

* ``QT_QPA_PLATFORM=offscreen`` unless the caller chose a platform (set before Qt is imported).
* ``$LMSTUDIO_RUNS`` / ``$LMSTUDIO_CACHE`` point into the test's tmp dir, so no test touches ~/.lmstudio.
* QSettings (INI) live in the test's tmp dir under a test organisation name, never in the user's.
* An autouse fixture fails any test that leaves a QThread running (napari's approach: wrap
  ``QThread.start`` to remember every started thread, check ``isRunning()`` at teardown).
"""

from __future__ import annotations

import os
import sys
import traceback
import weakref

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One intra-op thread for the whole suite: its models are tiny and gain nothing from a second thread,
    and on a busy 2-core machine two OpenMP threads spinning at barriers were measured up to 25x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _collect_garbage_on_the_gui_thread():
    """Widgets a test dropped are finalized here, on the main thread, not later by a collection that
    happens to run on some worker thread (PySide deadlocks when Qt objects die off their thread)."""
    yield
    import gc

    gc.collect()


@pytest.fixture(autouse=True)
def _isolated_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("LMSTUDIO_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("LMSTUDIO_CACHE", str(tmp_path / "cache"))


def _qt_loaded() -> bool:
    return "PySide6.QtCore" in sys.modules


@pytest.fixture(autouse=True)
def _isolated_qsettings(tmp_path):
    """Every QSettings the code opens (INI, user scope) lands in this test's tmp dir."""
    if not _qt_loaded():
        yield
        return
    from PySide6.QtCore import QCoreApplication, QSettings

    folder = str(tmp_path / "qsettings")
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, folder)
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QCoreApplication.setOrganizationName("lmstudio-tests")
    yield


@pytest.fixture(autouse=True)
def _no_dangling_qthreads(monkeypatch):
    """Fail the test if a QThread it started is still running when it ends."""
    if not _qt_loaded():
        yield
        return
    from PySide6.QtCore import QThread

    started: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
    original = QThread.start

    def recording_start(self, *args, **kwargs):
        started[self] = "".join(traceback.format_stack(limit=8)[:-1])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(QThread, "start", recording_start)
    yield
    dangling = []
    for thread, where in list(started.items()):
        try:
            running = thread.isRunning()
        except RuntimeError:  # the C++ object is gone, so the thread is too
            continue
        if running:
            dangling.append((thread, where))
    for thread, _ in dangling:  # stop them so the next test (and interpreter exit) does not abort
        thread.quit()
        thread.wait(10_000)
    if dangling:
        details = "\n\n".join(f"{t.objectName() or t!r} started at:\n{where}" for t, where in dangling)
        pytest.fail(f"{len(dangling)} QThread(s) still running at the end of the test:\n{details}")
