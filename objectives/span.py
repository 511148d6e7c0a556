"""T5 span corruption (Raffel et al. 2020, "Exploring the Limits of Transfer Learning", sec. 3.1.4).

Random spans of the block's body are dropped from the encoder input, each replaced by one
sentinel (``<extra_id_i>`` for the i-th span); the decoder writes the dropped spans back, each
after its sentinel. The spans are laid out by T5's own ``random_spans_noise_mask``
(google-research/text-to-text-transfer-transformer, ``t5/data/preprocessors.py``), vectorised
over rows: the counts depend only on the length, so every row of a batch has the same input and
target widths and nothing is padded. As in T5, a body opens on a clean span and closes on a
noise span: its first token is never corrupted and its last always is.
"""
from __future__ import annotations

from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np

from sslab import lazy
from sslab.config import EvalConfig, ModelConfig, ObjectiveConfig, require, require_fraction
from sslab.errors import ConfigError
from sslab.objectives.base import Batch, Objective, encoder_decoder_tokens, register
from sslab.rng import RowRandom
from sslab.scoring import token_sums

if TYPE_CHECKING:
    from transformers import T5Config

# The model side's modules, imported on first use: Ray Data's processes run transform() without them.
torch = lazy.module("torch")
transformers = lazy.module("transformers")
models = lazy.module("sslab.models")

NUM_SENTINELS = 100  # T5's count; fixed so the vocabulary does not depend on searched knobs


@dataclass(kw_only=True)
class SpanConfig(ObjectiveConfig):
    """Span-corruption knobs: how much of the body is corrupted, and in how long spans."""

    name: str = "span"
    noise_density: float = 0.15
    """Share of the block's body tokens that are corrupted (T5: 0.15)."""
    mean_span: float = 3.0
    """Mean length of a corrupted span, in tokens (T5: 3); 1 corrupts single tokens."""

    def __post_init__(self):
        require_fraction("objective.noise_density", self.noise_density)
        require(self.mean_span >= 1, "objective.mean_span", self.mean_span, "a number >= 1")


# ---------------------------------------------------------------- the noise mask


def span_counts(length: int, density: float, mean_span: float) -> tuple[int, int]:
    """(noise tokens, noise spans) of a body of ``length`` tokens, as T5 counts them.

    One departure from T5: the spans are capped at the non-noise tokens, since each noise span
    needs a non-noise token before it (T5 would silently merge spans there instead).
    """
    num_noise = min(max(round(length * density), 1), length - 1)
    num_spans = max(1, round(num_noise / mean_span))
    return num_noise, min(num_spans, length - num_noise)


def random_segmentation(rng: RowRandom, num_items: int, num_segments: int, stream: int) -> np.ndarray:
    """Lengths (rows, num_segments) of a uniformly random split of ``num_items`` into non-empty parts.

    T5 shuffles ``num_segments - 1`` segment starts among the ``num_items - 1`` gaps; here each
    row's gaps get uniform keys, and the smallest ``num_segments - 1`` keys mark the starts.
    """
    rows = len(rng.keys)
    starts = np.zeros((rows, num_items), dtype=bool)
    starts[:, 0] = True
    if num_segments > 1:
        keys = rng.uniform(num_items - 1, stream=stream)
        cut = np.partition(keys, num_segments - 2, axis=1)[:, num_segments - 2, None]
        starts[:, 1:] = keys <= cut
    first = np.nonzero(starts)[1].reshape(rows, num_segments)  # each row has num_segments starts
    return np.diff(first, axis=1, append=num_items)


