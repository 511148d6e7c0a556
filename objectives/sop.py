"""Sentence-order prediction (ALBERT, Lan et al. 2020): are two consecutive segments swapped?"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sslab.config import ObjectiveConfig
from sslab.objectives.base import register
from sslab.objectives.encoder import PairObjective

SWAP_SHARE = 0.5  # ALBERT: half the pairs are swapped


@dataclass(kw_only=True)
class SOPConfig(ObjectiveConfig):
    """Sentence-order prediction has no knobs: half the pairs are swapped (ALBERT)."""

    name: str = "sop"


@register
class SOP(PairObjective):
    """Tell two consecutive segments of a document in order from the same two swapped (label 1).

    Unlike NSP, both segments always share the topic, so the task is about discourse
    coherence, not topic (ALBERT, section 4.2).
    """

    name = "sop"
    Config = SOPConfig
    metrics = ("eval_sop_acc", "eval_sop_majority_acc", "probe_acc")
    baselines = {"eval_sop_majority_acc": "eval_sop_acc"}
    paper = "ALBERT (Lan et al. 2020)"

    def pair(self, batch, rng):
        rows = np.arange(len(batch["a"]))
        swap = rng.uniform(1, stream=0)[:, 0] < SWAP_SHARE
        return (swap, rows), (~swap, rows), swap
