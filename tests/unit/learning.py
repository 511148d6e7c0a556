"""Train an objective in-process on the synthetic corpus, without Ray: the learning tests' harness.

It runs the same code a Ray run does — ``pipeline.Tokenize`` for the objective's unit,
``pipeline.corrupt`` for the per-epoch and fixed-protocol corruption, the objective's model,
``train_step``/``apply_or_skip`` for the optimisation, ``eval_sums``/``eval_metrics`` for the
fixed protocol, the linear probe and the STS pairs — so a learning test here is about the
objective, and the Ray integration tests are about distribution.
"""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from sslab import evaluation, pipeline, sts, synthetic, tokenizer
from sslab.config import load
from sslab.objectives import get
from sslab.train_loop import Counters, apply_or_skip, build_optimizer, lr_factor, train_step

BASE = ["train.seq_len=64", "train.batch_size=16", "train.lr=2e-3", "train.warmup_steps=10",
        "tokenizer.vocab_size=1000", "eval.max_blocks=128"]


def numpy_rows(table: pa.Table) -> dict[str, np.ndarray]:
    """A pyarrow table of the pipeline as a dict of numpy arrays (tensor columns stacked)."""
    out = {}
    for name in table.column_names:
        values = table[name].to_numpy(zero_copy_only=False)
        out[name] = np.stack(values) if values.dtype == object else values
    return out


def take(rows: dict[str, np.ndarray], index) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in rows.items()}


def to_torch(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v) for k, v in batch.items()}


class Setup:
    """Config, tokenizer, objective and the train/validation rows of one in-process run."""

    def __init__(self, name: str, overrides: list[str] = (), num_docs: int = 3000, tokenizer_dir: Path | None = None):
        self.cfg = load(overrides=BASE + [f"objective.name={name}", *overrides])
        cls = get(self.cfg.objective.name)
        data = synthetic.generate(dataclasses.replace(self.cfg.corpus.synthetic, num_docs=num_docs), 0, num_docs)
        texts, labels = data["text"], data["label"]
        # A fixed tokenizer: the learning tests that sit near a cliff were measured with it.
        self.tok = tokenizer.load_tokenizer(tokenizer_dir) if tokenizer_dir else \
            tokenizer.train_tokenizer(self.cfg.tokenizer, texts, self.cfg.model.max_positions)
        extra = cls.extra_tokens(self.cfg.objective)
        if extra:
            self.tok.add_special_tokens({"additional_special_tokens": extra}, replace_extra_special_tokens=False)
        self.vocab = tokenizer.vocab_of(self.tok, extra)
        self.objective = cls(self.cfg.objective, self.vocab)
        n_val = num_docs // 10
        self.train = self.units(texts[n_val:], self.objective.unit)
        self.val = self.units(texts[:n_val], self.objective.eval_unit or self.objective.unit)
        self.probe = evaluation.probe_set(texts[:n_val][:400], labels[:n_val][:400], self.tok, self.cfg.train.seq_len)
        self.sts = sts.of_run(self.cfg, self.tok) if self.objective.sentence_pooling() else None

    def units(self, texts: list[str], unit: str) -> dict[str, np.ndarray]:
        v = self.vocab  # its tokenizer JSON: self.tok's now holds the padding of the probe set's call
        tokenize = pipeline.Tokenize(v.tokenizer_json, self.cfg.train.seq_len, v.cls_id, v.sep_id,
                                     v.pad_id, unit=unit, word_segmenter=pipeline.segmenter_of(self.cfg),
                                     sentence_split=self.cfg.corpus.sentence_split)
        return numpy_rows(tokenize({"text": np.asarray(texts, dtype=object)}))

    def model(self) -> torch.nn.Module:
        torch.manual_seed(self.cfg.train.seed)
        return self.objective.build_model(self.cfg.model)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, probe: bool = False) -> dict[str, float]:
        """The fixed-protocol metrics on the validation rows (and ``probe_acc`` when asked), with
        ``eval_sts_spearman`` for an objective that trains sentence vectors."""
        model.eval()
        n = min(len(self.val["row_id"]), self.cfg.eval.max_blocks)
        batch = pipeline.corrupt(take(self.val, slice(0, n)), self.objective, self.cfg.eval.seed, 0, self.cfg.eval)
        sums: dict[str, torch.Tensor] = {}
        size = self.cfg.train.batch_size
        for i in range(0, len(next(iter(batch.values()))), size):
            for k, v in self.objective.eval_sums(model, to_torch(take(batch, slice(i, i + size)))).items():
                sums[k] = sums[k] + v if k in sums else v.detach().clone()
        metrics = self.objective.eval_metrics({k: v.numpy() for k, v in sums.items()})
        encoder = self.objective.encoder(model)
        if probe and encoder is not None:
            metrics["probe_acc"] = evaluation.linear_probe(encoder, self.probe, torch.device("cpu"))
        if self.sts is not None:
            metrics["eval_sts_spearman"] = sts.score(encoder, self.sts, self.objective.sentence_pooling(), "cpu")
        model.train()
        return metrics

    def train_model(self, model: torch.nn.Module, steps: int) -> list[float]:
        """``steps`` optimizer steps on freshly corrupted batches; returns the losses."""
        cfg = self.cfg
        optimizer = build_optimizer(model, cfg.train)
        train_cfg = dataclasses.replace(cfg.train, max_steps=steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, train_cfg))
        counters, losses, size = Counters(), [], cfg.train.batch_size
        rows = len(self.train["row_id"])
        model.train()
        for step in range(steps):
            start = (step * size) % (rows - size)
            epoch = (step * size) // (rows - size)
            batch = pipeline.corrupt(take(self.train, slice(start, start + size)), self.objective, cfg.train.seed, epoch)
            done = train_step(model, self.objective, optimizer, iter([to_torch(batch)]), cfg, contextlib.nullcontext())
            apply_or_skip(optimizer, scheduler, counters, done.loss, done.grad_norm, cfg)
            losses.append(done.loss)
        return losses


def learn(name: str, overrides: list[str] = (), steps: int = 150, probe: bool = False,
          tokenizer_dir: Path | None = None) -> tuple[dict, dict, Setup]:
    """Fixed-protocol metrics before and after ``steps`` steps of training, and the setup."""
    setup = Setup(name, overrides, tokenizer_dir=tokenizer_dir)
    model = setup.model()
    before = setup.evaluate(model, probe)
    setup.train_model(model, steps)
    return before, setup.evaluate(model, probe), setup


FIXED_TOKENIZER = Path(__file__).parent / "data" / "wordpiece_1000"
"""The WordPiece tokenizer (vocab 1000) that ``Setup`` trains, trained once and kept: the learning
tests that sit near a cliff use it so that their result does not depend on the vocabulary drawn."""
