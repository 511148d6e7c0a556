"""The bidirectional encoder that mlm, nsp, sop and simcse train, and what lets them mix.

Each of these objectives reads some (rows, T) id arrays of its batch through one shared
``transformers`` encoder and adds at most a small head. The network,
:class:`sslab.models.EncoderWithHeads`, encodes every array a batch needs in ONE forward call
(DistributedDataParallel allows one forward per backward), so BERT's ``mlm + nsp`` or SimCSE's
``simcse + mlm`` costs a single pass.
"""
from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from sslab import lazy, segment
from sslab.config import ModelConfig
from sslab.objectives.base import Objective, frame, frame_words, unwrap
from sslab.rng import RowRandom

if TYPE_CHECKING:
    from torch import nn
    from transformers import PretrainedConfig

    from sslab.models import Encoded, EncoderWithHeads

# The model side's modules, imported on first use: Ray Data's processes run transform() without them.
torch = lazy.module("torch")
F = lazy.module("torch.nn.functional")
transformers = lazy.module("transformers")
models = lazy.module("sslab.models")

HEADS_FILE = "heads.pt"  # the small heads (NSP/SOP classifiers) next to the exported encoder

# The module classes sentence-transformers 6 names in the modules.json it saves.
ST_TRANSFORMER = "sentence_transformers.base.modules.transformer.Transformer"
ST_POOLING = "sentence_transformers.sentence_transformer.modules.pooling.Pooling"


def build_encoder(model_cfg: ModelConfig, vocab, lm_head: bool, make_heads, padded: bool,
                  dropout: float | None = None) -> EncoderWithHeads:
    """The encoder of ``model.arch`` and preset (or ``model.init_from``), with ``make_heads(hidden)``.

    ``dropout`` is the objective's default when ``model.dropout`` is unset (SimCSE needs some).
    """
    if model_cfg.init_from:
        auto = transformers.AutoModelForMaskedLM if lm_head else transformers.AutoModel
        lm = models.from_pretrained(auto, model_cfg, vocab.size)
        heads = make_heads(lm.config.hidden_size)
        heads_file = Path(model_cfg.init_from) / HEADS_FILE
        if heads and heads_file.is_file():  # continued pretraining keeps the heads it had
            saved = torch.load(heads_file, map_location="cpu", weights_only=True)
            for name, head in heads.items():
                if name in saved:
                    head.load_state_dict(saved[name])
        return models.EncoderWithHeads(lm, heads, vocab.pad_id, padded)
    if model_cfg.dropout is None and dropout is not None:
        model_cfg = dataclasses.replace(model_cfg, dropout=dropout)
    config = models.encoder_config(model_cfg, vocab)
    if lm_head:
        lm = transformers.AutoModelForMaskedLM.from_config(config)
    else:  # BERT and RoBERTa would add a pooler no objective here trains; DDP rejects unused weights
        extra = {} if model_cfg.arch == "modernbert" else {"add_pooling_layer": False}
        lm = transformers.AutoModel.from_config(config, **extra)
    return models.EncoderWithHeads(lm, make_heads(config.hidden_size), vocab.pad_id, padded)


