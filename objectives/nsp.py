"""Next-sentence prediction (BERT, Devlin et al. 2019): is segment B the one that follows A?"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sslab.config import ObjectiveConfig
from sslab.objectives.base import register
from sslab.objectives.encoder import PairObjective

RANDOM_SHARE = 0.5  # BERT: half the pairs get a random second segment


@dataclass(kw_only=True)
class NSPConfig(ObjectiveConfig):
    """Next-sentence prediction has no knobs: half the pairs are real, half random (BERT)."""

    name: str = "nsp"


@register
class NSP(PairObjective):
    """Tell a segment's true successor from a segment of another document (label 1: random)."""

    name = "nsp"
    Config = NSPConfig
    metrics = ("eval_nsp_acc", "eval_nsp_majority_acc", "probe_acc")
    baselines = {"eval_nsp_majority_acc": "eval_nsp_acc"}
    paper = "BERT (Devlin et al. 2019)"

    def pair(self, batch, rng):
        doc, n = batch["doc"], len(batch["a"])
        rows = np.arange(n)
        # The random segment is another row's B, never one of the same document: a segment of the
        # same text could well be on topic or even the true successor.
        other = (rows + rng.integers(1, max(n, 2), 1, stream=1)[:, 0]) % n
        random = (rng.uniform(1, stream=0)[:, 0] < RANDOM_SHARE) & (doc[other] != doc)
        return (np.zeros(n, dtype=bool), rows), (np.ones(n, dtype=bool), np.where(random, other, rows)), random
