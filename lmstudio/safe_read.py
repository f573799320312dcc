"""Reading files a user (or another program) may have damaged, defensively: bounded in size and depth.

Everything read from a run folder goes through here, because a run folder is a plain folder anyone can
edit or copy into: a ``config.json`` nested 100,000 deep (``RecursionError``), a 5,000-digit number
(``ValueError``), a FIFO (``open`` blocks for ever), a link to ``/dev/zero`` (``read`` never ends), a
torn UTF-8 character at the end of a history file. Each is refused with a ``FileRefused`` naming the file
and what is wrong, before anything big is allocated. No torch, no Qt: the UI lists runs with it too.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmstudio.errors import UserError

MAX_CONFIG_BYTES = 4 << 20  # config.json is ~1 KB; a preset a few KB
MAX_CONFIG_DEPTH = 8  # a run config nests 2 levels (sections of fields)
MAX_TOKENIZER_BYTES = 256 << 20  # a word vocabulary of a large corpus is tens of MB
MAX_TOKENIZER_DEPTH = 32  # HF tokenizer.json: normalizer/pre-tokenizer sequences nest a few levels
MAX_LINE_BYTES = 1 << 20  # one history record (a sample's text is a few KB)
MAX_LINE_DEPTH = 8

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


class FileRefused(UserError):
    """A file is not what it claims to be: not a regular file, too big, nested too deep, or not UTF-8/JSON."""


def open_regular(path: str | os.PathLike, limit: int) -> tuple[int, int]:
    """Open ``path`` for reading, refusing anything but a regular file of at most ``limit`` bytes;
    returns ``(fd, size)``. A FIFO opens without blocking (``O_NONBLOCK``) and is refused by its type."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileRefused(f"{path} is {_kind(info.st_mode)}, not a regular file")
        if info.st_size > limit:
            raise FileRefused(
                f"{path} is {info.st_size:,} bytes, more than the {limit:,} such a file can be; "
                "it is not a file lmstudio wrote"
            )
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, info.st_size


def read_bytes(path: str | os.PathLike, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (FileRefused otherwise; OSError if unreadable)."""
    fd, _ = open_regular(path, limit)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:  # it grew while being read
        raise FileRefused(f"{path} is more than {limit:,} bytes; it is not a file lmstudio wrote")
    return data


def read_text(path: str | os.PathLike, limit: int) -> str:
    """A regular file's UTF-8 text (FileRefused when it is not UTF-8)."""
    data = read_bytes(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FileRefused(f"{path} is not UTF-8 text (byte {e.start}: {e.reason})") from None


def json_depth(text: str) -> int:
    """How deeply ``text``'s arrays and objects nest (strings skipped), without parsing it."""
    depth = deepest = 0
    for bracket in _BRACKET.finditer(_STRING.sub("", text)):
        if bracket.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def loads_json(text: str, max_depth: int, where: str) -> Any:
    """``json.loads`` with a depth limit; any failure (bad syntax, a number with thousands of digits)
    becomes FileRefused naming ``where``."""
    if json_depth(text) > max_depth:
        raise FileRefused(
            f"{where} is nested more than {max_depth} levels deep; it is not a file lmstudio wrote"
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise FileRefused(f"{where} is not valid JSON ({e.msg} at line {e.lineno})") from None
    except (ValueError, RecursionError) as e:  # e.g. "Exceeds the limit (4300 digits) for integer string"
        raise FileRefused(f"{where} cannot be read as JSON ({str(e)[:120]})") from None


def read_json(path: str | Path, limit: int, max_depth: int) -> Any:
    return loads_json(read_text(path, limit), max_depth, str(path))


def jsonl_records(path: str | Path) -> Iterator[dict[str, Any] | None]:
    """Each line of a JSON-lines file as a dict, or None for a line that is damaged (torn or invalid UTF-8,
    not JSON, not an object, too long or too deep). A missing file has no lines."""
    try:
        fd, _ = open_regular(path, 1 << 40)
    except FileNotFoundError:
        return
    with os.fdopen(fd, "rb") as f:
        while True:
            raw = f.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # skip the rest of an endless line
                    raw = f.readline(MAX_LINE_BYTES)
                yield None
                continue
            line = raw.strip()
            if not line:
                continue
            try:
                record = loads_json(line.decode("utf-8"), MAX_LINE_DEPTH, str(path))
            except (UnicodeDecodeError, FileRefused):
                yield None
                continue
            yield record if isinstance(record, dict) else None


def whole_number(value: Any) -> int | None:
    """``value`` as an int when it is one (or a float holding one), else None: never raises for text,
    lists, ``true`` or a non-finite float."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"
