"""The real-window check: the app under Xvfb (a real X server and the xcb platform), grabbed from the screen."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from PySide6.QtGui import QImage

from lmstudio.ui.screenshot import SHOTS

pytestmark = [
    pytest.mark.xvfb,
    pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb is not installed"),
]


def test_app_runs_in_a_real_window_and_screenshots_show_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    out = subprocess.run(
        [sys.executable, "-m", "lmstudio.ui.screenshot", str(tmp_path), "--steps", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "QThread: Destroyed" not in out.stderr
    for name in SHOTS[:2]:  # setup and tokenizer: the ones taken without training
        image = QImage(str(tmp_path / f"{name}.png"))
        assert not image.isNull() and image.width() >= 1000, name
        # a real grab has content: many distinct colours, not one flat (black) rectangle
        small = image.scaled(64, 40)
        colours = {small.pixel(x, y) for x in range(64) for y in range(40)}
        assert len(colours) > 20, name
