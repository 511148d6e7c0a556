"""Token masking shared by the objectives that predict masked tokens (MLM, ELECTRA's generator):
BERT's 80/10/10 replacement over a selection of tokens, of whole words (BERT-wwm), or of n-grams
of words (MacBERT), and MacBERT's similar-word replacement (:mod:`sslab.similar`).

A word is the tokenizer's (a ``##`` piece continues one, a ``Ġ`` token starts one) unless the
rows carry a word segmenter's boundaries (:data:`sslab.segment.COLUMN`: Chinese words, whatever
the tokenizer). Pure numpy, run in Ray Data's processes; every draw comes from
:class:`~sslab.rng.RowRandom`, so a row gets the same mask however it is batched, split or
resumed. Its streams: 0 selection, 1 the 80/10/10 action, 2 random tokens, 3 n-gram lengths,
4 the order spans are taken in, 5 the span at the budget, 6 the similar or random word.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sslab.config import require, require_fraction
from sslab.rng import RowRandom
from sslab.similar import SimilarWords, keys_of

if TYPE_CHECKING:  # the objectives import this module for WordMasking: not the other way round at import
    from sslab.objectives.base import Batch

MACBERT_NGRAM = (0.4, 0.3, 0.2, 0.1)
"""MacBERT's span lengths: 1, 2, 3 and 4 words with these probabilities (Cui et al. 2020)."""
MAX_NGRAM = 10

SCHEDULES = ("constant", "linear", "steps")


@dataclass(kw_only=True)
class MaskSchedule:
    """The share of tokens masked as training goes on: the fields of an objective that masks.

    The ratio of a row comes from the step that trains on it (:attr:`RowRandom.progress`, the
    share of ``train.max_steps`` done), so a resumed run masks as the uninterrupted one did. The
    fixed-protocol evaluation keeps its own ratio (``eval.mask_ratio``) whatever the schedule."""

    mask_ratio: float = 0.15
    """Share of (non-special) tokens selected for prediction (at the first step, on a schedule)."""
    mask_schedule: str = "constant"
    """``constant``: ``mask_ratio`` throughout. ``linear``: from ``mask_ratio`` at the first step
    to ``mask_ratio_end`` at ``train.max_steps`` (Ankner et al. 2023: 0.3 to 0.15). ``steps``:
    ``mask_ratio``, then each ``[share, ratio]`` of ``mask_steps`` from that share of
    ``train.max_steps`` on (mmBERT's inverse schedule: 0.3, then 0.15, then 0.05)."""
    mask_ratio_end: float | None = None
    """The ratio at the last step of a ``linear`` schedule."""
    mask_steps: list | None = None
    """The later phases of a ``steps`` schedule: ``[[share, ratio], ...]``, shares rising in (0, 1)."""

    def check_schedule(self) -> None:
        require_fraction("objective.mask_ratio", self.mask_ratio)
        require(self.mask_schedule in SCHEDULES, "objective.mask_schedule", self.mask_schedule, " or ".join(SCHEDULES))
        if self.mask_schedule == "linear":
            require(self.mask_ratio_end is not None, "objective.mask_ratio_end", self.mask_ratio_end,
                    "a number in (0, 1) with objective.mask_schedule=linear")
            require_fraction("objective.mask_ratio_end", self.mask_ratio_end)
        if self.mask_schedule == "steps":
            steps = self.mask_steps
            ok = isinstance(steps, (list, tuple)) and len(steps) > 0 and all(
                isinstance(s, (list, tuple)) and len(s) == 2 and all(isinstance(x, (int, float)) for x in s)
                and 0 < s[0] < 1 and 0 < s[1] < 1 for s in steps)
            require(ok and all(a[0] < b[0] for a, b in zip(steps, steps[1:])), "objective.mask_steps", steps,
                    "[[share, ratio], ...] with shares rising in (0, 1) and ratios in (0, 1), e.g. "
                    "[[0.77, 0.15], [0.97, 0.05]] with objective.mask_schedule=steps")

    def ratio_at(self, progress: np.ndarray | None) -> float | np.ndarray:
        """The mask ratio of rows at ``progress`` (per row, the share of training done; None: the first step)."""
        if self.mask_schedule == "constant" or progress is None:
            return self.mask_ratio
        progress = np.clip(np.asarray(progress, dtype=np.float64), 0.0, 1.0)
        if self.mask_schedule == "linear":
            return self.mask_ratio + (self.mask_ratio_end - self.mask_ratio) * progress
        shares = np.array([s[0] for s in self.mask_steps])
        ratios = np.array([self.mask_ratio] + [s[1] for s in self.mask_steps])
        return ratios[np.searchsorted(shares, progress, side="right")]


def schedule_of(cfg) -> MaskSchedule | None:
    """The mask-rate schedule of an objective's config, or of the part of a mixture that masks;
    None when the ratio is constant."""
    parts = [cfg] + [getattr(cfg, f.name) for f in dataclasses.fields(cfg)]
    return next((p for p in parts if isinstance(p, MaskSchedule) and p.mask_schedule != "constant"), None)


