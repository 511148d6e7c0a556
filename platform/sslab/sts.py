"""Semantic textual similarity (STS): does the cosine of two sentence vectors order sentence
pairs as their graded similarity does?

This is the measure SimCSE (Gao et al. 2021) reports, and the one its temperature study (Table
D.1: STS-B, tau = 0.05 gives 86.2, tau = 1 gives 64.0) ranks by: Spearman's rank correlation
between each pair's cosine similarity and its grade (STS-B's 0-5). Only the order of the cosines
counts, so neither their scale (an anisotropic encoder puts them all near 1) nor the scale of
the grades matters.

The pairs come from a file (columns ``sentence1``, ``sentence2``, ``score``, as STS-B's own
TSV has them; or CSV, JSON Lines, Parquet) or, on the synthetic corpus, from
:func:`sslab.synthetic.sts_pairs`. A run that trains sentence vectors scores them at every
evaluation (``eval_sts_spearman``); ``sslab eval --sts`` scores an exported model
(:func:`sslab.downstream.similarity`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sslab import lazy, tables
from sslab.config import Config, warn
from sslab.errors import ConfigError

torch = lazy.module("torch")
F = lazy.module("torch.nn.functional")

COLUMNS = ("sentence1", "sentence2", "score")
POOLINGS = ("mean", "cls")
"""How a sentence vector is pooled from the last hidden states: the mean over real tokens, or
the first token's state."""
MIN_PAIRS = 3
BATCH = 64  # sentences per forward pass


# ---------------------------------------------------------------- the pairs


def read_pairs(path, what: str = "STS pairs") -> pd.DataFrame:
    """The graded pairs of the file ``path`` (see :data:`sslab.tables.READERS`), checked by
    :func:`pairs_frame`; errors name ``what`` and the file."""
    return pairs_frame(tables.read_table(path, tables.kind_of(path, what)), f"{what} {str(path)!r}")


def pairs_frame(frame: pd.DataFrame, source: str = "the DataFrame") -> pd.DataFrame:
    """``frame``'s columns ``sentence1``, ``sentence2`` (text) and ``score`` (a number).

    Raises a one-line :class:`~sslab.errors.ConfigError` naming ``source`` when a column is
    missing (it lists those there are), a row has no sentence or a score that is not a number (it
    names the row, counted from 1 after the header), or there are fewer than :data:`MIN_PAIRS`
    pairs or a single score (no order to correlate with).
    """
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        columns = ", ".join(map(str, frame.columns)) or "none"
        raise ConfigError(f"{source} has no column {missing[0]!r} (its columns: {columns}); "
                          f"STS pairs need {', '.join(COLUMNS)}")
    out = {}
    for column in ("sentence1", "sentence2"):
        text = frame[column].astype("string").str.strip().reset_index(drop=True)
        empty = text.isna() | (text == "")
        if empty.any():
            raise ConfigError(f"{source}: row {int(np.argmax(empty)) + 1} has no {column}")
        out[column] = text.astype(str)
    score = pd.to_numeric(frame["score"], errors="coerce").reset_index(drop=True)
    if score.isna().any():
        row = int(np.argmax(score.isna()))
        raise ConfigError(f"{source}: row {row + 1} has score {frame['score'].iloc[row]!r}, not a number")
    if len(score) < MIN_PAIRS or score.nunique() < 2:
        raise ConfigError(f"{source} has {len(score)} pairs and {score.nunique()} distinct scores; a correlation "
                          f"needs at least {MIN_PAIRS} pairs and two scores")
    return pd.DataFrame({**out, "score": score.astype(float)})


