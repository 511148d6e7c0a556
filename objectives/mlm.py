"""Masked language modelling (BERT, Devlin et al. 2019; dynamic masking as in RoBERTa, Liu et al. 2019)."""
from __future__ import annotations

from dataclasses import dataclass

from sslab import lazy
from sslab.config import EvalConfig, ObjectiveConfig, require, require_fraction
from sslab.errors import ConfigError
from sslab.masking import MaskSchedule, mask_tokens
from sslab.objectives.base import IGNORE, Batch, register
from sslab.objectives.encoder import EncoderObjective
from sslab.rng import RowRandom
from sslab.scoring import token_sums, unigram_baseline

# The model side's modules, imported on first use: Ray Data's processes run transform() without them.
F = lazy.module("torch.nn.functional")


@dataclass(kw_only=True)
class MLMConfig(MaskSchedule, ObjectiveConfig):
    """Masked-LM knobs. Of the selected tokens, ``replace_mask`` become the mask token,
    ``replace_random`` a random token, and the rest stay as they are (BERT's 80/10/10). The
    share selected, ``mask_ratio``, may follow a schedule (:class:`~sslab.masking.MaskSchedule`)."""

    name: str = "mlm"
    replace_mask: float = 0.8
    """Share of selected tokens replaced by the mask token."""
    replace_random: float = 0.1
    """Share of selected tokens replaced by a random token."""
    whole_word: bool = False
    """Select whole words: all pieces of a word are masked together."""

    def __post_init__(self):
        self.check_schedule()
        require_fraction("objective.replace_mask", self.replace_mask, low_open=False, high_open=False)
        require_fraction("objective.replace_random", self.replace_random, low_open=False, high_open=False)
        require(self.replace_mask + self.replace_random <= 1.0, "objective.replace_random", self.replace_random,
                f"at most 1 - objective.replace_mask = {1 - self.replace_mask:g}")


@register
class MLM(EncoderObjective):
    """Predict masked tokens from both sides' context."""

    name = "mlm"
    unit = "packed"
    units = ("pairs", "sentences")  # in a mixture it masks the input nsp, sop or simcse builds
    Config = MLMConfig
    metrics = ("eval_mlm_loss", "eval_mlm_acc", "eval_unigram_acc", "probe_acc")
    baselines = {"eval_unigram_loss": "eval_mlm_loss", "eval_unigram_acc": "eval_mlm_acc"}
    paper = "BERT (Devlin et al. 2019); RoBERTa dynamic masking (Liu et al. 2019)"
    lm_head = True
    aux_weight = 0.1  # SimCSE's MLM auxiliary weight (Gao et al. 2021, appendix)

    def __init__(self, cfg: MLMConfig, vocab):
        super().__init__(cfg, vocab)
        if vocab.mask_id is None:
            raise ConfigError("objective.name='mlm' needs a tokenizer with a mask token; this one has none")

    def transform(self, batch: Batch, rng: RowRandom) -> Batch:
        c = self.cfg
        return mask_tokens(batch["input_ids"], rng, self.vocab, c.ratio_at(rng.progress), c.replace_mask,
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
