"""Renaming and deleting run folders, for the Runs table; torch-free and careful.

A run's name is its folder's name (unique in the runs folder), so renaming moves the folder within the
runs folder and writes the new name into its ``config.json``. Deleting removes one run folder and
nothing else: it refuses anything that is not a run folder directly inside the runs folder (a symlink,
the runs folder itself, a folder outside it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from lmstudio.errors import UserError
from lmstudio.runfolder import CONFIG_FILE

_NAME = re.compile(r"^[\w][\w.-]*$")


class RunFileError(UserError):
    """A run cannot be renamed or deleted as asked; the message says why."""


def _run_folder(run_dir: str | Path, root: str | Path) -> Path:
    path, root = Path(run_dir), Path(root).resolve()
    if path.is_symlink() or path.resolve().parent != root or not (path / CONFIG_FILE).is_file():
        raise RunFileError(f"{path} is not a run folder inside the runs folder {root}; nothing was changed")
    return path.resolve()


def rename_run(run_dir: str | Path, new_name: str, root: str | Path) -> Path:
    """Give a run a new (unique) name; returns its new folder."""
    path = _run_folder(run_dir, root)
    name = new_name.strip()
    if not _NAME.match(name) or len(name) > 120:
        raise RunFileError(
            f"{new_name!r} cannot be a run name: use letters, digits, '-', '_' and '.' (no spaces or '/'), "
            "starting with a letter or digit"
        )
    target = path.parent / name
    if target.exists() and target != path:
        raise RunFileError(f"a run named {name!r} exists already; choose another name")
    if target == path:
        return path
    os.rename(path, target)
    cfg_path = target / CONFIG_FILE
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        if isinstance(cfg, dict):
            cfg["name"] = name
            tmp = cfg_path.with_name(f".{CONFIG_FILE}.rename.tmp")
            tmp.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            os.replace(tmp, cfg_path)
    except (OSError, ValueError):
        pass  # the folder's name is the run's name; config.json's copy is a courtesy
    return target


def delete_run(run_dir: str | Path, root: str | Path) -> None:
    """Delete one run folder (weights, history, everything in it)."""
    shutil.rmtree(_run_folder(run_dir, root))