def sample(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most ``n`` pairs: all of them, or a sample fixed by ``seed`` kept in the file's order
    (not the first ``n``: STS-B's files are sorted by genre, its first rows all image captions)."""
    if len(frame) <= n:
        return frame
    return frame.sample(n, random_state=seed).sort_index().reset_index(drop=True)


@dataclass(frozen=True, eq=False)
class StsSet:
    """Graded pairs, tokenised once by the driver: what a worker scores."""

    first: dict[str, np.ndarray]
    """``input_ids`` and ``attention_mask`` of the first sentences (padded to the longest)."""
    second: dict[str, np.ndarray]
    scores: np.ndarray
    source: str
    """Where the pairs come from (a file, or the synthetic corpus), for messages."""

    def __len__(self) -> int:
        return len(self.scores)


def encode(frame: pd.DataFrame, tok, max_length: int, source: str) -> StsSet:
    """The pairs of ``frame`` tokenised as the run's sentences are (``[CLS] … [SEP]``, cut at
    ``max_length``)."""
    def side(texts) -> dict[str, np.ndarray]:
        enc = tok(list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="np")
        return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}

    return StsSet(side(frame["sentence1"]), side(frame["sentence2"]), frame["score"].to_numpy(float), source)


def of_run(cfg: Config, tok) -> StsSet | None:
    """The pairs a run that trains sentence vectors scores: ``eval.sts_data``'s, else the
    synthetic corpus's own (:func:`sslab.synthetic.sts_pairs`), else none, which a run that is
    not quiet says once (a corpus of the user's has no grades to score against)."""
    e = cfg.eval
    if e.sts_pairs == 0:
        return None
    if e.sts_data:
        frame, source = read_pairs(e.sts_data, "eval.sts_data"), e.sts_data
    elif cfg.corpus.source == "synthetic":
        from sslab import synthetic

        frame, source = pd.DataFrame(synthetic.sts_pairs(cfg.corpus.synthetic, e.sts_pairs)), "the synthetic corpus"
    else:
        if not cfg.run.quiet:
            warn("no eval_sts_spearman: the corpus has no graded sentence pairs; set eval.sts_data to a file "
                 "with columns sentence1, sentence2 and score (STS-B's TSV, say) to score sentence similarity")
        return None
    return encode(sample(frame, e.sts_pairs, e.seed), tok, cfg.train.seq_len, source)


# ---------------------------------------------------------------- the score


def spearman(predicted, gold) -> float:
    """Spearman's rank correlation of ``predicted`` with ``gold`` (ties take their mean rank),
    by ``scipy.stats.spearmanr``; 0.0 when every prediction is the same (an encoder that gives
    every sentence one vector orders nothing), where scipy's is undefined."""
    from scipy.stats import spearmanr  # late: only the processes that score import it

    predicted = np.asarray(predicted, dtype=float)
    if np.ptp(predicted) == 0:
        return 0.0
    return float(spearmanr(predicted, np.asarray(gold, dtype=float)).statistic)


def pooled(hidden, real, pooling: str):
    """Sentence vectors from last hidden states ``(rows, T, H)``: the first token's state (``cls``)
    or the mean over the positions where ``real`` is true (``mean``), as sentence-transformers'
    Pooling module computes them."""
    if pooling == "cls":
        return hidden[:, 0]
    weight = real.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weight).sum(1) / weight.sum(1).clamp(min=1)


def pool(hidden, real, pooling: str):
    """Unit-length float32 :func:`pooled` vectors."""
    return F.normalize(pooled(hidden, real, pooling).float(), dim=-1)


def vectors(encoder, side: dict[str, np.ndarray], pooling: str, device) -> np.ndarray:
    """The ``pooling`` sentence vectors of one side of the pairs, by ``encoder`` (a base model
    whose output has ``last_hidden_state``), in inference mode."""
    out = []
    with torch.no_grad():
        for i in range(0, len(side["input_ids"]), BATCH):
            ids = torch.as_tensor(side["input_ids"][i:i + BATCH], device=device)
            mask = torch.as_tensor(side["attention_mask"][i:i + BATCH], device=device)
            hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            out.append(pool(hidden, mask.bool(), pooling).cpu().numpy())
    return np.concatenate(out)


def cosines(encoder, pairs: StsSet, pooling: str, device) -> np.ndarray:
    """The cosine similarity of each pair's two sentence vectors."""
    if pooling not in POOLINGS:
        raise ConfigError(f"pooling={pooling!r} is not one of {', '.join(POOLINGS)}")
    a, b = (vectors(encoder, side, pooling, device) for side in (pairs.first, pairs.second))
    return (a * b).sum(1)


def score(encoder, pairs: StsSet, pooling: str, device) -> float:
    """``eval_sts_spearman``: the Spearman correlation of the pairs' cosines with their grades."""
    return spearman(cosines(encoder, pairs, pooling, device), pairs.scores)
