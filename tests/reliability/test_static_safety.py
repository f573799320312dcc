"""Nothing the app opens is unpickled, fetched from the network or executed: a scan of lmstudio/'s source.

The rules, checked on the syntax tree (not by grep, so comments and strings do not count):
* every ``torch.load(...)`` passes ``weights_only=True`` literally;
* no module imports pickle, marshal, shelve, dill, urllib, requests, http, socket or subprocess;
* no ``eval``/``exec``/``compile``/``__import__`` builtin calls, no ``os.system``/``os.popen``;
* safetensors loading never goes through ``torch.load``; ``numpy.load`` never allows pickles.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "lmstudio"
FORBIDDEN_MODULES = {
    "pickle",
    "cPickle",
    "_pickle",
    "marshal",
    "shelve",
    "dill",
    "cloudpickle",
    "joblib",
    "urllib",
    "urllib2",
    "urllib3",
    "requests",
    "httpx",
    "http",
    "socket",
    "ftplib",
    "subprocess",
    "xmlrpc",
}
FORBIDDEN_BUILTINS = {"eval", "exec", "compile", "__import__"}
# the screenshot tool (``python -m lmstudio.ui.screenshot``, for developers) starts Xvfb with fixed
# arguments; the app never imports it (checked below)
# the multi-GPU child run starts our own CLI (``sys.executable -m lmstudio train``) with arguments built
# from the validated config, never a shell and never a user's command
ALLOWED = {
    "lmstudio/ui/screenshot.py": {"imports subprocess"},
    "lmstudio/engine/child_run.py": {"imports subprocess"},
}
FORBIDDEN_ATTRS = {("os", "system"), ("os", "popen"), ("os", "execv"), ("os", "execve"), ("os", "spawnv")}


def _sources() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20, "the scan found too few files: wrong folder?"
    return files


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return ""  # a method of some expression's result (e.g. ``dialog.exec()``), not a module function
    parts.append(node.id)
    return ".".join(reversed(parts))


def problems_in(source: str, name: str = "<src>") -> list[str]:
    """Every rule broken by one module's source (also used on planted snippets below)."""
    tree = ast.parse(source, filename=name)
    found = []
    torch_names = {"torch"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    found.append(f"{name}:{node.lineno} imports {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"{name}:{node.lineno} imports from {module}")
            if module == "torch" and any(a.name == "load" for a in node.names):
                found.append(f"{name}:{node.lineno} imports torch.load by name (its calls cannot be checked)")
        elif isinstance(node, ast.Call):
            func = _dotted(node.func)
            if func in FORBIDDEN_BUILTINS:
                found.append(f"{name}:{node.lineno} calls {func}()")
            if tuple(func.split(".")[-2:]) in FORBIDDEN_ATTRS:
                found.append(f"{name}:{node.lineno} calls {func}()")
            head, _, tail = func.rpartition(".")
            if tail == "load" and head in torch_names:
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                if not ok:
                    found.append(f"{name}:{node.lineno} calls torch.load without weights_only=True")
            if tail == "load" and head in ("np", "numpy"):
                kw = {k.arg: k.value for k in node.keywords}
                allow = kw.get("allow_pickle")
                if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                    found.append(f"{name}:{node.lineno} calls numpy.load with allow_pickle")
    return found


def test_the_package_never_unpickles_fetches_or_executes():
    found = []
    for path in _sources():
        name = str(path.relative_to(PACKAGE.parent))
        allowed = ALLOWED.get(name, set())
        found += [
            p
            for p in problems_in(path.read_text(encoding="utf-8"), name)
            if p.split(" ", 1)[1] not in allowed
        ]
    assert found == [], "\n".join(found)


def test_the_allowed_exceptions_are_never_imported_by_the_app():
    for path in _sources():
        if path.name.startswith("screenshot"):
            continue  # the tool's own modules may import each other; the app must not import any of them
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [f"{node.module}.{a.name}" for a in node.names]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any("screenshot" in n for n in names), f"{path.name} imports the screenshot tool"


def test_every_torch_load_in_the_package_is_seen_by_the_scan():
    """The scan must actually meet the torch.load calls it vouches for (checkpoint.load_train_state)."""
    calls = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and _dotted(node.func) == "torch.load":
                calls.append(path.name)
    assert "checkpoint.py" in calls


@pytest.mark.parametrize(
    "snippet",
    [
        "import torch\ntorch.load(p)",
        "import torch\ntorch.load(p, weights_only=False)",
        "import torch\ntorch.load(p, map_location='cpu', weights_only=flag)",
        "from torch import load\nload(p)",
        "import pickle",
        "from pickle import loads",
        "import urllib.request",
        "from http import client",
        "import socket",
        "import subprocess",
        "eval(text)",
        "exec(code)",
        "import os\nos.system('rm -rf /')",
        "import numpy as np\nnp.load(p, allow_pickle=True)",
    ],
)
def test_the_scan_catches_each_forbidden_pattern(snippet):
    assert problems_in(snippet), f"the scan missed: {snippet!r}"


def test_the_scan_accepts_the_safe_forms():
    assert (
        problems_in(
            "import torch\ntorch.load(p, map_location='cpu', weights_only=True)\n"
            "import numpy as np\nnp.load(p)\nnp.load(p, allow_pickle=False)\n"
            "x = 'import pickle'  # eval(x)\n"
        )
        == []
    )
