"""MacBERT's similar words (``objective.replace_similar``): "MLM as correction" (Cui et al. 2020).

MacBERT replaces a selected word by a similar word instead of ``[MASK]``, so that pretraining
never shows the model a token it will not see when fine-tuned. The similar words come from a
file the user supplies (MacBERT took them from word2vec similarities, the Synonyms toolkit),
one word a line::

    语言<TAB>言语 词汇 措辞
    学习<TAB>进修 研习

A line is a word, a tab, and its similar words separated by spaces; blank lines and lines
starting with ``#`` are skipped, and the file is UTF-8. A replacement has as many tokens as the
word it replaces (MacBERT's rule: the labels stay aligned); a word with no such candidate gets
a random word of its length from the file, as the paper falls back to a random word, and a
word of a length the file has none of gets random tokens.

The table is built once per objective with the run's tokenizer (:func:`build`) and looked up in
the data workers by a hash of each word's token ids (:func:`keys_of`), in numpy.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from sslab.errors import ConfigError
from sslab.rng import splitmix64

KEY = "objective.replace_similar"


def read(path: str) -> dict[str, tuple[str, ...]]:
    """The similar-words file at ``path``: word -> its similar words (read once per version of
    the file in a process); a one-line ConfigError naming the file and the line when it is not
    one sslab can read."""
    try:
        stat = os.stat(path)
    except OSError as e:
        raise ConfigError(f"{KEY}={path!r} is not a readable file ({e.strerror})") from None
    return _read(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _read(path: str, mtime_ns: int, size: int) -> dict[str, tuple[str, ...]]:
    words: dict[str, tuple[str, ...]] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line.strip() or line.startswith("#"):
                    continue
                word, tab, similar = line.partition("\t")
                if not tab or not word.strip():
                    raise ConfigError(f"{KEY}={path!r}: line {number} is not 'word<TAB>similar words separated by "
                                      f"spaces': {line[:60]!r}")
                words[word.strip()] = tuple(dict.fromkeys(similar.split()))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{KEY}={path!r} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{KEY}={path!r} is not a readable file ({e.strerror})") from None
    if not words:
        raise ConfigError(f"{KEY}={path!r} holds no similar words (lines of 'word<TAB>similar words')")
    return words


# ---------------------------------------------------------------- keys of token sequences


def _terms(ids: np.ndarray, pos: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return splitmix64(splitmix64(ids.astype(np.uint64)) ^ pos.astype(np.uint64))


def _finish(sums: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    return splitmix64(sums ^ (lengths.astype(np.uint64) << np.uint64(48)))


def keys_of(flat_ids: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """A uint64 key per word of ``flat_ids``, whose words start at the sorted indices ``starts``
    (the first at 0) and run to the next start: the same key as :func:`keys_of_rows` gives a word
    of the same ids."""
    lengths = np.diff(np.append(starts, len(flat_ids)))
    word = np.repeat(np.arange(len(starts)), lengths)
    pos = np.arange(len(flat_ids)) - starts[word]
    with np.errstate(over="ignore"):
        sums = np.add.reduceat(_terms(flat_ids, pos), starts)
    return _finish(sums, lengths)


def keys_of_rows(rows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """:func:`keys_of` of words given as padded rows (``rows[i, :lengths[i]]``)."""
    pos = np.broadcast_to(np.arange(rows.shape[1]), rows.shape)
    terms = np.where(pos < lengths[:, None], _terms(rows, pos), np.uint64(0))
    with np.errstate(over="ignore"):
        return _finish(terms.sum(axis=1, dtype=np.uint64), lengths)


# ---------------------------------------------------------------- the table


@dataclass(frozen=True, eq=False)
class SimilarWords:
    """The similar-words file in token ids: for each word, its candidates of the same length,
    and every word of the file by length (the random-word fallback)."""

    keys: np.ndarray
    """Sorted uint64 keys (:func:`keys_of`) of the words that have candidates."""
    first: np.ndarray
    """Per key: the row of ``rows`` holding its first candidate."""
    count: np.ndarray
    """Per key: how many candidates follow."""
    rows: np.ndarray
    """(rows, width) token ids: the candidates, then every word of the file sorted by length."""
    length_first: np.ndarray
    """Per token length ``k``: the first row of ``rows`` holding a file word of ``k`` tokens."""
    length_count: np.ndarray
    """Per token length ``k``: how many file words have ``k`` tokens."""

    def choose(self, keys: np.ndarray, lengths: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For words of ``keys`` and ``lengths`` and a uniform draw each: the row of a similar word
        (a random word of the length when there is none; -1 when there is no such word either),
        and the row of a random word of the length (or -1)."""
        at = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        found = (self.keys[at] == keys) & (self.count[at] > 0)
        similar = self.first[at] + (u * self.count[at]).astype(np.int64)
        k = np.minimum(lengths, len(self.length_count) - 1)
        count = self.length_count[k]
        random_word = np.where(count > 0, self.length_first[k] + (u * count).astype(np.int64), -1)
        return np.where(found, similar, random_word), random_word


