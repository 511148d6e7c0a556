"""Token masking shared by the objectives that predict masked tokens (MLM, ELECTRA's generator):
BERT's 80/10/10 replacement over a selection of tokens, or of whole words.

Pure numpy, run in Ray Data's processes; every draw comes from :class:`~sslab.rng.RowRandom`, so
a row gets the same mask however it is batched, split or resumed.
"""
from __future__ import annotations

import numpy as np

from sslab.objectives.base import IGNORE, Batch
from sslab.rng import RowRandom


def word_starts(ids: np.ndarray, continues_word: np.ndarray, special: np.ndarray) -> np.ndarray:
    """True where a token starts a word (a token after a special token always does)."""
    starts = ~continues_word[ids]
    starts[:, 1:] |= special[:, :-1]
    return starts


def mask_tokens(ids: np.ndarray, rng: RowRandom, vocab, ratio: float, p_mask: float, p_random: float,
                whole_word: bool = False) -> Batch:
    """BERT-style masking of a (rows, T) id array; returns ``input_ids`` and ``labels``."""
    n, t = ids.shape
    special = np.isin(ids, vocab.special_ids)
    u = rng.uniform(t, stream=0)
    if whole_word:  # every piece takes the draw of its word's first piece
        starts = word_starts(ids, vocab.continues_word, special)
        first = np.maximum.accumulate(np.where(starts, np.arange(t), 0), axis=1)
        u = np.take_along_axis(u, first, axis=1)
    selected = (u < ratio) & ~special
    action = rng.uniform(t, stream=1)
    to_mask = selected & (action < p_mask)
    to_random = selected & (action >= p_mask) & (action < p_mask + p_random)
    normal = vocab.normal_ids
    inputs = ids.copy()
    inputs[to_mask] = vocab.mask_id
    inputs[to_random] = normal[rng.integers(0, len(normal), t, stream=2)[to_random]]
    labels = np.where(selected, ids, IGNORE)
    return {"input_ids": inputs.astype(np.int64), "labels": labels.astype(np.int64)}
