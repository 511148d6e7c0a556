"""Masked language modelling (BERT, Devlin et al. 2019; dynamic masking as in RoBERTa, Liu et al. 2019)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sslab import lazy, segment, similar
from sslab.config import EvalConfig, ObjectiveConfig, require, require_fraction
from sslab.errors import ConfigError
from sslab.masking import MaskSchedule, WordMasking, mask_tokens
from sslab.objectives.base import IGNORE, Batch, register
from sslab.objectives.encoder import EncoderObjective
from sslab.rng import RowRandom
from sslab.scoring import token_sums, unigram_baseline

# The model side's modules, imported on first use: Ray Data's processes run transform() without them.
F = lazy.module("torch.nn.functional")


@dataclass(kw_only=True)
class MLMConfig(MaskSchedule, WordMasking, ObjectiveConfig):
    """Masked-LM knobs. Of the selected tokens, ``replace_mask`` become the mask token,
    ``replace_random`` a random token, and the rest stay as they are (BERT's 80/10/10).
    ``whole_word``, ``ngram`` and ``replace_similar`` give BERT-wwm's and MacBERT's masking; the
    share selected, ``mask_ratio``, may follow a schedule (:class:`~sslab.masking.MaskSchedule`)."""

    name: str = "mlm"
    replace_mask: float = 0.8
    """Share of selected tokens replaced by the mask token (by a similar word with ``replace_similar``)."""
    replace_random: float = 0.1
    """Share of selected tokens replaced by a random token (a random word with ``replace_similar``)."""
    replace_similar: str | None = None
    """MacBERT's "MLM as correction": a file of similar words, one ``word<TAB>similar words
    separated by spaces`` a line (UTF-8; see :mod:`sslab.similar`). A selected word's
    ``replace_mask`` share becomes a similar word of as many tokens instead of the mask token
    (a random word of its length when it has none), its ``replace_random`` share a random word,
    decided once per word. A path every training node can read."""
    static_masks: int | None = None
    """``None``: a new mask for a row every epoch (RoBERTa's dynamic masking). ``k``: the row's
    mask cycles through ``k`` fixed ones, epoch ``e`` reusing the mask of epoch ``e % k``: BERT's
    static masking, which duplicated its data 10 times with a mask each (RoBERTa's static
    baseline is ``k = 10``); ``1``: one mask for ever. Training rows only: the fixed-protocol
    evaluation masks as it always does. Resumes alike, since a row's mask depends only on its epoch."""

    def __post_init__(self):
        self.check_schedule()
        require(self.static_masks is None or (type(self.static_masks) is int and self.static_masks >= 1),
                "objective.static_masks", self.static_masks, "an integer >= 1, or null for dynamic masking")
        require_fraction("objective.replace_mask", self.replace_mask, low_open=False, high_open=False)
        require_fraction("objective.replace_random", self.replace_random, low_open=False, high_open=False)
        require(self.replace_mask + self.replace_random <= 1.0, "objective.replace_random", self.replace_random,
                f"at most 1 - objective.replace_mask = {1 - self.replace_mask:g}")
        self.check_word_masking()
        if self.replace_similar is not None:
            # Absolute: Ray's workers read it from another working directory.
            self.replace_similar = str(Path(self.replace_similar).expanduser().absolute())
            similar.read(self.replace_similar)  # refused before Ray starts: missing, unreadable, not word<TAB>words


def similar_table(path: str | None, vocab) -> similar.SimilarWords | None:
    """The similar words of ``objective.replace_similar`` in this tokenizer's ids (None: unset)."""
    if path is None:
        return None
    if vocab.tokenizer_json is None:
        raise ConfigError(f"objective.replace_similar={path!r} needs the tokenizer itself to tokenise its words")
    return similar.build(similar.read(path), vocab.tokenizer_json, vocab.special_ids)


@register
class MLM(EncoderObjective):
    """Predict masked tokens from both sides' context."""

    name = "mlm"
    unit = "packed"
    masks_words = True
    units = ("pairs", "sentences")  # in a mixture it masks the input nsp, sop or simcse builds
    Config = MLMConfig
    metrics = ("eval_mlm_loss", "eval_mlm_acc", "eval_unigram_acc", "probe_acc")
    baselines = {"eval_unigram_loss": "eval_mlm_loss", "eval_unigram_acc": "eval_mlm_acc"}
    paper = ("BERT (Devlin et al. 2019); RoBERTa dynamic masking (Liu et al. 2019); whole words, n-grams, similar "
             "words: BERT-wwm, MacBERT (Cui et al. 2020, 2021)")
    lm_head = True
    aux_weight = 0.1  # SimCSE's MLM auxiliary weight (Gao et al. 2021, appendix)

    def __init__(self, cfg: MLMConfig, vocab):
        super().__init__(cfg, vocab)
        if vocab.mask_id is None:
            raise ConfigError("objective.name='mlm' needs a tokenizer with a mask token; this one has none")
        self.similar = similar_table(cfg.replace_similar, vocab)

    def transform(self, batch: Batch, rng: RowRandom) -> Batch:
        c = self.cfg
        return mask_tokens(batch["input_ids"], rng, self.vocab, c.ratio_at(rng.progress), c.replace_mask,
                           c.replace_random, c.whole_word, continues=batch.get(segment.COLUMN),
                           ngram=c.ngram_probs if c.ngram else None, similar=self.similar)

    def mask_epoch(self, epoch: int) -> int:
        k = self.cfg.static_masks
        return epoch if k is None else epoch % k

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
