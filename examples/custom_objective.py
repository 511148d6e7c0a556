"""A new objective from outside the package: SpanBERT-style masking (Joshi et al. 2020), which
masks contiguous spans instead of single tokens. It keeps MLM's loss and fixed-protocol eval,
so its eval_mlm_loss ranks against plain MLM's in one search.

    python examples/custom_objective.py                       (tiny model, about 2 minutes on 2 CPUs)
    python examples/custom_objective.py objective.mean_span=5 train.max_steps=500
"""
import sys
from dataclasses import dataclass

import numpy as np

import sslab
from sslab.objectives import register
from sslab.objectives.mlm import IGNORE, MLM, MLMConfig


@dataclass(kw_only=True)
class SpanMLMConfig(MLMConfig):
    name: str = "span_mlm"
    mean_span: float = 3.0
    """Mean length of a masked span (geometric)."""


@register
class SpanMLM(MLM):
    """Mask whole spans: each token starts one with probability mask_ratio / mean_span."""

    name = "span_mlm"
    Config = SpanMLMConfig

    def transform(self, batch, rng):
        ids = batch["input_ids"]
        t = ids.shape[1]
        starts = rng.uniform(t, stream=0) < self.cfg.mask_ratio / self.cfg.mean_span
        lengths = 1 + np.floor(np.log(rng.uniform(t, stream=1)) / np.log(1 - 1 / self.cfg.mean_span))
        ends = np.where(starts, np.arange(t) + lengths, 0)
        selected = (np.maximum.accumulate(ends, axis=1) > np.arange(t)) & ~np.isin(ids, self.vocab.special_ids)
        inputs = np.where(selected, self.vocab.mask_id, ids)
        return {"input_ids": inputs.astype(np.int64), "labels": np.where(selected, ids, IGNORE).astype(np.int64)}


if __name__ == "__main__":
    config = {"objective": {"name": "span_mlm", "mask_ratio": 0.15}, "corpus": {"source": "synthetic"},
              "model": {"preset": "tiny"}, "run": {"out": "runs/examples/span_mlm"},
              "train": {"seq_len": 64, "batch_size": 32, "max_steps": 200, "eval_every": 100, "warmup_steps": 20}}
    result = sslab.pretrain(config, overrides=sys.argv[1:])
    print({k: round(v, 4) for k, v in result.fixed_protocol_metrics.items()})
