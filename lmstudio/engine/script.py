"""Simplified and traditional Chinese: converting corpora, and fitting prompts to a run's characters.

A corpus can be trained as it is or converted to simplified or traditional characters
(``tokenizer.script``, applied to the text before it is tokenized, like a normaliser). Conversion uses
OpenCC's data (shipped in the ``opencc`` wheel, offline): ``t2s`` and ``s2t``, phrase-aware.

A prompt or an inspector text typed in the other script would be mostly unknown to the model (the
built-in Tang corpora have 牀, not 床). :func:`fit_text` converts it to the run's script: the script the
run was trained in (its ``tokenizer.script``, or, for ``as-is``, the one its characters show), then
replaces any character still unknown to the run by a variant the run knows (OpenCC's Taiwan, Hong Kong
and Japanese tables), and says what it changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

SCRIPTS = ("as-is", "simplified", "traditional")
_TO = {"simplified": "t2s", "traditional": "s2t"}
# where a character the run does not know may have a known variant
_VARIANTS = ("s2t", "t2s", "s2hk", "s2tw", "tw2t", "hk2t", "t2tw", "t2hk", "jp2t", "t2jp")
CORPUS_SAMPLE_CHARS = 4 << 20  # for a BPE run, the characters it knows are read from this much corpus


@cache
def _converter(config: str):
    import opencc

    return opencc.OpenCC(config)


def convert(text: str, script: str) -> str:
    """``text`` in ``script`` ("simplified" or "traditional"); unchanged for "as-is"."""
    if script not in _TO or not text:
        return text
    try:
        return _converter(_TO[script]).convert(text)
    except UnicodeEncodeError:  # lone surrogates cannot reach OpenCC: convert around them, keep them
        import re

        return "".join(
            p if re.fullmatch("[\ud800-\udfff]+", p) else _converter(_TO[script]).convert(p)
            for p in re.split("([\ud800-\udfff]+)", text)
            if p
        )


def _is_han(c: str) -> bool:
    from lmstudio.engine.segment import is_han_run

    return is_han_run(c)


def script_of(chars) -> str:
    """ "traditional", "simplified" or "as-is" (mixed or no Chinese) for a set of characters: the
    script whose characters are more than twice as many as the other's."""
    han = "".join(c for c in chars if _is_han(c))
    if not han:
        return "as-is"
    trad = sum(a != b for a, b in zip(han, _converter("t2s").convert(han), strict=False))
    simp = sum(a != b for a, b in zip(han, _converter("s2t").convert(han), strict=False))
    if trad > 2 * simp:
        return "traditional"
    if simp > 2 * trad:
        return "simplified"
    return "as-is"


@dataclass(frozen=True)
class Fitted:
    text: str
    changes: list[tuple[str, str]] = field(default_factory=list)  # (typed, used), each pair once
    script: str = "as-is"  # the run's script the text was converted to

    @property
    def note(self) -> str:
        if not self.changes:
            return ""
        shown = ", ".join(f"{a}→{b}" for a, b in self.changes[:12])
        more = f" and {len(self.changes) - 12} more" if len(self.changes) > 12 else ""
        to = f"{self.script} " if self.script != "as-is" else ""
        return f"Converted to the run's {to}characters: {shown}{more}."


def fit_text(text: str, script: str, known: set[str] | frozenset[str] | None) -> Fitted:
    """``text`` converted to ``script``, then each Han character ``known`` lacks replaced by a variant it
    has (when there is one)."""
    out = convert(text, script)
    if len(out) != len(text):  # a phrase conversion changed the length: keep it, report it whole
        changes = [(text, out)]
        text_chars = list(out)
    else:
        # never change a character the run knows (a traditional text may use 后 as well as 後)
        text_chars = [a if known and a in known else b for a, b in zip(text, out, strict=True)]
        changes = [(a, b) for a, b in zip(text, text_chars, strict=True) if a != b]
    if known:
        for i, c in enumerate(text_chars):
            if c in known or not _is_han(c):
                continue
            for config in _VARIANTS:
                v = _converter(config).convert(c)
                if len(v) == 1 and v in known:
                    changes.append((c, v))
                    text_chars[i] = v
                    break
    seen, unique = set(), []
    for pair in changes:
        if pair not in seen:
            seen.add(pair)
            unique.append(pair)
    return Fitted("".join(text_chars), unique, script)


def known_characters(tokenizer, config) -> frozenset[str]:
    """The characters a run knows: its vocabulary's (char and word), or, for byte-level BPE, which has
    no character vocabulary, those of the first ``CORPUS_SAMPLE_CHARS`` of its (converted) corpus."""
    if getattr(tokenizer, "kind", "bpe") != "bpe":
        unk = tokenizer.unk_id
        return frozenset(c for i in range(tokenizer.vocab_size) if i != unk for c in tokenizer.decode([i]))
    if config is None:  # a model with no run behind it (built in memory): no corpus to learn characters from
        return frozenset()
    from lmstudio.engine.corpus import iter_corpus_chunks

    chars: set[str] = set()
    seen = 0
    try:
        for chunk in iter_corpus_chunks(config.corpus.source):
            chars.update(convert(chunk, getattr(config.tokenizer, "script", "as-is")))
            seen += len(chunk)
            if seen >= CORPUS_SAMPLE_CHARS:
                break
    except Exception:  # noqa: BLE001 - the corpus moved or is gone: fit to nothing, never fail a prompt
        return frozenset()
    return frozenset(chars)


def fit_for_session(session, text: str) -> Fitted:
    """``text`` fitted to the run of ``session`` (the known characters are worked out once per session)."""
    known = getattr(session, "_known_chars", None)
    if known is None:
        known = known_characters(session.tokenizer, session.config)
        try:
            session._known_chars = known
        except AttributeError:
            pass
    script = getattr(getattr(session.config, "tokenizer", None), "script", "as-is")
    if script == "as-is":
        script = getattr(session, "_run_script", None) or script_of(known)
        try:
            session._run_script = script
        except AttributeError:
            pass
    return fit_text(text, script, known)
