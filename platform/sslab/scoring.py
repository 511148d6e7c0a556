"""Additive evaluation statistics of predicted tokens, and the unigram baseline they are
compared with, shared by every objective that scores tokens (MLM, CLM, T5 spans, BART).

Sums rather than means, so that workers' statistics all-reduce into the metric one worker would
compute on the whole validation set. torch is imported on first use: objective modules that
import this run in Ray Data's processes too, which never build a model.
"""
from __future__ import annotations

import numpy as np

from sslab import lazy

torch = lazy.module("torch")
F = lazy.module("torch.nn.functional")


def token_sums(logits: torch.Tensor, targets: torch.Tensor, vocab_size: int) -> dict[str, torch.Tensor]:
    """Additive eval statistics of scored tokens: summed NLL, correct argmaxes, count, and the
    targets' histogram (the unigram baseline's distribution)."""
    return {
        "nll": F.cross_entropy(logits, targets, reduction="sum"),
        "correct": (logits.argmax(-1) == targets).sum().float(),
        "count": torch.tensor(float(len(targets)), device=logits.device),
        "target_hist": torch.bincount(targets, minlength=vocab_size).float(),
    }


def unigram_baseline(target_hist: np.ndarray) -> dict[str, float]:
    """The best a context-blind model does on these very targets: their entropy and mode share."""
    total = max(float(target_hist.sum()), 1.0)
    p = target_hist[target_hist > 0] / total
    return {"eval_unigram_loss": float(-(p * np.log(p)).sum()), "eval_unigram_acc": float(p.max()) if p.size else 0.0}
