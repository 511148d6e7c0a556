"""BART denoising (Lewis et al. 2020): text infilling, optional sentence permutation, and a
sequence-to-sequence model that reconstructs the whole original block.

Text infilling draws span lengths from Poisson(λ) until they cover ``mask_ratio`` of the body,
places them at random without overlap, and replaces each span by ONE mask token, so the model
must also work out how many tokens a mask stands for; a zero-length span inserts a mask.
Everything is vectorised over the rows of a batch, on :class:`RowRandom` draws.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sslab import lazy
from sslab.config import EvalConfig, ModelConfig, ObjectiveConfig, require, require_fraction
from sslab.errors import ConfigError
from sslab.objectives.base import IGNORE, Batch, Objective, encoder_decoder_tokens, register
from sslab.rng import RowRandom
from sslab.scoring import token_sums, unigram_baseline

if TYPE_CHECKING:
    from transformers import BartConfig

# The model side's modules, imported on first use: Ray Data's processes run transform() without them.
torch = lazy.module("torch")
F = lazy.module("torch.nn.functional")
transformers = lazy.module("transformers")
models = lazy.module("sslab.models")


@dataclass(kw_only=True)
class DenoiseConfig(ObjectiveConfig):
    """BART's noising knobs. Its best mix (Lewis et al. 2020, table 1) was text infilling plus
    sentence permutation; infilling alone is the default, ``permute_sentences`` adds the other."""

    name: str = "denoise"
    mask_ratio: float = 0.3
    """Share of the body's tokens inside masked spans (BART: 0.3)."""
    poisson_lambda: float = 3.0
    """Mean of the Poisson distribution the span lengths are drawn from (BART: 3)."""
    permute_sentences: bool = False
    """Shuffle the sentences of each document in a block before masking (BART's sentence
    permutation); sentences end at a sentence-ending token (Latin or CJK: ``.!?。！？；``, see
    :attr:`~sslab.tokenizer.Vocab.sentence_end`) and never cross a [SEP]."""

    def __post_init__(self):
        require_fraction("objective.mask_ratio", self.mask_ratio)
        require(isinstance(self.poisson_lambda, (int, float)) and self.poisson_lambda > 0,
                "objective.poisson_lambda", self.poisson_lambda, "a number > 0")
        require(isinstance(self.permute_sentences, bool), "objective.permute_sentences", self.permute_sentences,
                "true or false")


# ---------------------------------------------------------------- the corruption


@functools.lru_cache(maxsize=8)
def poisson_cdf(lam: float) -> np.ndarray:
    """CDF of Poisson(``lam``) at 0, 1, …, far enough that the tail beyond holds < 1e-15."""
    top = int(lam + 12 * math.sqrt(lam) + 12)
    log_pmf = -lam + np.cumsum(np.r_[0.0, math.log(lam) - np.log(np.arange(1, top + 1))])
    return np.cumsum(np.exp(log_pmf))


def poisson_lengths(u: np.ndarray, lam: float) -> np.ndarray:
    """Poisson(``lam``) draws from uniforms ``u`` by the inverse CDF (a table lookup)."""
    cdf = poisson_cdf(float(lam))
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)


def sentence_order(body: np.ndarray, rng: RowRandom, vocab) -> np.ndarray:
    """A permutation of each row's body positions that shuffles whole sentences within documents.

    Each sentence gets a random key; a stable sort by (document, key) keeps the tokens of a
    sentence together and in order, and each [SEP] last in its document.
    """
    is_sep = body == vocab.sep_id
    marks = vocab.sentence_end[body]
    ends = marks.copy()
    ends[:, :-1] &= ~marks[:, 1:]  # a run of marks (``?!``, ``……``, ``。。。``) ends one sentence, at its last
    ends |= is_sep
    sentence = np.cumsum(ends, axis=1) - ends  # a sentence's last token belongs to it
    doc = np.cumsum(is_sep, axis=1) - is_sep
    key = np.take_along_axis(rng.uniform(body.shape[1], stream=2), sentence, axis=1)
    key[is_sep] = 2.0  # above every uniform
    return np.lexsort((key, doc), axis=-1)


