"""Fixed-protocol evaluation: the metrics that compare runs whatever their training knobs.

Every worker scores its split of the validation blocks (masked by the fixed protocol, the same
masks in every run); the additive sums are all-reduced, so the metric does not depend on the
number of workers. Rank 0 then fits the linear probe on frozen, mean-pooled encoder states and,
for an objective that trains sentence vectors, scores graded sentence pairs (:mod:`sslab.sts`).
"""
from __future__ import annotations

import numpy as np
import ray.train
import torch
import torch.distributed as dist

from sslab import sts
from sslab.objectives.base import unwrap

PROBE_BATCH = 64


@torch.no_grad()
def evaluate(model, objective, val_shard, probe: dict | None, pairs: sts.StsSet | None, cfg,
             device: torch.device) -> dict[str, float]:
    """The objective's fixed-protocol metrics on ``device``, plus ``probe_acc`` when a probe set
    is given and ``eval_sts_spearman`` when STS ``pairs`` are (pooled as the objective trains)."""
    net = unwrap(model)
    net.eval()
    sums: dict[str, torch.Tensor] = {}
    for batch in val_shard.iter_torch_batches(batch_size=cfg.train.batch_size, device=device):
        for k, v in objective.eval_sums(net, batch).items():
            sums[k] = sums[k] + v if k in sums else v.detach().clone()
    if dist.is_available() and dist.is_initialized():
        for v in sums.values():
            dist.all_reduce(v)
    metrics = objective.eval_metrics({k: v.cpu().numpy() for k, v in sums.items()})
    encoder = objective.encoder(net)
    if encoder is None or ray.train.get_context().get_world_rank() != 0:
        return metrics
    if probe:
        metrics["probe_acc"] = linear_probe(encoder, probe, device)
    if pairs is not None and objective.sentence_pooling():
        metrics["eval_sts_spearman"] = sts.score(encoder, pairs, objective.sentence_pooling(), device)
    return metrics


@torch.no_grad()
def mean_pooled(encoder, input_ids: np.ndarray, attention_mask: np.ndarray, device) -> np.ndarray:
    """Mean of the last hidden states over real (non-padding) tokens."""
    feats = []
    for i in range(0, len(input_ids), PROBE_BATCH):
        ids = torch.as_tensor(input_ids[i:i + PROBE_BATCH], device=device)
        mask = torch.as_tensor(attention_mask[i:i + PROBE_BATCH], device=device)
        hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        m = mask.unsqueeze(-1).float()
        feats.append(((hidden * m).sum(1) / m.sum(1).clamp(min=1)).cpu().numpy())
    return np.concatenate(feats)


def linear_probe(encoder, probe: dict, device, seed: int = 0) -> float:
    """Held-out accuracy of a logistic regression on frozen features (half the set fits it)."""
    # Imported here: only rank 0 fits a probe, and scikit-learn costs a worker about half of what
    # importing torch does (measured with -X importtime), at the start of every run.
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = mean_pooled(encoder, probe["input_ids"], probe["attention_mask"], device)
    y = np.asarray(probe["labels"])
    _, counts = np.unique(y, return_counts=True)
    stratify = y if counts.min() >= 2 else None
    x_fit, x_test, y_fit, y_test = train_test_split(x, y, test_size=0.5, random_state=seed, stratify=stratify)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    clf.fit(x_fit, y_fit)
    return float(clf.score(x_test, y_test))


def probe_set(texts: list[str], labels: list[str], tokenizer, max_length: int) -> dict | None:
    """Tokenised, padded probe inputs (None when fewer than two labels or four documents)."""
    if len(texts) < 4 or len(set(labels)) < 2:
        return None
    enc = tokenizer(texts, truncation=True, max_length=max_length, padding="max_length", return_tensors="np")
    return {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64),
            "labels": list(labels)}
