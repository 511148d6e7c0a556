"""Where sentences end, in Latin and CJK text: one rule for every unit that needs sentences
(``pairs``, ``sentences``, ``halves``) and for the tokens that end one (denoise's permutation).

``corpus.sentence_split`` names the rule (:data:`RULES`) or is a regular expression of its own.
Each match of the rule ends a sentence; what it matched stays with the sentence it ends, and the
whitespace around a sentence is dropped. The named rules:

- ``latin``: after ``.``, ``!`` or ``?`` followed by whitespace (``"Hi. Bye."``), as before CJK
  support; a mark inside a word or number (``3.14``, ``e.g.x``) is no break;
- ``cjk``: after a run of ``。！？；｡`` (and the full-width ``．`` unless a digit follows) or
  after a Chinese ellipsis ``……``, with or without a space after it; a closing quote or bracket
  right after the mark (``。」``, ``！”``, ``？）``) stays with its sentence;
- ``auto`` (the default): both, for Chinese, Japanese, English and text that mixes them.

A piece between two breaks that has no letter is no sentence: a list number (``3.``) opens the
sentence after it, stray punctuation closes the sentence before it.

This module imports nothing heavy: the config validates a rule with it before Ray starts.
"""
from __future__ import annotations

import functools
import re

CJK_MARKS = "。！？；｡"
"""Marks that end a CJK sentence wherever they stand (the full-width ``．`` and ``……`` too, with care)."""
LATIN_MARKS = ".!?"
CLOSERS = "」』”’）》〉】〕〗〙〛｣)]}"
"""Closing quotes and brackets that stay with the sentence whose mark they follow (and a straight
quote ``"`` or ``'``, unless a Latin letter or digit follows it: then it opens the next one)."""

_CLOSE = rf"(?:[{re.escape(CLOSERS)}]|[\"'](?![A-Za-z0-9%$]))*"
_CJK = rf"(?:[{CJK_MARKS}]|．(?![0-9０-９])|…{{2,}})+{_CLOSE}\s*"
_LATIN = rf"(?<=[{re.escape(LATIN_MARKS)}])\s+"
RULES = {"auto": f"{_LATIN}|{_CJK}", "latin": _LATIN, "cjk": _CJK}
"""The named rules of ``corpus.sentence_split``, as regular expressions (see the module's docstring)."""

_END_TOKEN = re.compile(rf"(?:[{re.escape(LATIN_MARKS + CJK_MARKS)}．]|…)+[{re.escape(CLOSERS)}\"']*")


def check_rule(rule: str) -> str | None:
    """Why ``rule`` is no sentence rule (neither a name in :data:`RULES` nor a usable regular
    expression), or None when it is one."""
    if rule in RULES:
        return None
    try:
        compiled = re.compile(rule)
    except re.error as e:
        return f"not a regular expression ({e})"
    if compiled.fullmatch(""):
        return "it matches the empty string, so it would end a sentence after every character"
    return None


@functools.lru_cache(maxsize=16)
def pattern(rule: str) -> re.Pattern:
    """The compiled regular expression of a rule (a name in :data:`RULES`, or a regex itself)."""
    return re.compile(RULES.get(rule, rule))


def split_sentences(text: str, rule: str = "auto") -> list[str]:
    """``text``'s sentences by ``rule`` (``corpus.sentence_split``), stripped. A piece without a
    letter is no sentence of its own: a list number (``3.``, ``(2)``) opens the sentence after it,
    and stray punctuation (``；``, ``。``) closes the one before it (or opens the first)."""
    spans, begin = [], 0
    for end in [m.end() for m in pattern(rule).finditer(text)] + [len(text)]:
        piece = text[begin:end]
        if any(c.isalpha() for c in piece) or (end == len(text) and not spans):
            spans.append([begin, end])
            begin = end
        elif spans and not any(c.isdigit() for c in piece):
            spans[-1][1] = begin = end
    if begin < len(text) and text[begin:].strip():  # a list number or mark at the very end
        spans[-1][1] = len(text)
    return [s for s in (text[b:e].strip() for b, e in spans) if s]


def ends_sentence(piece: str) -> bool:
    """Whether a token's text (``piece``, its word-boundary marks and spaces stripped) is
    sentence-ending punctuation: a run of Latin or CJK end marks, with closing quotes or brackets
    after it (``.``, ``?!``, ``。``, ``！”``, ``……``). A comma or a word is not."""
    return _END_TOKEN.fullmatch(piece.strip()) is not None
