"""Causal language modelling: predict each token from the ones before it (GPT-2, Radford et al. 2019)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sslab import lazy
from sslab.config import EvalConfig, ModelConfig, ObjectiveConfig
from sslab.objectives.base import IGNORE, Batch, Objective, register
from sslab.rng import RowRandom
from sslab.scoring import token_sums

if TYPE_CHECKING:
    from transformers import GPT2Config

# The model side's modules, imported on first use: Ray Data's processes run transform() without them.
torch = lazy.module("torch")
transformers = lazy.module("transformers")
models = lazy.module("sslab.models")


@dataclass(kw_only=True)
class CLMConfig(ObjectiveConfig):
    """Causal-LM knobs: none. Next-token prediction has nothing to tune on the data side; the
    model's size, dropout and the optimisation are set in ``model`` and ``train``."""

    name: str = "clm"


def decoder_config(cfg: ModelConfig, vocab) -> GPT2Config:
    """A GPT-2 config of preset size with SDPA attention."""
    hidden, layers, heads, inter = models.PRESETS[cfg.preset]
    # None means no dropout: modern LM pretraining runs without it (one pass over plenty of data
    # does not overfit), unlike GPT-2's own 0.1.
    drop = 0.0 if cfg.dropout is None else cfg.dropout
    return transformers.GPT2Config(
        vocab_size=vocab.size, n_positions=cfg.max_positions, n_embd=hidden, n_layer=layers, n_head=heads,
        n_inner=inter, resid_pdrop=drop, embd_pdrop=drop, attn_pdrop=drop, bos_token_id=vocab.cls_id,
        eos_token_id=vocab.sep_id, pad_token_id=vocab.pad_id, attn_implementation="sdpa")


def next_token_labels(ids: np.ndarray, pad_id: int) -> Batch:
    """Inputs as they are and labels equal to them (the model shifts them by one inside).

    Two positions are not scored: padding (packed blocks have none), and each block's closing
    [SEP]. That one is an artefact of cutting the stream into blocks, not a document end, and it
    always sits in the last column: a model with absolute positions would predict it for free,
    flattering the perplexity and accuracy by 1/seq_len.
    """
    labels = np.where(ids == pad_id, IGNORE, ids)
    labels[:, -1] = IGNORE
    return {"input_ids": ids.astype(np.int64), "labels": labels.astype(np.int64)}


@register
class CLM(Objective):
    """Predict every next token from the left context only."""

    name = "clm"
    unit = "packed"
    backbone = "decoder"
    Config = CLMConfig
    metrics = ("eval_ppl", "eval_clm_loss", "eval_clm_acc", "probe_acc")
    baselines = {"eval_unigram_ppl": "eval_ppl", "eval_unigram_acc": "eval_clm_acc"}
    paper = "GPT-2 (Radford et al. 2019)"

    def transform(self, batch: Batch, rng: RowRandom) -> Batch:
        return next_token_labels(batch["input_ids"], self.vocab.pad_id)

    def eval_transform(self, batch: Batch, rng: RowRandom, protocol: EvalConfig) -> Batch:
        return next_token_labels(batch["input_ids"], self.vocab.pad_id)

    def build_model(self, model_cfg: ModelConfig) -> torch.nn.Module:
        if model_cfg.init_from:
            return models.from_pretrained(transformers.AutoModelForCausalLM, model_cfg, self.vocab.size)
        return transformers.GPT2LMHeadModel(decoder_config(model_cfg, self.vocab))

    def loss(self, model, batch):
        out = model(input_ids=batch["input_ids"], labels=batch["labels"])
        return out.loss, {}

    def eval_sums(self, model, batch):
        logits = model(input_ids=batch["input_ids"]).logits[:, :-1]
        labels = batch["labels"][:, 1:]  # the token after each position
        scored = labels != IGNORE
        return token_sums(logits[scored].float(), labels[scored], self.vocab.size)

    def eval_metrics(self, sums):
        count = max(float(sums["count"]), 1.0)
        loss = float(sums["nll"]) / count
        p = sums["target_hist"][sums["target_hist"] > 0] / count
        return {
            "eval_clm_loss": loss,
            "eval_ppl": float(np.exp(loss)),
            "eval_clm_acc": float(sums["correct"]) / count,
            # The best a context-blind model could do on these very targets: exp of their entropy.
            "eval_unigram_ppl": float(np.exp(-(p * np.log(p)).sum())),
            "eval_unigram_acc": float(p.max()) if p.size else 0.0,
        }

    def encoder(self, model):
        # GPT2Model (``model.transformer``) for our own builds; the base model of any causal LM loaded
        # by init_from. Its states are causal: the probe mean-pools them over the real tokens.
        return model.base_model
