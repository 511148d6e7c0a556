"""Word segmenters (``tokenizer.word_segmenter``): which tokens continue a word, for whole-word masking.

Chinese has no spaces: a WordPiece tokenizer cuts it into one token per character and its ``##``
marks say nothing about words, so ``objective.whole_word`` alone masks single characters. A
segmenter (jieba, or any ``text -> list[str]`` callable: LTP, pkuseg …) cuts each document into
words once, in the Ray Data tokenize step of the preparation; each packed block then carries a
per-token column, :data:`COLUMN`, that says which tokens continue the word of the token before
them (BERT-wwm's and MacBERT's word boundaries, without Hugging Face's offline "ref files").
Pair and sentence rows carry one such column per segment (:func:`pair_column`), which sop, nsp or
simcse frame with the segments they build, so a mixture's mlm part masks whole words too. Rows
carry them only for objectives that mask words (``Objective.masks_words``).
"""
from __future__ import annotations

import functools
import importlib
import logging
import re
from collections.abc import Callable

import numpy as np

from sslab.errors import ConfigError

COLUMN = "continues_word"
"""The packed rows' boolean column, aligned to ``input_ids``: the token continues the segmenter's
word of the token before it. Present only when ``tokenizer.word_segmenter`` is set."""


def pair_column(side: str) -> str:
    """The column of segment ``side`` (``a`` or ``b``) of pair and sentence rows that holds its
    :data:`COLUMN`; the objective that frames the segments into ``input_ids`` frames these into it."""
    return f"{side}_{COLUMN}"


NAMED = {"jieba": ("jieba", "lcut")}
"""Segmenters known by name: (module, function). jieba comes with ``pip install 'sslab[zh]'``."""
IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
BLANK_RUNS = re.compile(r"\S+")

Segmenter = Callable[[str], list[str]]


def describe() -> str:
    """What ``tokenizer.word_segmenter`` may be, for error messages."""
    named = " or ".join(map(repr, NAMED))
    return f"{named}, or an import path 'package.module:function' of a text -> list[str] callable"


def is_valid_name(name: str) -> bool:
    """``name`` is a known segmenter or has the form of an import path (nothing is imported)."""
    return name in NAMED or bool(IMPORT_PATH.fullmatch(name))


@functools.lru_cache(maxsize=8)
def load(name: str) -> Segmenter:
    """The segmenter ``name`` stands for, imported; a one-line ConfigError naming it (and for
    jieba, the extra to install) when it cannot be."""
    key = f"tokenizer.word_segmenter={name!r}"
    module_name, attr = NAMED.get(name) or name.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        if name in NAMED:
            raise ConfigError(f"{key} needs the {module_name} package: pip install 'sslab[zh]'") from None
        raise ConfigError(f"{key} cannot be imported: {type(e).__name__}: {e}".splitlines()[0]) from None
    except Exception as e:  # noqa: BLE001 - a user's module that fails as it is imported
        raise ConfigError(f"{key}: importing {module_name} failed: {type(e).__name__}: {e}".splitlines()[0]) from None
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
    if not callable(fn):
        raise ConfigError(f"{key}: {module_name} has no callable {attr!r}")
    if name == "jieba":
        module.setLogLevel(logging.WARNING)  # not its "Building prefix dict" lines in every worker
    return fn


def check(cfg) -> None:
    """Before Ray starts: the configured segmenter (of the :class:`~sslab.config.Config` ``cfg``)
    imports; a missing package is a one-line ConfigError naming the extra. An objective that masks
    no words is told that the segmenter goes unused."""
    from sslab.config import warn
    from sslab.objectives import get

    name = cfg.tokenizer.word_segmenter
    if not name:
        return
    load(name)
    if not get(cfg.objective.name).masks_words:
        warn(f"tokenizer.word_segmenter={name!r} is unused: objective {cfg.objective.name!r} masks no words "
             "(whole-word masking is mlm's, electra's and their mixtures')")


# ---------------------------------------------------------------- words to tokens


def word_ends(text: str, words: list[str]) -> list[int]:
    """The end offset (in characters of ``text``) of each non-blank word the segmenter cut.

    Words are found in order in the text, so a segmenter that drops or normalises characters
    still lines up; text between found words that is not blank (what it dropped) counts as words
    of its own, one per run of non-blank characters. Blank text joins the word after it: a
    byte-level BPE token ``Ġword`` starts on the space but belongs to the word."""
    ends, cursor = [], 0
    for word in words:
        at = text.find(word, cursor) if word.strip() else -1
        if at < 0:
            continue
        ends += [cursor + m.end() for m in BLANK_RUNS.finditer(text[cursor:at])]
        cursor = at + len(word)
        ends.append(cursor)
    return ends + [cursor + m.end() for m in BLANK_RUNS.finditer(text[cursor:])]


def continues_word(offsets: np.ndarray, ends: list[int]) -> np.ndarray:
    """Per token of one document: whether it continues the word of the token before it, that is,
    its first character (``offsets[:, 0]``, as the tokenizer's Encoding gives them) falls in the
    same segmenter word as the previous token's."""
    word = np.searchsorted(np.asarray(ends, dtype=np.int64), offsets[:, 0], side="right")
    out = np.zeros(len(word), dtype=bool)
    out[1:] = word[1:] == word[:-1]
    return out


def mark_words(segment: Segmenter, texts: list[str], encodings) -> list[np.ndarray]:
    """:func:`continues_word` of each document, cut by ``segment`` and tokenised into ``encodings``
    (with offsets: ``Tokenizer.encode_batch``, not ``encode_batch_fast``)."""
    return [continues_word(np.asarray(e.offsets, dtype=np.int64).reshape(-1, 2), word_ends(t, list(segment(t))))
            for t, e in zip(texts, encodings)]