@dataclass(kw_only=True)
class WordMasking:
    """The selection knobs every masking objective shares (mlm, electra's generator)."""

    whole_word: bool = False
    """Select whole words: all pieces of a word are masked together. Words are the tokenizer's
    (``##`` pieces, ``Ġ`` starts) or, with ``tokenizer.word_segmenter``, the segmenter's
    (Chinese whole-word masking, BERT-wwm)."""
    ngram: bool = False
    """Mask spans of consecutive words (tokens without ``whole_word``), span lengths drawn from
    ``ngram_probs``, until ``mask_ratio`` of the tokens is reached (MacBERT's n-gram masking)."""
    ngram_probs: Sequence[float] = MACBERT_NGRAM
    """With ``ngram``: the probabilities of a span of 1, 2, 3 … words (MacBERT's 0.4, 0.3, 0.2, 0.1)."""

    def check_word_masking(self) -> None:
        require(isinstance(self.whole_word, bool), "objective.whole_word", self.whole_word, "true or false")
        require(isinstance(self.ngram, bool), "objective.ngram", self.ngram, "true or false")
        p = self.ngram_probs
        ok = (isinstance(p, (list, tuple)) and 1 <= len(p) <= MAX_NGRAM
              and all(isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in p)
              and math.isclose(sum(p), 1.0, abs_tol=1e-6))
        require(ok, "objective.ngram_probs", p,
                f"a list of 1 to {MAX_NGRAM} probabilities of spans of 1, 2, … words, summing to 1")
        self.ngram_probs = tuple(float(x) for x in p)


def word_starts(ids: np.ndarray, vocab, special: np.ndarray, continues: np.ndarray | None = None) -> np.ndarray:
    """True where a token starts a word: by ``continues`` (the rows' segmenter column) when given,
    else by the vocabulary's ``continues_word``. A special token, the token after one and a row's
    first token always do."""
    starts = ~(continues if continues is not None else vocab.continues_word[ids]) | special
    starts[:, 1:] |= special[:, :-1]
    starts[:, 0] = True
    return starts


def first_of(starts: np.ndarray) -> np.ndarray:
    """Per token, the column of the first token of its word."""
    return np.maximum.accumulate(np.where(starts, np.arange(starts.shape[1]), 0), axis=1)


def per_row(ratio) -> np.ndarray | float:
    """A ratio for every row: a number, or an array of one per row as a (rows, 1) column."""
    r = np.asarray(ratio, dtype=np.float64)
    return r.reshape(-1, 1) if r.ndim else float(r)


def mask_tokens(ids: np.ndarray, rng: RowRandom, vocab, ratio, p_mask: float, p_random: float,
                whole_word: bool = False, *, continues: np.ndarray | None = None,
                ngram: tuple[float, ...] | None = None, similar: SimilarWords | None = None) -> Batch:
    """BERT-style masking of a (rows, T) id array; returns ``input_ids`` and ``labels``.

    ``ratio`` of the non-special tokens are selected: each token (or, with ``whole_word``, each
    word, every piece with it) with that probability, or with ``ngram`` (span-length
    probabilities) spans of words until that share of the row is reached. Of the selected,
    ``p_mask`` become the mask token, ``p_random`` a random token, and the rest stay. With
    ``similar``, a selected word's ``p_mask`` becomes a similar word and its ``p_random`` a
    random word of its length (MacBERT), decided once per word. ``continues``: the rows'
    :data:`sslab.segment.COLUMN`, the word boundaries whole-word and n-gram selection use.
    """
    from sslab.objectives.base import IGNORE

    special = np.isin(ids, vocab.special_ids)
    starts = word_starts(ids, vocab, special, continues) if whole_word else np.ones_like(special)
    selected = select(starts, special, rng, per_row(ratio), whole_word, ngram)
    inputs = replace(ids, selected, starts, rng, vocab, p_mask, p_random, similar)
    labels = np.where(selected, ids, IGNORE)
    return {"input_ids": inputs.astype(np.int64), "labels": labels.astype(np.int64)}


def select(starts: np.ndarray, special: np.ndarray, rng: RowRandom, ratio, whole_word: bool,
           ngram: tuple[float, ...] | None) -> np.ndarray:
    """The tokens :func:`mask_tokens` selects (``starts``: where its units, words or tokens, start)."""
    if ngram is not None:
        return select_spans(starts & ~special, special, rng, ratio, ngram)[0]
    u = rng.uniform(special.shape[1], stream=0)
    if whole_word:  # every piece takes the draw of its word's first piece
        u = np.take_along_axis(u, first_of(starts), axis=1)
    return (u < ratio) & ~special