def span_index(rng: RowRandom, length: int, num_noise: int, num_spans: int) -> np.ndarray:
    """Per position of a body, the index of its span in the interleaving non-noise, noise, non-noise, …

    Even values are non-noise spans, odd ones noise: span ``2i + 1`` is noise span ``i``, and it
    follows non-noise span ``2i`` (T5's layout, which always ends on a noise span).
    """
    noise = random_segmentation(rng, num_noise, num_spans, stream=0)
    clean = random_segmentation(rng, length - num_noise, num_spans, stream=1)
    lengths = np.stack([clean, noise], axis=2).reshape(len(noise), 2 * num_spans)
    boundaries = np.zeros((len(noise), length), dtype=np.int64)
    np.put_along_axis(boundaries, np.cumsum(lengths, axis=1)[:, :-1], 1, axis=1)
    return np.cumsum(boundaries, axis=1)


def collapse(body: np.ndarray, drop: np.ndarray, span: np.ndarray, sentinels: np.ndarray, width: int) -> np.ndarray:
    """``body`` with each run of ``drop`` positions replaced by the sentinel of its span (span // 2);
    every row comes out ``width`` tokens long."""
    starts = drop.copy()
    starts[:, 1:] &= ~drop[:, :-1]
    values = np.where(drop, sentinels[span // 2], body)
    return values[~drop | starts].reshape(len(body), width)


def corrupt_spans(ids: np.ndarray, rng: RowRandom, sentinels: np.ndarray, density: float, mean_span: float,
                  knobs: tuple[str, str] = ("objective.noise_density", "objective.mean_span")) -> Batch:
    """T5 span corruption of (rows, L) ``[CLS] body [SEP]`` blocks; ``input_ids`` and ``labels``.

    ``input_ids`` is ``[CLS]``, the body with each noise span replaced by its sentinel, ``[SEP]``;
    ``labels`` is each span's sentinel followed by its tokens, then ``[SEP]``. ``knobs`` name the
    settings in the error raised when the block needs more spans than there are sentinels.
    """
    width = ids.shape[1]
    length = width - 2
    num_noise, num_spans = span_counts(length, density, mean_span)
    if num_spans > len(sentinels):
        raise ConfigError(f"{knobs[0]}={density:g} with {knobs[1]}={mean_span:g} needs {num_spans} noise spans in a "
                          f"block of train.seq_len={width}, more than the {len(sentinels)} sentinel tokens; raise "
                          f"{knobs[1]}, lower {knobs[0]} or lower train.seq_len")
    body, span = ids[:, 1:-1], span_index(rng, length, num_noise, num_spans)
    noise = span % 2 == 1
    inputs = collapse(body, noise, span, sentinels, length - num_noise + num_spans)
    # The targets are the inputs' complement: non-noise span i gives way to sentinel i, and
    # noise span i follows it.
    targets = collapse(body, ~noise, span, sentinels, num_noise + num_spans)
    return {"input_ids": np.concatenate([ids[:, :1], inputs, ids[:, -1:]], axis=1).astype(np.int64),
            "labels": np.concatenate([targets, ids[:, -1:]], axis=1).astype(np.int64)}


# ---------------------------------------------------------------- the model


def t5_config(cfg: ModelConfig, vocab) -> T5Config:
    """A T5 v1.1-style config of preset size (gated-GeLU, no dropout unless asked) with SDPA.

    The output layer stays tied to the embeddings, scaled by d_model**-0.5 (T5 v1.0): the
    installed ``transformers`` ties T5's always, and ``tie_word_embeddings=False`` would only drop
    the scaling (an initial loss near 80). T5 has relative position buckets, so
    ``model.max_positions`` does not bound it.
    """
    hidden, layers, heads, inter = models.PRESETS[cfg.preset]
    return transformers.T5Config(
        vocab_size=vocab.size, d_model=hidden, d_ff=inter, d_kv=hidden // heads, num_layers=layers,
        num_decoder_layers=layers, num_heads=heads, feed_forward_proj="gated-gelu",
        dropout_rate=0.0 if cfg.dropout is None else cfg.dropout, pad_token_id=vocab.pad_id,
        eos_token_id=vocab.sep_id, decoder_start_token_id=vocab.pad_id, attn_implementation="sdpa")


@register
class Span(Objective):
    """Write back the spans dropped from the input, each after its sentinel (T5)."""

    name = "span"
    unit = "packed"
    backbone = "t5"
    tokenizer_kind = "unigram"  # T5's SentencePiece model; tokenizer.kind=bpe (or wordpiece) keeps another
    Config = SpanConfig
    metrics = ("eval_span_loss", "eval_span_acc", "probe_acc")
    baselines = {"eval_unigram_loss": "eval_span_loss", "eval_unigram_acc": "eval_span_acc"}
    paper = "T5 span corruption (Raffel et al. 2020)"

    def __init__(self, cfg: SpanConfig, vocab):
        super().__init__(cfg, vocab)
        if len(vocab.extra_ids) < NUM_SENTINELS:
            raise ConfigError(f"objective.name='span' needs the {NUM_SENTINELS} sentinel tokens of "
                              f"Span.extra_tokens in the tokenizer; it has {len(vocab.extra_ids)}")
        self.sentinels = np.asarray(vocab.extra_ids[:NUM_SENTINELS], dtype=np.int64)

    @classmethod
    def extra_tokens(cls, cfg: SpanConfig) -> list[str]:
        return [f"<extra_id_{i}>" for i in range(NUM_SENTINELS)]

    def check_seq_len(self, seq_len: int, protocol: EvalConfig | None = None) -> None:
        """Raise the :class:`ConfigError` that ``transform`` (or ``eval_transform``) would raise on
        blocks of ``seq_len`` tokens, before any data is read."""
        block = np.zeros((1, seq_len), dtype=np.int64)
        rng = RowRandom(0, 0, np.zeros(1))
        self.transform({"input_ids": block}, rng)
        if protocol is not None:
            self.eval_transform({"input_ids": block}, rng, protocol)

    def transform(self, batch: Batch, rng: RowRandom) -> Batch:
        c = self.cfg
        return corrupt_spans(batch["input_ids"], rng, self.sentinels, c.noise_density, c.mean_span)

    def eval_transform(self, batch: Batch, rng: RowRandom, protocol: EvalConfig) -> Batch:
        return corrupt_spans(batch["input_ids"], rng, self.sentinels, protocol.mask_ratio, protocol.mean_span,
                             knobs=("eval.mask_ratio", "eval.mean_span"))

    def build_model(self, model_cfg: ModelConfig) -> torch.nn.Module:
        if model_cfg.init_from:
            return models.from_pretrained(transformers.AutoModelForSeq2SeqLM, model_cfg, self.vocab.size)
        return transformers.T5ForConditionalGeneration(t5_config(model_cfg, self.vocab))

    def model_tokens(self, batch):
        return encoder_decoder_tokens(batch)

    def loss(self, model, batch):
        out = model(input_ids=batch["input_ids"], labels=batch["labels"])
        return out.loss, {}

    def eval_sums(self, model, batch):
        labels = batch["labels"]
        logits = model(input_ids=batch["input_ids"], labels=labels).logits
        # Score the corrupted tokens only: the sentinels and the closing [SEP] follow from the
        # layout, and would flatter the accuracy.
        scored = ~torch.isin(labels, torch.as_tensor(self.sentinels, device=labels.device))
        scored[:, -1] = False
        return token_sums(logits[scored].float(), labels[scored], self.vocab.size)

    def eval_metrics(self, sums):
        count = max(float(sums["count"]), 1.0)
        p = sums["target_hist"][sums["target_hist"] > 0] / count
        return {
            "eval_span_loss": float(sums["nll"]) / count,
            "eval_span_acc": float(sums["correct"]) / count,
            # The best a context-blind model could do on these very targets.
            "eval_unigram_loss": float(-(p * np.log(p)).sum()),
            "eval_unigram_acc": float(p.max()) if p.size else 0.0,
        }

    def encoder(self, model):
        return model.encoder
