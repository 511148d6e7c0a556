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

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForPreTraining, ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining

from sslab import models
from sslab.config import EvalConfig, ModelConfig, ObjectiveConfig, check, check_fraction
from sslab.errors import ConfigError
from sslab.objectives.base import Batch, Objective, RowRandom, register
from sslab.objectives.mlm import IGNORE, mask_tokens

# Of the selected tokens the generator sees 85 % as [MASK] and 15 % unchanged, never a random
# token: google-research/electra, pretrain_helpers.mask.
GENERATOR_MASK_SHARE = 0.85
RTD_STREAM = 8  # RowRandom stream of the eval replacements (mask_tokens draws on streams 0-2)


@dataclass(kw_only=True)
class ELECTRAConfig(ObjectiveConfig):
    """ELECTRA knobs: the generator's masking and size, the loss weighting, the sampling."""

    name: str = "electra"
    mask_ratio: float = 0.15
    """Share of (non-special) tokens the generator predicts and the discriminator may see replaced."""
    generator_fraction: float = 0.25
    """Generator width (hidden, heads, intermediate) as a fraction of the discriminator's;
    the paper finds 1/4 to 1/2 best. Both have the same number of layers."""
    disc_weight: float = 50.0
    """Weight of the discriminator's RTD loss against the generator's MLM loss (the paper's 50)."""
    temperature: float = 1.0
    """Temperature of the generator's softmax the replacements are sampled from."""

    def __post_init__(self):
        check_fraction("objective.mask_ratio", self.mask_ratio)
        check_fraction("objective.generator_fraction", self.generator_fraction, high_open=False)
        check(math.isfinite(self.disc_weight) and self.disc_weight >= 0, "objective.disc_weight",
              self.disc_weight, "a number >= 0")
        check(math.isfinite(self.temperature) and self.temperature > 0, "objective.temperature",
              self.temperature, "a positive number")


# ---------------------------------------------------------------- the two networks


