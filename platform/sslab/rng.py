"""Counter-based random numbers: the same numbers for a row whatever the batching, the split
across workers or the resume point.

Masks (:class:`RowRandom`, keyed by seed, epoch and row id), dropout seeds (keyed by seed, rank
and step, in the training loop) and row ids (a hash of each row's tokens, in the pipeline) all
hash with SplitMix64 instead of advancing a stateful generator, so nothing a run draws depends
on what ran before it.
"""
from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (Steele et al. 2014): a bijective hash of uint64s, vectorised."""
    with np.errstate(over="ignore"):  # wrap-around is the point
        z = np.asarray(x, dtype=np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


class RowRandom:
    """Random numbers that depend only on (seed, epoch, row id, position, stream).

    Counter-based rather than stateful: a row gets the same mask however the dataset is
    batched, split across workers or resumed, a new one every epoch, and rows never share
    a stream. Generating them is a few vectorised integer ops per number.
    """

    def __init__(self, seed: int, epoch: int, row_ids: np.ndarray, progress: np.ndarray | None = None):
        base = splitmix64(splitmix64(np.uint64(seed)) ^ np.uint64(epoch))
        self.keys = splitmix64(base ^ np.asarray(row_ids, dtype=np.uint64))
        self.progress = progress
        """Per row, the share of ``train.max_steps`` done at the step that trains on it (what a
        schedule reads, :class:`sslab.masking.MaskSchedule`); None outside training."""

    def fork(self, k: int) -> RowRandom:
        """An independent generator for the same rows (one per part of a mixture)."""
        child = object.__new__(RowRandom)
        child.keys = splitmix64(self.keys ^ splitmix64(splitmix64(np.uint64(k)) ^ _GOLDEN))
        child.progress = self.progress
        return child

    def bits(self, n: int, stream: int = 0) -> np.ndarray:
        """uint64 array of shape (rows, n)."""
        cols = splitmix64(np.arange(n, dtype=np.uint64) + np.uint64(stream << 32))
        return splitmix64(self.keys[:, None] ^ cols[None, :])

    def uniform(self, n: int, stream: int = 0) -> np.ndarray:
        """Floats in [0, 1) of shape (rows, n)."""
        return (self.bits(n, stream) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))

    def integers(self, low: int, high: int, n: int, stream: int = 0) -> np.ndarray:
        """Integers in [low, high) of shape (rows, n)."""
        return low + (self.uniform(n, stream) * (high - low)).astype(np.int64)