def build(words: dict[str, tuple[str, ...]], tokenizer_json: str, special_ids) -> SimilarWords:
    """The table of the file's ``words`` (:func:`read`) in the token ids of a tokenizer.

    Each word is tokenised alone and after a space (a byte-level BPE tokenizer gives a word
    that follows a space other tokens); a candidate is kept when it has as many tokens as its
    word in the same form, and sequences with a special token (unknown characters) are dropped."""
    tok = Tokenizer.from_str(tokenizer_json)
    vocabulary = sorted(set(words) | {c for cands in words.values() for c in cands})
    special = set(special_ids)
    ids = {}
    for prefix in ("", " "):
        forms = [prefix + w for w in vocabulary]
        for form, enc in zip(forms, tok.encode_batch_fast(forms, add_special_tokens=False)):
            if enc.ids and not special.intersection(enc.ids):
                ids[form] = tuple(enc.ids)
    table: dict[tuple[int, ...], dict[tuple[int, ...], None]] = {}
    for word, cands in words.items():
        for prefix in ("", " "):
            mine = ids.get(prefix + word)
            if mine is None:
                continue
            same = [ids[prefix + c] for c in cands if len(ids.get(prefix + c, ())) == len(mine)]
            table.setdefault(mine, {}).update(dict.fromkeys(c for c in same if c != mine))
    table = {w: list(c) for w, c in table.items() if c}
    return _arrays(table, sorted(set(ids.values()), key=lambda s: (len(s), s)))


def _arrays(table: dict[tuple[int, ...], list[tuple[int, ...]]], pool: list[tuple[int, ...]]) -> SimilarWords:
    words = list(table)
    sequences = [c for w in words for c in table[w]] + pool
    width = max((len(s) for s in sequences), default=1)
    rows = np.zeros((len(sequences), width), dtype=np.int64)
    for i, s in enumerate(sequences):
        rows[i, :len(s)] = s
    count = np.array([len(table[w]) for w in words], dtype=np.int64)
    first = np.cumsum(count) - count
    lengths = np.array([len(w) for w in words], dtype=np.int64)
    padded = np.zeros((len(words), width), dtype=np.int64)
    for i, w in enumerate(words):
        padded[i, :len(w)] = w
    keys = keys_of_rows(padded, lengths) if words else np.zeros(0, dtype=np.uint64)
    order = np.argsort(keys)
    pool_lengths = np.array([len(s) for s in pool], dtype=np.int64)
    length_count = np.bincount(pool_lengths, minlength=width + 1)
    length_first = len(sequences) - len(pool) + np.cumsum(length_count) - length_count
    if not len(order):  # nothing has a candidate: one key with none, so that every lookup misses
        keys, first, count, order = (np.zeros(1, dtype) for dtype in (np.uint64, np.int64, np.int64, np.int64))
    return SimilarWords(keys=keys[order], first=first[order], count=count[order], rows=rows,
                        length_first=length_first, length_count=length_count)