def discriminator_config(cfg: ModelConfig, vocab) -> ElectraConfig:
    """The discriminator: preset sizes, embeddings as wide as the hidden states, SDPA attention.

    ELECTRA has its own (BERT-like) architecture, so ``model.arch`` does not apply."""
    hidden, layers, heads, inter = models.PRESETS[cfg.preset]
    drop = 0.1 if cfg.dropout is None else cfg.dropout  # ELECTRA's (BERT's) dropout
    return ElectraConfig(vocab_size=vocab.size, embedding_size=hidden, hidden_size=hidden, num_hidden_layers=layers,
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
    return ElectraConfig(vocab_size=disc.vocab_size, embedding_size=disc.embedding_size, hidden_size=hidden,
                         num_hidden_layers=disc.num_hidden_layers, num_attention_heads=heads,
                         intermediate_size=max(1, round(disc.intermediate_size * fraction)),
                         max_position_embeddings=disc.max_position_embeddings, type_vocab_size=disc.type_vocab_size,
                         hidden_dropout_prob=disc.hidden_dropout_prob,
                         attention_probs_dropout_prob=disc.attention_probs_dropout_prob,
                         pad_token_id=disc.pad_token_id, attn_implementation="sdpa")


def replace_with_samples(logits: torch.Tensor, original: torch.Tensor, selected: torch.Tensor,
                         temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The discriminator's input and its labels: ``original`` with the ``selected`` positions
    replaced by draws from ``softmax(logits / temperature)`` (one row of logits per selected
    position). A draw equal to the original token counts as original, as in the paper.

    No gradient flows through the sampling: the generator learns from its MLM loss only.
    The draws use torch's global RNG, which the train loop reseeds every step.
    """
    with torch.no_grad():
        probs = torch.softmax(logits.detach().float() / temperature, dim=-1)
        fake = original.clone()
        if probs.shape[0]:
            fake[selected] = torch.multinomial(probs, 1).squeeze(-1)
        return fake, fake != original


class ElectraPair(torch.nn.Module):
    """Generator and discriminator as one module, so that one forward (DDP's unit) trains both."""

    def __init__(self, generator: ElectraForMaskedLM, discriminator: ElectraForPreTraining,
                 disc_weight: float, temperature: float):
        super().__init__()
        if generator.config.embedding_size != discriminator.config.embedding_size \
                or generator.config.vocab_size != discriminator.config.vocab_size:
            raise ConfigError("the ELECTRA generator's embeddings do not fit the discriminator's: "
                              f"{generator.config.vocab_size}x{generator.config.embedding_size} vs "
                              f"{discriminator.config.vocab_size}x{discriminator.config.embedding_size}")
        # Share token, position and type embeddings (section 3.2); the generator's output layer
        # stays tied to the shared token embeddings.
        generator.electra.embeddings = discriminator.electra.embeddings
        generator.generator_lm_head.weight = discriminator.electra.embeddings.word_embeddings.weight
        self.generator, self.discriminator = generator, discriminator
        self.disc_weight, self.temperature = disc_weight, temperature
        self.config = discriminator.config  # its pad id scores the discriminator

    def generator_logits(self, input_ids: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
        """The generator's vocabulary logits at the ``selected`` positions only (rows, vocab):
        the output layer is the widest matrix, and only masked positions are scored."""
        g = self.generator
        hidden = g.electra(input_ids=input_ids).last_hidden_state[selected]
        return g.generator_lm_head(g.generator_predictions(hidden))

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, original: torch.Tensor) -> dict:
        """Generator MLM loss, sampled replacements, discriminator RTD loss; the total and parts."""
        selected = labels != IGNORE
        logits = self.generator_logits(input_ids, selected).float()
        targets = labels[selected]
        gen_loss = F.cross_entropy(logits, targets, reduction="sum") / selected.sum().clamp(min=1)
        fake, replaced = replace_with_samples(logits, original, selected, self.temperature)
        disc_logits = self.discriminator(input_ids=fake).logits.float()
        # ELECTRA scores every real token, [CLS] and [SEP] included; packed blocks have no padding.
        scored = original != self.config.pad_token_id
        disc_loss = F.binary_cross_entropy_with_logits(disc_logits[scored], replaced[scored].float())
        with torch.no_grad():
            gen_acc = (logits.argmax(-1) == targets).float().mean() if targets.numel() else logits.new_zeros(())
            disc_acc = ((disc_logits[scored] > 0) == replaced[scored]).float().mean()
        return {"loss": gen_loss + self.disc_weight * disc_loss, "gen_loss": gen_loss, "disc_loss": disc_loss,
                "gen_acc": gen_acc, "disc_acc": disc_acc}


# ---------------------------------------------------------------- the objective


@register
class ELECTRA(Objective):
    """Detect which tokens a small masked-LM generator replaced."""

    name = "electra"
    unit = "packed"
    backbone = "electra"
    Config = ELECTRAConfig
    metrics = ("eval_rtd_acc", "eval_rtd_loss", "eval_gen_loss", "eval_gen_acc", "probe_acc")
    paper = "ELECTRA (Clark et al. 2020)"

    def __init__(self, cfg: ELECTRAConfig, vocab):
        super().__init__(cfg, vocab)
        if vocab.mask_id is None:
            raise ConfigError("objective.name='electra' needs a tokenizer with a mask token; this one has none")

    def transform(self, batch: Batch, rng: RowRandom) -> Batch:
        ids = batch["input_ids"]
        out = mask_tokens(ids, rng, self.vocab, self.cfg.mask_ratio, GENERATOR_MASK_SHARE, 0.0)
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
            disc = models.from_pretrained(AutoModelForPreTraining, model_cfg, self.vocab.size)
            if not isinstance(disc, ElectraForPreTraining):
                raise ConfigError(f"model.init_from={model_cfg.init_from!r} holds a {disc.config.model_type} model; "
                                  "objective 'electra' continues an ELECTRA discriminator")
            gen_dir = Path(model_cfg.init_from) / "generator"
            gen = (ElectraForMaskedLM.from_pretrained(str(gen_dir), local_files_only=True, attn_implementation="sdpa")
                   if gen_dir.is_dir() else ElectraForMaskedLM(generator_config(disc.config, c.generator_fraction)))
        else:
            disc = ElectraForPreTraining(discriminator_config(model_cfg, self.vocab))
            gen = ElectraForMaskedLM(generator_config(disc.config, c.generator_fraction))
        return ElectraPair(gen, disc, c.disc_weight, c.temperature)

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

    def export(self, model, out_dir):
        """The discriminator (``ElectraForPreTraining``) in ``out_dir``, the generator
        (``ElectraForMaskedLM``) in ``out_dir/generator``."""
        model.discriminator.save_pretrained(out_dir)
        model.generator.save_pretrained(str(Path(out_dir) / "generator"))
