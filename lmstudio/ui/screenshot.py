"""A real-window check: run the app under a display (Xvfb when there is none), drive it, save screenshots.

    python -m lmstudio.ui.screenshot docs/screenshots            # setup, training, runs overlay
    python -m lmstudio.ui.screenshot /tmp/shots --steps 0        # no training: setup pages only (the test)
    python -m lmstudio.ui.screenshot docs/screenshots --views --steps 300   # Generate and Inspect views
    python -m lmstudio.ui.screenshot docs/screenshots --chinese --steps 400 # BPE on the Tang poems

Without DISPLAY it starts ``Xvfb`` itself (apt-get install xvfb libxcb-icccm4 libxcb-keysyms1
libxcb-cursor0) and re-runs under it with the real ``xcb`` platform, so the window is mapped by an X
server and grabbed from the screen (``QScreen.grabWindow``), not rendered offscreen. It trains an LSTM
and a Transformer on the 300 Tang Poems into a temporary runs folder, so it never touches ~/.lmstudio;
the Transformer trains half its steps, then *Continue training* takes it the rest of the way, so the
Training screenshot shows a resumed run's whole curve.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHOTS = ("setup", "tokenizer", "training", "runs")


def _run_under_xvfb(argv: list[str]) -> int:
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        print("screenshot: no display and no Xvfb on PATH (apt-get install xvfb)", file=sys.stderr)
        return 2
    for display in range(90, 110):
        if not Path(f"/tmp/.X11-unix/X{display}").exists() and not Path(f"/tmp/.X{display}-lock").exists():
            break
    server = subprocess.Popen(
        [xvfb, f":{display}", "-screen", "0", "1400x900x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):  # wait for the server's socket instead of a fixed sleep
            if Path(f"/tmp/.X11-unix/X{display}").exists():
                break
            if server.poll() is not None:
                print("screenshot: Xvfb did not start", file=sys.stderr)
                return 2
            time.sleep(0.05)
        env = {**os.environ, "DISPLAY": f":{display}", "QT_QPA_PLATFORM": "xcb"}
        return subprocess.call([sys.executable, "-m", "lmstudio.ui.screenshot", *argv], env=env)
    finally:
        server.terminate()
        server.wait(10)


def _shoot(out: Path, steps: int, views: bool = False, chinese: bool = False) -> int:
    from PySide6.QtCore import QCoreApplication, QEventLoop, QSettings, QTimer

    from lmstudio import config
    from lmstudio.ui.app import make_application

    tmp = Path(tempfile.mkdtemp(prefix="lmstudio-shots-"))
    os.environ["LMSTUDIO_RUNS"] = str(tmp / "runs")
    os.environ.setdefault("LMSTUDIO_CACHE", str(tmp / "cache"))
    app = make_application()
    QCoreApplication.setOrganizationName("lmstudio-screenshot")
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp / "settings"))
    from lmstudio.ui.main_window import TAB_RUNS, MainWindow

    win = MainWindow()
    win.resize(1360, 860)
    win.show()

    def wait(predicate, timeout: float = 300.0) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > end:
                raise TimeoutError("the window did not get there in time")
            app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)

    def settle(ms: int = 400) -> None:
        done = []
        QTimer.singleShot(ms, lambda: done.append(True))
        wait(lambda: bool(done))

    def grab(name: str) -> None:
        settle()
        screen = win.screen()
        pixmap = (
            screen.grabWindow(win.winId()) if os.environ.get("QT_QPA_PLATFORM") != "offscreen" else win.grab()
        )
        if pixmap.isNull():
            pixmap = win.grab()
        path = out / f"{name}.png"
        pixmap.save(str(path))
        print(f"saved {path} ({pixmap.width()}x{pixmap.height()})")

    out.mkdir(parents=True, exist_ok=True)
    wait(lambda: win.isExposed() if hasattr(win, "isExposed") else win.windowHandle().isExposed())
    if chinese:  # Generate with byte-level BPE on the Tang poems (lmstudio/ui/screenshot_chinese.py)
        from lmstudio.ui.screenshot_chinese import shoot_chinese

        wait(lambda: win.setup.corpus.builtins.count() > 0 and not win.setup.corpus.is_busy())
        wait(lambda: not win.device_label.text().startswith("Device: detecting"))
        shoot_chinese(win, wait, settle, grab, max(steps, 1))
        win.close()
        wait(lambda: not win.isVisible())
        shutil.rmtree(tmp, ignore_errors=True)
        return 0
    if views:  # the prediction views of a trained Transformer (shoot_views below)
        wait(lambda: win.setup.corpus.builtins.count() > 0 and not win.setup.corpus.is_busy())
        wait(lambda: not win.device_label.text().startswith("Device: detecting"))
        shoot_views(win, wait, settle, grab, max(steps, 1))
        win.close()
        wait(lambda: not win.isVisible())
        shutil.rmtree(tmp, ignore_errors=True)
        return 0
    base = config.RunConfig().override(
        [
            "corpus.source=tang300",
            "tokenizer.kind=char",
            "model.n_layer=1",
            "model.n_embd=64",
            "model.hidden_size=64",
            "model.n_head=2",
            "model.block_size=32",
            "train.batch_size=16",
            f"train.max_steps={steps}",
            f"train.eval_interval={max(steps // 6, 1)}",
            "train.eval_iters=4",
            "train.log_interval=2",
            "train.warmup_steps=10",
            "train.lr=3e-3",
            "train.min_lr=3e-4",
            f"train.sample_interval={max(steps // 3, 1)}",
            "train.sample_tokens=48",
        ]
    )
    win.setup.set_config(base.override(["name=tang-lstm", "model.arch=lstm"]))
    wait(lambda: win.setup.corpus.builtins.count() > 0 and not win.setup.corpus.is_busy())
    wait(lambda: not win.device_label.text().startswith("Device: detecting"))  # the engine has loaded
    win.setup.steps.setCurrentRow(0)
    try:  # the measured training-time estimate under the summary line
        wait(lambda: "training time here" in win.setup.time_label.text(), timeout=60)
    except TimeoutError:
        print("screenshot: no time estimate yet", file=sys.stderr)
    grab("setup")
    win.setup.steps.setCurrentRow(1)
    win.setup.tokenizer.build()
    wait(lambda: not win.setup.tokenizer.is_busy())
    win.setup.tokenizer.vocab.search.setText("月")
    grab("tokenizer")
    win.setup.tokenizer.vocab.search.clear()
    if steps <= 0:  # the quick check: no training, just the real window's setup pages
        win.close()
        wait(lambda: not win.isVisible())
        shutil.rmtree(tmp, ignore_errors=True)
        return 0
    runs = []
    for arch in ("lstm", "transformer"):
        half = [f"train.max_steps={max(steps // 2, 1)}"] if arch == "transformer" else []
        win.setup.set_config(base.override([f"name=tang-{arch}", f"model.arch={arch}", *half]))
        wait(lambda: not win.setup.corpus.is_busy())
        win.start_training()
        wait(lambda: win.training.is_running())
        wait(lambda: not win.training.is_running())
        runs.append(win.training.run_dir)
        print(f"trained {arch}: {win.training.state} in {win.training.run_dir}")
    # continue the Transformer (a finished run trains as many steps again): its whole curve, then more
    win.continue_run(runs[-1])
    wait(lambda: win.training.is_running())
    wait(lambda: not win.training.is_running())
    print(f"continued: {win.training.state} at step {win.run.step} in {win.training.run_dir}")
    win.training.log_box.setChecked(True)
    grab("training")
    win.tabs.setCurrentIndex(TAB_RUNS)
    for run_dir in runs:
        win.runs.set_checked(run_dir, True)
    win.runs.x_axis.setCurrentIndex(1)
    win.runs.select_run(runs[-1])
    grab("runs")
    win.close()
    wait(lambda: not win.isVisible())
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


# ---- --views: Generate and Inspect from a real run --------------------------------------------------
# A small character-level Transformer (3 layers, 64 wide, context 32) on tiny Shakespeare, trained in the
# window (a few minutes on two busy cores); then the Generate tab (temperature 0.7, top-k 5, a token
# clicked: both distributions) and the Inspect tab (the logit lens of a line of Hamlet, the embedding map
# with a token found), saved as generation.png, lens.png and embeddings.png.
VIEW_SHOTS = ("generation", "lens", "embeddings")

SHAKESPEARE = [
    "corpus.source=tiny_shakespeare",
    "tokenizer.kind=char",
    "model.arch=transformer",
    "model.n_layer=3",
    "model.n_head=4",
    "model.n_embd=64",
    "model.block_size=32",
    "train.batch_size=16",
    "train.eval_interval=100",
    "train.eval_iters=4",
    "train.log_interval=20",
    "train.warmup_steps=20",
    "train.lr=3e-3",
    "train.min_lr=3e-4",
    "train.sample_interval=0",
]


def shoot_views(win, wait, settle, grab, steps: int) -> list[str]:
    """Train, then drive Generate and Inspect; ``wait``/``settle``/``grab`` come from screenshot.py."""
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    from lmstudio import config
    from lmstudio.ui.main_window import TAB_GENERATE, TAB_INSPECT
    from lmstudio.ui.panes.inspector import EMBEDDINGS, LENS

    cfg = config.RunConfig(name="shakespeare-gpt").override(SHAKESPEARE + [f"train.max_steps={steps}"])
    win.setup.set_config(cfg)
    wait(lambda: not win.setup.corpus.is_busy())
    win.start_training()
    wait(lambda: win.training.is_running())
    wait(lambda: not win.training.is_running(), timeout=900)
    sessions = win.session_controller
    wait(lambda: sessions.info is not None and sessions.info.get("step", 0) >= steps and not sessions.busy)

    gen = win.generate_pane
    win.tabs.setCurrentIndex(TAB_GENERATE)
    gen.prompt.setPlainText("ROMEO:\n")
    gen.temperature.setValue(0.7)
    gen.top_k.setValue(5)
    gen.top_p.setValue(1.0)
    gen.max_tokens.setValue(220)
    gen.seed.setValue(7)
    done = []
    sessions.generation_finished.connect(done.append)
    gen.start_generation()
    wait(lambda: bool(done))
    # a token where the model hesitated: the chart then shows the filtering at work
    index = max(range(len(gen.steps)), key=lambda i: 1.0 - gen.steps[i]["prob"])
    QTest.mouseClick(
        gen.output.viewport(), Qt.MouseButton.LeftButton, pos=gen.output.token_rect_center(index)
    )
    wait(lambda: bool(gen.chart.labels))
    grab("generation")

    pane = win.inspect_pane
    win.tabs.setCurrentIndex(TAB_INSPECT)
    pane.view_combo.setCurrentText(LENS)
    pane.text.setPlainText("To be, or not to be, that is the question:")
    got = []
    sessions.lens_ready.connect(got.append)
    pane.inspect()
    wait(lambda: bool(got) and not sessions.busy)
    grab("lens")

    maps = []
    sessions.embeddings_ready.connect(maps.append)
    pane.view_combo.setCurrentText(EMBEDDINGS)
    wait(lambda: bool(maps) and not sessions.busy)
    pane.embedding_map.search.setText("e")
    settle()
    grab("embeddings")
    return list(VIEW_SHOTS)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m lmstudio.ui.screenshot", description=__doc__.split("\n")[0]
    )
    parser.add_argument("out", type=Path, help="folder for the PNG files")
    parser.add_argument(
        "--steps", type=int, default=150, help="training steps per run (default 150; 0: setup pages only)"
    )
    parser.add_argument(
        "--views",
        action="store_true",
        help="train a small Shakespeare Transformer and shoot the Generate and Inspect views instead",
    )
    parser.add_argument(
        "--chinese",
        action="store_true",
        help="train a small BPE Transformer on the Tang poems and shoot Chinese generation instead",
    )
    args = parser.parse_args(argv)
    from lmstudio.ui.app import has_display

    if not has_display() or (
        os.environ.get("QT_QPA_PLATFORM") in (None, "") and not os.environ.get("DISPLAY")
    ):
        return _run_under_xvfb(argv)
    return _shoot(args.out, args.steps, args.views, args.chinese)


if __name__ == "__main__":
    sys.exit(main())