def replace(ids: np.ndarray, selected: np.ndarray, starts: np.ndarray, rng: RowRandom, vocab, p_mask: float,
            p_random: float, similar: SimilarWords | None) -> np.ndarray:
    """The model's input: the selected tokens masked, replaced or kept as :func:`mask_tokens` says."""
    t = ids.shape[1]
    action = rng.uniform(t, stream=1)
    if similar is not None:  # MacBERT decides once per word
        action = np.take_along_axis(action, first_of(starts), axis=1)
    to_mask = selected & (action < p_mask)
    to_random = selected & (action >= p_mask) & (action < p_mask + p_random)
    random_tokens = vocab.normal_ids[rng.integers(0, len(vocab.normal_ids), t, stream=2)]
    inputs = ids.copy()
    if similar is None:
        inputs[to_mask] = vocab.mask_id
    else:
        words, replaced = similar_words(ids, starts, to_mask, to_random, rng, similar)
        inputs[replaced] = words[replaced]
        to_random = (to_mask | to_random) & ~replaced  # no word of its length in the file: random tokens
    inputs[to_random] = random_tokens[to_random]
    return inputs


def select_spans(units: np.ndarray, special: np.ndarray, rng: RowRandom, ratio, probs) -> tuple[np.ndarray, np.ndarray]:
    """N-gram selection with a token budget, as BERT-wwm's and MacBERT's data scripts do it.

    ``units`` marks where a unit (a word, or a token) starts among the non-special tokens. Each
    row's units are cut into consecutive spans whose lengths, in units, are drawn from ``probs``
    (a special token, such as a document's ``[SEP]``, ends a span); spans are then taken in a
    random order until ``ratio`` of the row's non-special tokens is reached, the span that
    crosses it with the probability that makes the expected count exactly the budget.
    Vectorised over rows. Returns the selected tokens and each token's span (-1: special)."""
    n, t = units.shape
    eligible = ~special
    rows = np.broadcast_to(np.arange(n)[:, None], (n, t))
    unit = np.cumsum(units, axis=1) - 1  # each token's unit, counted in its row
    cum = np.cumsum(np.asarray(probs, dtype=np.float64))
    lengths = 1 + np.minimum(np.searchsorted(cum / cum[-1], rng.uniform(t, stream=3), side="right"), len(probs) - 1)
    begin = np.cumsum(lengths, axis=1) - lengths  # the unit each span begins at
    opens = np.zeros((n, t), dtype=bool)
    inside = begin < t
    opens[rows[inside], begin[inside]] = True
    after_special = units.copy()
    after_special[:, 1:] &= special[:, :-1]
    after_special[:, 0] = False
    opens[rows[after_special], unit[after_special]] = True
    span_of_unit = np.cumsum(opens, axis=1) - 1
    span = np.where(eligible & (unit >= 0), np.take_along_axis(span_of_unit, np.maximum(unit, 0), axis=1), -1)
    flat = (rows * t + span)[span >= 0]
    size = np.bincount(flat, minlength=n * t).reshape(n, t)  # tokens per span
    order = np.argsort(np.where(size > 0, rng.uniform(t, stream=4), 2.0), axis=1)
    size = np.take_along_axis(size, order, axis=1)
    after = np.cumsum(size, axis=1)
    before = after - size
    budget = ratio * eligible.sum(axis=1, keepdims=True)
    taken = (before < budget) & ((after <= budget) | (rng.uniform(t, stream=5) * size < budget - before))
    chosen = np.zeros((n, t), dtype=bool)
    np.put_along_axis(chosen, order, taken, axis=1)
    selected = (span >= 0) & np.take_along_axis(chosen, np.maximum(span, 0), axis=1)
    return selected, span


def similar_words(ids: np.ndarray, starts: np.ndarray, to_similar: np.ndarray, to_random: np.ndarray,
                  rng: RowRandom, similar: SimilarWords) -> tuple[np.ndarray, np.ndarray]:
    """The tokens of MacBERT's replacements: a similar word where a word's first token is in
    ``to_similar``, a random word of its length where it is in ``to_random``. Returns the
    replacement ids and where there is one (a word of a length the file lacks has none)."""
    n, t = ids.shape
    begins = np.flatnonzero(starts)  # every row's first column starts a word: none crosses rows
    keys = keys_of(ids.ravel(), begins)
    lengths = np.diff(np.append(begins, n * t))
    like, random_word = similar.choose(keys, lengths, rng.uniform(t, stream=6).ravel()[begins])
    source = np.where(to_similar.ravel()[begins], like, np.where(to_random.ravel()[begins], random_word, -1))
    word = np.cumsum(starts.ravel()) - 1
    row = source[word]
    replaced = row >= 0
    pos = np.minimum(np.arange(n * t) - begins[word], similar.rows.shape[1] - 1)
    out = np.where(replaced, similar.rows[np.maximum(row, 0), pos] if len(similar.rows) else 0, 0)
    return out.reshape(n, t), replaced.reshape(n, t)
