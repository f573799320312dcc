"""Find the bundled resources (corpora, presets, icons) from a source checkout or an installed wheel.

In a checkout they live in ``<repo>/resources``; the wheel maps that folder into the package as
``lmstudio/_resources`` (see pyproject.toml), so both layouts are tried in that order.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PKG = Path(__file__).resolve().parent


class ResourceError(LookupError):
    pass


@cache
def resources_dir() -> Path:
    for candidate in (_PKG.parent / "resources", _PKG / "_resources"):
        if (candidate / "corpora").is_dir():
            return candidate
    raise ResourceError("lmstudio's resources folder is missing; reinstall the package")


def presets_dir() -> Path:
    return resources_dir() / "presets"


def corpora_dir() -> Path:
    return resources_dir() / "corpora"


def list_presets() -> list[str]:
    return sorted(p.stem for p in presets_dir().glob("*.toml"))


def preset_path(name: str) -> Path:
    path = presets_dir() / f"{name}.toml"
    if not path.is_file():
        raise ResourceError(f"unknown preset {name!r}; choose one of: {', '.join(list_presets())}")
    return path