def write_sentence_transformers(out_dir: str, config: PretrainedConfig, pooling: str,
                                seq_len: int | None = None) -> None:
    """The sentence-transformers files beside an exported encoder, so that
    ``SentenceTransformer(out_dir)`` loads it and pools as the run did, offline.

    Written by hand (an export needs no sentence-transformers), as sentence-transformers 6 saves
    them: the model at the root, then ``1_Pooling`` with ``pooling`` (``mean`` over real tokens or
    the ``cls`` token's state). Inputs are cut at ``seq_len`` tokens, the longest the run trained
    on (unset: the model's positions). No Normalize module: the vectors are the pooled states the
    run trained on and the linear probe reads; cosine similarity, the default, ignores their length.
    """
    if seq_len is None:  # RoBERTa keeps pad_id + 1 positions for its offset
        seq_len = config.max_position_embeddings - (config.pad_token_id + 1 if config.model_type == "roberta" else 0)
    files = {
        "modules.json": [{"idx": 0, "name": "0", "path": "", "type": ST_TRANSFORMER},
                         {"idx": 1, "name": "1", "path": "1_Pooling", "type": ST_POOLING}],
        "sentence_bert_config.json": {"max_seq_length": seq_len, "do_lower_case": False},
        "config_sentence_transformers.json": {"model_type": "SentenceTransformer", "similarity_fn_name": "cosine"},
        "1_Pooling/config.json": {"embedding_dimension": config.hidden_size, "pooling_mode": pooling,
                                  "include_prompt": True},
    }
    (Path(out_dir) / "1_Pooling").mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (Path(out_dir) / name).write_text(json.dumps(content, indent=2) + "\n")


def pair_head(hidden: int) -> nn.Module:
    """BERT's pooler (dense + tanh on the first token) and a two-way classifier."""
    return torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 2))


def inputs_of(part: EncoderObjective, training: bool) -> tuple[str, ...]:
    return part.encoder_inputs if training or part.eval_inputs is None else part.eval_inputs


def keys_of(parts: list[EncoderObjective], training: bool) -> list[str]:
    """The id arrays to encode for several parts: a key two parts share is encoded once."""
    counts: Counter[str] = Counter()
    for part in parts:
        for k, n in Counter(inputs_of(part, training)).items():
            counts[k] = max(counts[k], n)
    return [k for k, n in counts.items() for _ in range(n)]


def outputs_for(part: EncoderObjective, encoded: dict[str, list[Encoded]], training: bool) -> list[Encoded]:
    """A part's encodings in the order of its inputs."""
    seen: Counter[str] = Counter()
    out = []
    for k in inputs_of(part, training):
        out.append(encoded[k][seen[k]])
        seen[k] += 1
    return out


