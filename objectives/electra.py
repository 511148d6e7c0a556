"""Replaced-token detection (ELECTRA, Clark et al. 2020).

A small generator is trained as a masked LM; its samples replace the masked tokens, and the
discriminator learns to tell, for every token, whether it is the original or a replacement.
The two share their token, position and type embeddings (section 3.2) and train together,
``loss = generator MLM + disc_weight * RTD``, in one forward so that DDP sees one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from sslab import lazy, segment
from sslab.config import EvalConfig, ModelConfig, ObjectiveConfig, require, require_fraction
from sslab.errors import ConfigError
from sslab.objectives.base import IGNORE, Batch, Objective, register
from sslab.objectives.encoder import write_sentence_transformers
from sslab.rng import RowRandom
from sslab.masking import MaskSchedule, WordMasking, mask_tokens

if TYPE_CHECKING:
    from transformers import ElectraConfig

# The model side's modules, imported on first use: Ray Data's processes run transform() without them.
torch = lazy.module("torch")
F = lazy.module("torch.nn.functional")
transformers = lazy.module("transformers")
models = lazy.module("sslab.models")

# Of the selected tokens the generator sees 85 % as [MASK] and 15 % unchanged, never a random
# token: google-research/electra, pretrain_helpers.mask.
GENERATOR_MASK_SHARE = 0.85
RTD_STREAM = 8  # RowRandom stream of the eval replacements (mask_tokens draws on streams 0-6)


@dataclass(kw_only=True)
class ELECTRAConfig(MaskSchedule, WordMasking, ObjectiveConfig):
    """ELECTRA knobs: the generator's masking (tokens, whole words or n-grams, as mlm's, at a
    ``mask_ratio`` that may follow a schedule: :class:`~sslab.masking.MaskSchedule`) and size,
    the loss weighting, the sampling."""

    name: str = "electra"
    generator_fraction: float = 0.25
    """Generator width (hidden, heads, intermediate) as a fraction of the discriminator's;
    the paper finds 1/4 to 1/2 best. Both have the same number of layers."""
    disc_weight: float = 50.0
    """Weight of the discriminator's RTD loss against the generator's MLM loss (the paper's 50)."""
    temperature: float = 1.0
    """Temperature of the generator's softmax the replacements are sampled from."""

    def __post_init__(self):
        self.check_schedule()
        require_fraction("objective.generator_fraction", self.generator_fraction, high_open=False)
        require(math.isfinite(self.disc_weight) and self.disc_weight >= 0, "objective.disc_weight",
                self.disc_weight, "a number >= 0")
        require(math.isfinite(self.temperature) and self.temperature > 0, "objective.temperature",
                self.temperature, "a positive number")
        self.check_word_masking()


# ---------------------------------------------------------------- the two networks' configs


def discriminator_config(cfg: ModelConfig, vocab) -> ElectraConfig:
    """The discriminator: preset sizes, embeddings as wide as the hidden states, SDPA attention.

    ELECTRA has its own (BERT-like) architecture, so ``model.arch`` does not apply."""
    hidden, layers, heads, inter = models.PRESETS[cfg.preset]
    drop = 0.1 if cfg.dropout is None else cfg.dropout  # ELECTRA's (BERT's) dropout
    return transformers.ElectraConfig(
        vocab_size=vocab.size, embedding_size=hidden, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=inter, max_position_embeddings=cfg.max_positions,
        hidden_dropout_prob=drop, attention_probs_dropout_prob=drop, pad_token_id=vocab.pad_id,
        attn_implementation="sdpa")


def generator_config(disc: ElectraConfig, fraction: float) -> ElectraConfig:
    """The generator: the discriminator's depth and embeddings, ``fraction`` of its width.

    Its embeddings keep the discriminator's width (they are shared); ``embeddings_project``
    maps them down to its hidden size. Heads are scaled too, at least one, dividing the width.
    """
    hidden = max(1, round(disc.hidden_size * fraction))
    heads = max(1, round(disc.num_attention_heads * fraction))
    while hidden % heads:
        heads -= 1
    return transformers.ElectraConfig(
        vocab_size=disc.vocab_size, embedding_size=disc.embedding_size, hidden_size=hidden,
        num_hidden_layers=disc.num_hidden_layers, num_attention_heads=heads,
        intermediate_size=max(1, round(disc.intermediate_size * fraction)),
        max_position_embeddings=disc.max_position_embeddings, type_vocab_size=disc.type_vocab_size,
        hidden_dropout_prob=disc.hidden_dropout_prob, attention_probs_dropout_prob=disc.attention_probs_dropout_prob,
        pad_token_id=disc.pad_token_id, attn_implementation="sdpa")


# ---------------------------------------------------------------- the objective


@register
class ELECTRA(Objective):
    """Detect which tokens a small masked-LM generator replaced."""

    name = "electra"
    unit = "packed"
    masks_words = True
    backbone = "electra"
    Config = ELECTRAConfig
    metrics = ("eval_rtd_acc", "eval_rtd_loss", "eval_gen_loss", "eval_gen_acc", "probe_acc")
    baselines = {"eval_rtd_baseline_acc": "eval_rtd_acc", "eval_unigram_acc": "eval_gen_acc"}
    paper = "ELECTRA (Clark et al. 2020)"

    def __init__(self, cfg: ELECTRAConfig, vocab):
        super().__init__(cfg, vocab)
        if vocab.mask_id is None:
            raise ConfigError("objective.name='electra' needs a tokenizer with a mask token; this one has none")

    def transform(self, batch: Batch, rng: RowRandom) -> Batch:
        ids, c = batch["input_ids"], self.cfg
        out = mask_tokens(ids, rng, self.vocab, c.ratio_at(rng.progress), GENERATOR_MASK_SHARE, 0.0,
                          c.whole_word, continues=batch.get(segment.COLUMN),
                          ngram=c.ngram_probs if c.ngram else None)
        return {**out, "original": ids.astype(np.int64)}

    def eval_transform(self, batch: Batch, rng: RowRandom, protocol: EvalConfig) -> Batch:
        """MLM's eval masking for the generator (so ``eval_gen_*`` compares with ``eval_mlm_*``),
        and for the discriminator the same positions replaced by uniform random tokens: a fixed
        corruption that does not depend on this run's generator."""
        ids = batch["input_ids"]
        out = mask_tokens(ids, rng, self.vocab, protocol.mask_ratio, 0.8, 0.1)
        normal = self.vocab.normal_ids
        draws = normal[rng.integers(0, len(normal), ids.shape[1], stream=RTD_STREAM)]
        rtd = np.where(out["labels"] != IGNORE, draws, ids)
        return {**out, "original": ids.astype(np.int64), "rtd_input_ids": rtd.astype(np.int64)}

    def build_model(self, model_cfg: ModelConfig) -> torch.nn.Module:
        c = self.cfg
        if model_cfg.init_from:
            disc = models.from_pretrained(transformers.AutoModelForPreTraining, model_cfg, self.vocab.size)
            if not isinstance(disc, transformers.ElectraForPreTraining):
                raise ConfigError(f"model.init_from={model_cfg.init_from!r} holds a {disc.config.model_type} model; "
                                  "objective 'electra' continues an ELECTRA discriminator")
            gen_dir = Path(model_cfg.init_from) / "generator"
            gen_cls = transformers.ElectraForMaskedLM
            gen = (gen_cls.from_pretrained(str(gen_dir), local_files_only=True, attn_implementation="sdpa")
                   if gen_dir.is_dir() else gen_cls(generator_config(disc.config, c.generator_fraction)))
        else:
            disc = transformers.ElectraForPreTraining(discriminator_config(model_cfg, self.vocab))
            gen = transformers.ElectraForMaskedLM(generator_config(disc.config, c.generator_fraction))
        return models.ElectraPair(gen, disc, c.disc_weight, c.temperature)

    def loss(self, model, batch):
        out = model(input_ids=batch["input_ids"], labels=batch["labels"], original=batch["original"])
        return out["loss"], {k: out[k].detach() for k in ("gen_loss", "disc_loss", "gen_acc", "disc_acc")}

    def eval_sums(self, model, batch):
        labels, original, rtd_ids = batch["labels"], batch["original"], batch["rtd_input_ids"]
        selected = labels != IGNORE
        logits, targets = model.generator_logits(batch["input_ids"], selected).float(), labels[selected]
        disc_logits = model.discriminator(input_ids=rtd_ids).logits.float()
        special = torch.as_tensor(self.vocab.special_ids, device=original.device)
        scored = ~torch.isin(original, special)  # special tokens are never replaced: not scored
        disc_logits, replaced = disc_logits[scored], (rtd_ids != original)[scored]
        return {
            "gen_nll": F.cross_entropy(logits, targets, reduction="sum"),
            "gen_correct": (logits.argmax(-1) == targets).sum().float(),
            "gen_count": selected.sum().float(),
            "target_hist": torch.bincount(targets, minlength=self.vocab.size).float(),
            "rtd_bce": F.binary_cross_entropy_with_logits(disc_logits, replaced.float(), reduction="sum"),
            "rtd_correct": ((disc_logits > 0) == replaced).sum().float(),
            "rtd_replaced": replaced.sum().float(),
            "rtd_count": scored.sum().float(),
        }

    def eval_metrics(self, sums):
        gen_count, rtd_count = max(float(sums["gen_count"]), 1.0), max(float(sums["rtd_count"]), 1.0)
        hist = sums["target_hist"]
        return {
            "eval_gen_loss": float(sums["gen_nll"]) / gen_count,
            "eval_gen_acc": float(sums["gen_correct"]) / gen_count,
            # The best a context-blind guess could do on these very targets.
            "eval_unigram_acc": float(hist.max()) / gen_count if hist.size else 0.0,
            "eval_rtd_loss": float(sums["rtd_bce"]) / rtd_count,
            "eval_rtd_acc": float(sums["rtd_correct"]) / rtd_count,
            # Calling every token original.
            "eval_rtd_baseline_acc": 1.0 - float(sums["rtd_replaced"]) / rtd_count,
        }

    def encoder(self, model):
        return model.discriminator.electra

    def export(self, model, out_dir, seq_len=None):
        """The discriminator (``ElectraForPreTraining``) in ``out_dir`` with the sentence-transformers
        files (mean pooling, as the probe reads it), the generator (``ElectraForMaskedLM``) in
        ``out_dir/generator``."""
        model.discriminator.save_pretrained(out_dir)
        write_sentence_transformers(out_dir, model.discriminator.config, "mean", seq_len)
        model.generator.save_pretrained(str(Path(out_dir) / "generator"))