def span_lengths(rng: RowRandom, body: int, target: int, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """(rows, body) span lengths summing to ``target`` per row, and each row's number of spans.

    Spans are kept while the total before them is under ``target``; the last one is cut to make
    the total exact. At most ``target`` spans are kept, so that one mask per span never makes the
    noised block longer than the original; only at small λ, where most spans are empty, does a
    row need more, and then its last kept span takes up the rest of the total.
    """
    lengths = poisson_lengths(rng.uniform(body, stream=0), lam)
    before = np.cumsum(lengths, axis=1) - lengths
    count = np.minimum((before < target).sum(1), target)
    lengths = np.where(np.arange(body) < count[:, None], lengths, 0)
    rows = np.flatnonzero(count)
    lengths[rows, count[rows] - 1] = target - before[rows, count[rows] - 1]
    return lengths, count


def span_starts(rng: RowRandom, lengths: np.ndarray, count: np.ndarray, body: int, target: int) -> np.ndarray:
    """Body positions where the spans start: random, non-overlapping, in order.

    The ``body - target`` unmasked tokens fall into the gaps before, between and after the
    spans uniformly over all arrangements (stars and bars: ``count`` bar slots drawn among
    ``free + count``). Between spans at least one token is kept, so spans stay apart, unless
    the row has too few unmasked tokens for that.
    """
    free = body - target
    gap = (free >= count - 1).astype(np.int64)  # the least gap between two spans
    slots = free - gap * np.maximum(count - 1, 0) + count
    keys = rng.uniform(body + 1, stream=1)
    keys[np.arange(body + 1) >= slots[:, None]] = 2.0  # outside this row's slots
    picked = np.argsort(keys, axis=1)[:, :body]
    j = np.arange(body)
    bars = np.sort(np.where(j < count[:, None], picked, body + 1), axis=1)
    before = np.cumsum(lengths, axis=1) - lengths
    starts = bars - j + gap[:, None] * j + before
    return np.where(j < count[:, None], starts, body)


def counts_at(positions: np.ndarray, selected: np.ndarray, width: int) -> np.ndarray:
    """(rows, width) counts of each row's selected ``positions``."""
    rows = np.nonzero(selected)[0]
    n = len(positions)
    return np.bincount(rows * width + positions[selected], minlength=n * width).reshape(n, width)


def mask_spans(starts: np.ndarray, lengths: np.ndarray, count: np.ndarray, body: int):
    """Which body positions are masked, and how many input tokens each body position emits
    (its insertions, then its token or, at a span's first position, the span's one mask; the
    rest of a span emits nothing), plus the insertions after the last body token."""
    spans = np.arange(body) < count[:, None]
    positive = spans & (lengths > 0)
    opens = counts_at(starts, positive, body + 1)
    # A difference array: +1 where a span starts, -1 where it ends, then a running sum.
    masked = np.cumsum(opens - counts_at(starts + lengths, positive, body + 1), axis=1)[:, :body] > 0
    inserts = counts_at(starts, spans & (lengths == 0), body + 1)
    emitted = inserts[:, :body] + (~masked | (opens[:, :body] > 0))
    return masked, emitted, inserts[:, body]


def collapse(ids: np.ndarray, body: np.ndarray, masked: np.ndarray, emitted: np.ndarray, trailing: np.ndarray,
             vocab) -> tuple[np.ndarray, np.ndarray]:
    """The noised block, padded to the block's width, and its attention mask: every output slot is
    a mask unless a kept body token is scattered into it."""
    n, width = ids.shape
    slot = np.cumsum(emitted, axis=1)  # output column of each body position's last emission
    length = 2 + slot[:, -1] + trailing  # [CLS] + body + trailing insertions + [SEP]
    real = np.arange(width) < length[:, None]
    inputs = np.where(real, vocab.mask_id, vocab.pad_id)
    inputs[:, 0] = vocab.cls_id
    inputs[np.arange(n), length - 1] = ids[:, -1]
    kept = ~masked
    inputs[np.nonzero(kept)[0], slot[kept]] = body[kept]
    return inputs.astype(np.int64), real.astype(np.int64)


def infill(ids: np.ndarray, rng: RowRandom, vocab, ratio: float, lam: float, permute: bool = False) -> Batch:
    """BART noising of full packed blocks (rows, L): the body is positions 1..L-2.

    Returns ``input_ids`` (the noised block, padded to L), ``attention_mask``, ``labels`` (the
    original block) and ``noised`` (1 where a label token was inside a masked span).
    """
    body = ids[:, 1:-1].astype(np.int64)
    b = body.shape[1]
    order = sentence_order(body, rng, vocab) if permute else np.broadcast_to(np.arange(b), body.shape)
    body = np.take_along_axis(body, order, axis=1)
    target = int(round(b * ratio))
    lengths, count = span_lengths(rng, b, target, lam)
    starts = span_starts(rng, lengths, count, b, target)
    masked, emitted, trailing = mask_spans(starts, lengths, count, b)
    inputs, attention = collapse(ids, body, masked, emitted, trailing, vocab)
    noised = np.zeros(ids.shape, dtype=np.int64)
    np.put_along_axis(noised[:, 1:-1], order, masked.astype(np.int64), axis=1)  # back to the original order
    return {"input_ids": inputs, "attention_mask": attention, "labels": ids.astype(np.int64), "noised": noised}


# ---------------------------------------------------------------- the objective


def bart_config(cfg: ModelConfig, vocab) -> BartConfig:
    """A BART config of preset size (encoder and decoder alike) with SDPA attention."""
    hidden, layers, heads, inter = models.PRESETS[cfg.preset]
    drop = 0.1 if cfg.dropout is None else cfg.dropout  # BART's own
    return transformers.BartConfig(
        vocab_size=vocab.size, d_model=hidden, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=inter, decoder_ffn_dim=inter,
        max_position_embeddings=cfg.max_positions, dropout=drop, attention_dropout=drop, pad_token_id=vocab.pad_id,
        bos_token_id=vocab.cls_id, eos_token_id=vocab.sep_id, forced_eos_token_id=vocab.sep_id,
        decoder_start_token_id=vocab.sep_id,  # BART starts decoding with </s>
        attn_implementation="sdpa")


@register
class Denoise(Objective):
    """Reconstruct the original block from its noised version (encoder-decoder)."""

    name = "denoise"
    unit = "packed"
    backbone = "bart"
    Config = DenoiseConfig
    metrics = ("eval_denoise_loss", "eval_infill_loss", "eval_infill_acc", "probe_acc")
    baselines = {"eval_unigram_loss": "eval_infill_loss", "eval_unigram_acc": "eval_infill_acc"}
    paper = "BART (Lewis et al. 2020)"

    def __init__(self, cfg: DenoiseConfig, vocab):
        super().__init__(cfg, vocab)
        if vocab.mask_id is None:
            raise ConfigError("objective.name='denoise' needs a tokenizer with a mask token; this one has none")
        if cfg.permute_sentences and vocab.sentence_end is None:
            raise ConfigError("objective.permute_sentences=True needs a tokenizer that marks sentence ends")

    def transform(self, batch: Batch, rng: RowRandom) -> Batch:
        c = self.cfg
        return infill(batch["input_ids"], rng, self.vocab, c.mask_ratio, c.poisson_lambda, c.permute_sentences)

    def eval_transform(self, batch: Batch, rng: RowRandom, protocol: EvalConfig) -> Batch:
        return infill(batch["input_ids"], rng, self.vocab, protocol.mask_ratio, protocol.mean_span)

    def build_model(self, model_cfg: ModelConfig) -> torch.nn.Module:
        if model_cfg.init_from:
            return models.from_pretrained(transformers.AutoModelForSeq2SeqLM, model_cfg, self.vocab.size)
        return transformers.BartForConditionalGeneration(bart_config(model_cfg, self.vocab))

    def model_tokens(self, batch):
        return encoder_decoder_tokens(batch)

    def loss(self, model, batch):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        return out.loss, {}

    def eval_sums(self, model, batch):
        labels = batch["labels"]
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).logits
        scored = labels != IGNORE
        restored = scored & batch["noised"].bool()  # the tokens that were inside masked spans
        infill = token_sums(logits[restored].float(), labels[restored], self.vocab.size)
        return {
            "nll": F.cross_entropy(logits[scored].float(), labels[scored], reduction="sum"),
            "count": scored.sum().float(),
            "infill_nll": infill["nll"],
            "infill_correct": infill["correct"],
            "infill_count": infill["count"],
            "target_hist": infill["target_hist"],  # of the restored targets: the unigram baseline's
        }

    def eval_metrics(self, sums):
        count = max(float(sums["infill_count"]), 1.0)
        return {
            "eval_denoise_loss": float(sums["nll"]) / max(float(sums["count"]), 1.0),
            "eval_infill_loss": float(sums["infill_nll"]) / count,
            "eval_infill_acc": float(sums["infill_correct"]) / count,
            **unigram_baseline(sums["target_hist"]),
        }

    def encoder(self, model):
        return model.get_encoder()
