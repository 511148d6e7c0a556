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

This module imports nothing heavy: the config validates a rule with it before Ray starts.
"""
from __future__ import annotations

import functools
import re

CJK_MARKS = "。！？；｡"
"""Marks that end a CJK sentence wherever they stand (the full-width ``．`` and ``……`` too, with care)."""
LATIN_MARKS = ".!?"
CLOSERS = "」』”’）》〉】〕〗〙〛｣\"')]}"
"""Closing quotes and brackets that stay with the sentence whose mark they follow."""

_CJK = rf"(?:[{CJK_MARKS}]|．(?![0-9０-９])|…{{2,}})+[{re.escape(CLOSERS)}]*\s*"
_LATIN = rf"(?<=[{re.escape(LATIN_MARKS)}])\s+"
RULES = {"auto": f"{_LATIN}|{_CJK}", "latin": _LATIN, "cjk": _CJK}
"""The named rules of ``corpus.sentence_split``, as regular expressions (see the module's docstring)."""

_END_TOKEN = re.compile(rf"(?:[{re.escape(LATIN_MARKS + CJK_MARKS)}．]|…)+[{re.escape(CLOSERS)}]*")


def check_rule(rule: str) -> str | None:
    """Why ``rule`` is no sentence rule (neither a name in :data:`RULES` nor a usable regular
    expression), or None when it is one."""
    if rule in RULES:
        return None
    try:
        pattern = re.compile(rule)
    except re.error as e:
        return f"not a regular expression ({e})"
    if pattern.fullmatch(""):
        return "it matches the empty string, so it would end a sentence after every character"
    return None


@functools.lru_cache(maxsize=16)
def pattern(rule: str) -> re.Pattern:
    """The compiled regular expression of a rule (a name in :data:`RULES`, or a regex itself)."""
    return re.compile(RULES.get(rule, rule))


def split_sentences(text: str, rule: str = "auto") -> list[str]:
    """``text``'s sentences by ``rule`` (``corpus.sentence_split``), stripped, none empty."""
    sentences, start = [], 0
    for match in pattern(rule).finditer(text):
        if match.end() > start:
            sentences.append(text[start:match.end()].strip())
            start = match.end()
    sentences.append(text[start:].strip())
    return [s for s in sentences if s]


def ends_sentence(piece: str) -> bool:
    """Whether a token's text (``piece``, its word-boundary marks and spaces stripped) is
    sentence-ending punctuation: a run of Latin or CJK end marks, with closing quotes or brackets
    after it (``.``, ``?!``, ``。``, ``！”``, ``……``). A comma or a word is not."""
    return _END_TOKEN.fullmatch(piece.strip()) is not None
