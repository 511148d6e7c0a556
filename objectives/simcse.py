"""Unsupervised SimCSE (Gao et al. 2021): a sentence and itself under two dropout masks are positives.

The batch passes the encoder twice in one forward call (rows stacked, so dropout differs per
copy); InfoNCE scores each sentence's second view against every second view of the global batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from sslab import lazy, segment
from sslab.config import ObjectiveConfig, require
from sslab.objectives.base import frame, frame_words, register
from sslab.objectives.encoder import EncoderObjective

# The model side's modules, imported on first use: Ray Data's processes run transform() without them.
torch = lazy.module("torch")
dist = lazy.module("torch.distributed")
F = lazy.module("torch.nn.functional")
models = lazy.module("sslab.models")
sts = lazy.module("sslab.sts")

RETRIEVAL_POOL = 16  # candidates per retrieval query at evaluation (chance: 1/16)


@dataclass(kw_only=True)
class SimCSEConfig(ObjectiveConfig):
    """SimCSE knobs. The MLM auxiliary loss is the mixture ``simcse+mlm`` (weight ``objective.mlm_weight``)."""

    name: str = "simcse"
    tau: float = 0.05
    """Temperature of the InfoNCE softmax over cosine similarities (SimCSE's best: 0.05)."""
    pooling: Literal["cls", "mean"] = "mean"
    """Sentence vector: the mean of the states of real tokens, or the first token's state
    (SimCSE's choice on a pretrained BERT; from scratch it collapsed to one vector in eval mode)."""

    def __post_init__(self):
        require(self.tau > 0, "objective.tau", self.tau, "a positive number")


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@register
class SimCSE(EncoderObjective):
    """Contrastive sentence embeddings with dropout as the only augmentation."""

    name = "simcse"
    unit = "sentences"
    Config = SimCSEConfig
    metrics = ("eval_align", "eval_uniform", "eval_retrieval_acc", "eval_retrieval_chance", "eval_sts_spearman",
               "probe_acc")
    baselines = {"eval_retrieval_chance": "eval_retrieval_acc"}
    paper = "SimCSE (Gao et al. 2021); alignment and uniformity (Wang & Isola 2020); STS (Cer et al. 2017)"
    builds_input = True
    encoder_inputs = ("view", "view")  # the same ids twice: two dropout masks
    eval_unit = "halves"  # retrieval: find a document's second half from its first, among 16
    eval_inputs = ("view", "partner")
    default_dropout = 0.1  # dropout IS the augmentation; SimCSE's best is 0.1

    def transform(self, batch, rng):
        view = self.sentence(batch["a"], batch["a_len"])
        out = {"view": view, "input_ids": view.copy()}  # input_ids: what an MLM part may mask
        if segment.pair_column("a") in batch:  # a segmenter's word marks, for that MLM part
            out[segment.COLUMN] = frame_words(view.shape[1], (batch[segment.pair_column("a")], batch["a_len"]))
        return out

    def eval_transform(self, batch, rng, protocol):
        keep = batch["b_len"] > 0  # a one-sentence document has no second half
        view = self.sentence(batch["a"][keep], batch["a_len"][keep])
        return {"view": view, "partner": self.sentence(batch["b"][keep], batch["b_len"][keep]),
                "input_ids": view.copy()}

    def sentence(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return frame(self.vocab, ids.shape[1] + 2, (ids, lengths))

    @property
    def pooling(self) -> str:
        return self.cfg.pooling

    def sentence_pooling(self) -> str:
        return self.cfg.pooling

    def pool(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Sentence vectors by ``objective.pooling``: what ``SentenceTransformer`` on the export returns."""
        return sts.pooled(hidden, ids != self.vocab.pad_id, self.cfg.pooling)

    def embed(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Unit-length sentence vectors (float32): :meth:`pool`, normalised."""
        return F.normalize(self.pool(hidden, ids).float(), dim=-1)

    def part_loss(self, net, outs, batch):
        z1, z2 = (self.embed(o.hidden, batch["view"]) for o in outs)
        offset = 0
        if distributed():
            offset = dist.get_rank() * len(z1)
            z2 = models.GatherWithGrad.apply(z2)
        logits = z1 @ z2.T / self.cfg.tau
        target = torch.arange(len(z1), device=z1.device) + offset
        acc = (logits.argmax(-1) == target).float().mean()
        return F.cross_entropy(logits, target), {"simcse_acc": acc.detach()}

    def part_sums(self, net, outs, batch):
        za, zb = self.embed(outs[0].hidden, batch["view"]), self.embed(outs[1].hidden, batch["partner"])
        sums = {k: torch.zeros((), device=za.device) for k in
                ("align", "count", "unif", "unif_pairs", "retrieved", "queries", "chance")}
        sums["align"] += (za - zb).pow(2).sum()
        sums["count"] += len(za)
        for start in range(0, len(za), RETRIEVAL_POOL):  # fixed-size pools, whatever the batch size
            a, b = za[start:start + RETRIEVAL_POOL], zb[start:start + RETRIEVAL_POOL]
            if len(a) < 2:
                continue
            hits = (a @ b.T).argmax(-1) == torch.arange(len(a), device=a.device)
            sums["retrieved"] += hits.sum()
            sums["queries"] += len(a)
            sums["chance"] += 1.0  # each query of a pool of n has chance 1/n; n queries: 1
            dist2 = torch.cdist(a, a).pow(2)
            upper = torch.triu(torch.ones_like(dist2, dtype=torch.bool), diagonal=1)
            sums["unif"] += torch.exp(-2 * dist2[upper]).sum()
            sums["unif_pairs"] += upper.sum()
        return sums

    def eval_metrics(self, sums):
        queries = max(float(sums["queries"]), 1.0)
        return {
            # Wang & Isola 2020: E||f(x) - f(x+)||^2 (lower: positives closer) and
            # log E exp(-2||f(x) - f(y)||^2) (lower: vectors spread over the sphere).
            "eval_align": float(sums["align"]) / max(float(sums["count"]), 1.0),
            "eval_uniform": float(np.log(max(float(sums["unif"]), 1e-30) / max(float(sums["unif_pairs"]), 1.0))),
            "eval_retrieval_acc": float(sums["retrieved"]) / queries,
            "eval_retrieval_chance": float(sums["chance"]) / queries,
        }
