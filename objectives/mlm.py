"""Masked language modelling (BERT, Devlin et al. 2019; dynamic masking as in RoBERTa, Liu et al. 2019)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sslab import lazy
from sslab.config import EvalConfig, ObjectiveConfig, check, check_fraction
from sslab.errors import ConfigError
from sslab.objectives.base import IGNORE, Batch, register
from sslab.rng import RowRandom
from sslab.objectives.encoder import EncoderObjective

# The model side's modules, imported on first use: Ray Data's processes run transform() without them.
torch = lazy.module("torch")
F = lazy.module("torch.nn.functional")


@dataclass(kw_only=True)
class MLMConfig(ObjectiveConfig):
    """Masked-LM knobs. Of the selected tokens, ``replace_mask`` become the mask token,
    ``replace_random`` a random token, and the rest stay as they are (BERT's 80/10/10)."""

    name: str = "mlm"
    mask_ratio: float = 0.15
    """Share of (non-special) tokens selected for prediction."""
    replace_mask: float = 0.8
    """Share of selected tokens replaced by the mask token."""
    replace_random: float = 0.1
    """Share of selected tokens replaced by a random token."""
    whole_word: bool = False
    """Select whole words: all pieces of a word are masked together."""

    def __post_init__(self):
        check_fraction("objective.mask_ratio", self.mask_ratio)
        check_fraction("objective.replace_mask", self.replace_mask, low_open=False, high_open=False)
        check_fraction("objective.replace_random", self.replace_random, low_open=False, high_open=False)
        check(self.replace_mask + self.replace_random <= 1.0, "objective.replace_random", self.replace_random,
              f"at most 1 - objective.replace_mask = {1 - self.replace_mask:g}")


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


@register
class MLM(EncoderObjective):
    """Predict masked tokens from both sides' context."""

    name = "mlm"
    unit = "packed"
    units = ("pairs", "sentences")  # in a mixture it masks the input nsp, sop or simcse builds
    Config = MLMConfig
    metrics = ("eval_mlm_loss", "eval_mlm_acc", "eval_unigram_acc", "probe_acc")
    paper = "BERT (Devlin et al. 2019); RoBERTa dynamic masking (Liu et al. 2019)"
    lm_head = True
    aux_weight = 0.1  # SimCSE's MLM auxiliary weight (Gao et al. 2021, appendix)

    def __init__(self, cfg: MLMConfig, vocab):
        super().__init__(cfg, vocab)
        if vocab.mask_id is None:
            raise ConfigError("objective.name='mlm' needs a tokenizer with a mask token; this one has none")

    def transform(self, batch: Batch, rng: RowRandom) -> Batch:
        c = self.cfg
        return mask_tokens(batch["input_ids"], rng, self.vocab, c.mask_ratio, c.replace_mask,
                           c.replace_random, c.whole_word)

    def eval_transform(self, batch: Batch, rng: RowRandom, protocol: EvalConfig) -> Batch:
        return mask_tokens(batch["input_ids"], rng, self.vocab, protocol.mask_ratio, 0.8, 0.1)

    def part_loss(self, net, outs, batch):
        labels = batch["labels"]
        scored = labels != IGNORE
        return F.cross_entropy(outs[0].logits[scored].float(), labels[scored]), {}

    def part_sums(self, net, outs, batch):
        labels = batch["labels"]
        scored = labels != IGNORE
        return token_sums(outs[0].logits[scored].float(), labels[scored], self.vocab.size)

    def eval_metrics(self, sums):
        count = max(float(sums["count"]), 1.0)
        return {"eval_mlm_loss": float(sums["nll"]) / count, "eval_mlm_acc": float(sums["correct"]) / count,
                **unigram_baseline(sums["target_hist"])}


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
