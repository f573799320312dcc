"""Chinese word segmentation for the word tokenizer: jieba, offline, quiet and deterministic.

Chinese has no spaces, so "a word" needs a segmenter. We use jieba (its dictionary ships inside the
package; nothing is downloaded) in its dictionary mode (``HMM=False``): a word is a dictionary word or a
single character, never a guess of the hidden Markov model, so the same text always splits the same way
and no made-up "words" enter the vocabulary.

jieba's dictionary is in simplified characters. A run of traditional characters (the built-in Tang
corpora) is segmented through its simplified view (OpenCC ``t2s``, character for character when the
lengths agree) and the word boundaries are applied to the original text, so 明月 and 長安 are found in
either script; the tokens keep the text's own characters.

jieba builds a prefix dictionary on first use (a few seconds) and caches it as a file; the cache goes
into lmstudio's data cache folder (``LMSTUDIO_CACHE`` or ``~/.lmstudio/cache``), never a shared temp
folder. If that folder cannot be written, jieba works without a cache, only slower to start.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from functools import cache

# Han ideographs (the blocks \p{Han} covers in practice) and the ideographic iteration marks
HAN = (
    "\u2e80-\u2fdf\u3005\u3007\u3021-\u3029\u3038-\u303b\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\U00020000-\U0003134f"
)
_HAN_RUN = re.compile(f"[{HAN}]+")
_lock = threading.Lock()


def has_han(text: str) -> bool:
    return _HAN_RUN.search(text) is not None


def is_han_run(text: str) -> bool:
    return _HAN_RUN.fullmatch(text) is not None


@cache
def _jieba():
    import jieba

    from lmstudio.runfolder import default_cache_dir

    jieba.setLogLevel(logging.CRITICAL)  # no "Building prefix dict" chatter on stderr
    tok = jieba.Tokenizer()
    folder = default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tok.cache_file = str(folder / "jieba.cache")
    except OSError:
        tok.tmp_dir = None  # jieba then tries the temp folder; failing that it runs uncached
    with _lock:
        tok.initialize()
    return tok


@cache
def _t2s():
    import opencc

    return opencc.OpenCC("t2s")


def _cuts(text: str) -> set[int]:
    """Positions where jieba ends a word in ``text`` (segmenting its simplified view when the
    conversion keeps every character in place)."""
    view = _t2s().convert(text)
    if len(view) != len(text):  # a phrase conversion changed the length: segment the text as it is
        view = text
    cuts, pos = set(), 0
    for word in _jieba().cut(view, HMM=False):
        pos += len(word)
        cuts.add(pos)
    return cuts


def segment_han(run: str) -> list[str]:
    """A run of Han characters split into words (concatenating back to ``run``)."""
    return list(pieces(run))


def pieces(text: str) -> Iterator[str]:
    """``text`` cut into pieces for the word tokenizer: each Chinese word on its own, the text between
    Han runs as it is (the tokenizer's own pattern splits it further). The pieces concatenate to ``text``.

    jieba segments the whole text at once (much faster than run by run); its word ends inside a Han
    run are where the run is cut.
    """
    runs = list(_HAN_RUN.finditer(text))
    if not runs:
        if text:
            yield text
        return
    cuts = _cuts(text)
    pos = 0
    for m in runs:
        if m.start() > pos:
            yield text[pos : m.start()]
        start = m.start()
        for i in range(m.start() + 1, m.end()):
            if i in cuts:
                yield text[start:i]
                start = i
        yield text[start : m.end()]
        pos = m.end()
    if pos < len(text):
        yield text[pos:]