class EncoderObjective(Objective):
    """An objective on the shared encoder: it names the arrays it encodes and scores their encodings.

    Alone or inside a mixture, the model is an :class:`EncoderWithHeads`; the objective only
    implements :meth:`part_loss` and :meth:`part_sums` on already-encoded arrays.
    """

    backbone = "encoder"
    encoder_inputs: ClassVar[tuple[str, ...]] = ("input_ids",)
    """Batch keys of the id arrays it reads through the encoder (a repeat is a second view)."""
    eval_inputs: ClassVar[tuple[str, ...] | None] = None
    """The same for the fixed-protocol evaluation, when it differs."""
    builds_input: ClassVar[bool] = False
    """Builds the model input from its unit (nsp, sop, simcse); at most one part of a mixture may."""
    lm_head: ClassVar[bool] = False
    """Needs the encoder's MLM head."""
    default_dropout: ClassVar[float | None] = None
    """Dropout when ``model.dropout`` is unset and the family's default does not suit."""

    def heads(self, hidden: int) -> dict[str, nn.Module]:
        """Small heads this objective adds on the encoder, by name."""
        return {}

    def part_loss(self, net: EncoderWithHeads, outs: list[Encoded], batch: dict) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def part_sums(self, net: EncoderWithHeads, outs: list[Encoded], batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # The Objective interface, for this objective alone.

    def build_model(self, model_cfg: ModelConfig) -> EncoderWithHeads:
        return build_encoder(model_cfg, self.vocab, self.lm_head, self.heads, padded=self.unit != "packed",
                             dropout=self.default_dropout)

    def loss(self, model, batch):
        encoded = model(batch, keys_of([self], training=True))
        return self.part_loss(unwrap(model), outputs_for(self, encoded, training=True), batch)

    def model_tokens(self, batch):
        return sum(batch[k].numel() for k in keys_of([self], training=True))  # SimCSE's view: twice

    def eval_sums(self, model, batch):
        encoded = model(batch, keys_of([self], training=False))
        return self.part_sums(unwrap(model), outputs_for(self, encoded, training=False), batch)

    def encoder(self, model):
        return unwrap(model).lm.base_model

    @property
    def pooling(self) -> str:
        """How the export pools a sentence vector: the mean over real tokens, as the linear probe
        reads it, unless the objective trains sentence vectors of its own (simcse)."""
        return "mean"

    def export(self, model, out_dir: str, seq_len: int | None = None) -> None:
        """The encoder in Hugging Face format (``AutoModel`` loads it), heads in ``heads.pt``, and
        the sentence-transformers files (``SentenceTransformer`` loads it, pooling by :attr:`pooling`)."""
        net = unwrap(model)
        net.lm.save_pretrained(out_dir)
        if len(net.heads):
            torch.save({k: h.state_dict() for k, h in net.heads.items()}, Path(out_dir) / HEADS_FILE)
        write_sentence_transformers(out_dir, net.lm.config, self.pooling, seq_len)


Pick = tuple[np.ndarray, np.ndarray]
"""One segment of each pair: per row, whether it is a row's ``b`` (else its ``a``), and which row's."""


def take(batch: dict, pick: Pick, words: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The segments ``pick`` names, ``(values, lengths)``: their ids, or with ``words`` their
    segmenter's word marks (:func:`sslab.segment.pair_column`)."""
    from_b, row = pick
    a, b = (batch[segment.pair_column(side) if words else side][row] for side in ("a", "b"))
    return np.where(from_b[:, None], b, a), np.where(from_b, batch["b_len"][row], batch["a_len"][row])


class PairObjective(EncoderObjective):
    """A two-way classification of segment pairs on the first token (NSP, SOP)."""

    unit = "pairs"
    builds_input = True

    def pair(self, batch: dict, rng: RowRandom) -> tuple[Pick, Pick, np.ndarray]:
        """Which segment goes first and which second (each a :data:`Pick`), and the 0/1 label per row."""
        raise NotImplementedError

    def transform(self, batch, rng):
        first, second, label = self.pair(batch, rng)
        width = 2 * batch["a"].shape[1] + 3
        out = {"input_ids": frame(self.vocab, width, take(batch, first), take(batch, second)),
               f"{self.name}_label": label.astype(np.int64)}
        if segment.pair_column("a") in batch:  # a segmenter's word marks, for the mlm part of a mixture
            out[segment.COLUMN] = frame_words(width, take(batch, first, words=True), take(batch, second, words=True))
        return out

    def eval_transform(self, batch, rng, protocol):
        return self.transform(batch, rng)  # no knobs: the protocol is the task itself

    def heads(self, hidden: int) -> dict[str, nn.Module]:
        return {self.name: pair_head(hidden)}

    def logits(self, net: EncoderWithHeads, outs: list[Encoded]) -> torch.Tensor:
        return net.heads[self.name](outs[0].hidden[:, 0]).float()

    def part_loss(self, net, outs, batch):
        logits, labels = self.logits(net, outs), batch[f"{self.name}_label"]
        acc = (logits.argmax(-1) == labels).float().mean()
        return F.cross_entropy(logits, labels), {f"{self.name}_acc": acc.detach()}

    def part_sums(self, net, outs, batch):
        logits, labels = self.logits(net, outs), batch[f"{self.name}_label"]
        return {"correct": (logits.argmax(-1) == labels).sum().float(), "count": torch.tensor(float(len(labels))),
                "positive": labels.sum().float()}

    def eval_metrics(self, sums):
        count = max(float(sums["count"]), 1.0)
        positive = float(sums["positive"])
        return {f"eval_{self.name}_acc": float(sums["correct"]) / count,
                # Always answering the commoner label: what a model that learnt nothing scores.
                f"eval_{self.name}_majority_acc": max(positive, count - positive) / count}
