"""The app entry point and the house rule that the UI never imports torch or tokenizers."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmstudio.ui.app import NO_DISPLAY_MESSAGE, has_display

UI = Path(__file__).resolve().parents[2] / "lmstudio" / "ui"
FORBIDDEN = {"torch", "tokenizers", "safetensors"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_no_ui_file_imports_torch_or_tokenizers():
    files = sorted(UI.rglob("*.py"))
    assert len(files) > 10
    offenders = {str(p.relative_to(UI)): sorted(imported_roots(p) & FORBIDDEN) for p in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_opening_the_main_window_module_does_not_load_torch():
    code = (
        "import sys; import lmstudio.ui.main_window, lmstudio.ui.app; "
        "print(sorted(m for m in ('torch', 'tokenizers') if m in sys.modules))"
    )
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "env, platform, expected",
    [
        ({}, "linux", False),
        ({"DISPLAY": ":0"}, "linux", True),
        ({"WAYLAND_DISPLAY": "wayland-0"}, "linux", True),
        ({"QT_QPA_PLATFORM": "offscreen"}, "linux", True),
        ({}, "win32", True),
        ({}, "darwin", True),
    ],
)
def test_display_detection(env, platform, expected):
    assert has_display(env, platform) is expected


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the no-display abort is a Linux matter")
def test_lmstudio_without_a_display_explains_and_exits_1():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    out = subprocess.run(
        [sys.executable, "-m", "lmstudio"], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 1
    assert out.stderr.strip() == NO_DISPLAY_MESSAGE
    assert "Fatal" not in out.stderr and "Aborted" not in out.stderr
