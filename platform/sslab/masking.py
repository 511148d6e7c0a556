"""Token masking shared by the objectives that predict masked tokens (MLM, ELECTRA's generator):
BERT's 80/10/10 replacement over a selection of tokens, or of whole words.

Pure numpy, run in Ray Data's processes; every draw comes from :class:`~sslab.rng.RowRandom`, so
a row gets the same mask however it is batched, split or resumed.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sslab.config import require, require_fraction
from sslab.rng import RowRandom

if TYPE_CHECKING:  # sslab.objectives imports this module: its names are imported where used
    from sslab.objectives.base import Batch

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



def word_starts(ids: np.ndarray, continues_word: np.ndarray, special: np.ndarray) -> np.ndarray:
    """True where a token starts a word (a token after a special token always does)."""
    starts = ~continues_word[ids]
    starts[:, 1:] |= special[:, :-1]
    return starts


def mask_tokens(ids: np.ndarray, rng: RowRandom, vocab, ratio: float | np.ndarray, p_mask: float, p_random: float,
                whole_word: bool = False) -> Batch:
    """BERT-style masking of a (rows, T) id array; returns ``input_ids`` and ``labels``.
    ``ratio``: one for every row, or one per row (a schedule's, :meth:`MaskSchedule.ratio_at`)."""
    from sslab.objectives.base import IGNORE

    n, t = ids.shape
    special = np.isin(ids, vocab.special_ids)
    u = rng.uniform(t, stream=0)
    if whole_word:  # every piece takes the draw of its word's first piece
        starts = word_starts(ids, vocab.continues_word, special)
        first = np.maximum.accumulate(np.where(starts, np.arange(t), 0), axis=1)
        u = np.take_along_axis(u, first, axis=1)
    selected = (u < np.reshape(ratio, (-1, 1))) & ~special
    action = rng.uniform(t, stream=1)
    to_mask = selected & (action < p_mask)
    to_random = selected & (action >= p_mask) & (action < p_mask + p_random)
    normal = vocab.normal_ids
    inputs = ids.copy()
    inputs[to_mask] = vocab.mask_id
    inputs[to_random] = normal[rng.integers(0, len(normal), t, stream=2)[to_random]]
    labels = np.where(selected, ids, IGNORE)
    return {"input_ids": inputs.astype(np.int64), "labels": labels.astype(np.int64)}
