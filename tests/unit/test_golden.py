"""A golden loss curve: a tiny model, a fixed seed, fixed data. A silent change in numerics (init,
masking, loss, optimizer, schedule) moves these numbers; an intended one updates them here."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from sslab import pipeline, synthetic, tokenizer
from sslab.config import SyntheticConfig, TokenizerConfig, load
from sslab.objectives import RowRandom, get
from sslab.train_loop import Counters, apply_or_skip, build_optimizer, lr_factor, train_step

# Measured with torch 2.13.0 (CPU), one thread; see constraints.txt for the rest.
GOLDEN = [5.7869, 5.6985, 5.494, 5.3611, 5.2957, 5.1813, 5.0029, 4.8455, 4.6589, 4.7266, 4.6309, 4.4183]


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def curve(steps: int = 12) -> list[float]:
    cfg = load(overrides=["train.seq_len=32", "train.batch_size=8", "train.lr=2e-3", "train.warmup_steps=4",
                          f"train.max_steps={steps}", "tokenizer.kind=bpe", "tokenizer.vocab_size=300"])
    docs = synthetic.generate(SyntheticConfig(num_docs=200), 0, 200)["text"]
    tok = tokenizer.train_tokenizer(cfg.tokenizer, docs, 512)  # byte-level BPE trains deterministically
    vocab = tokenizer.vocab_of(tok)
    table = pipeline.pack([e.ids for e in tok.backend_tokenizer.encode_batch(docs, add_special_tokens=False)],
                          cfg.train.seq_len, vocab.cls_id, vocab.sep_id)
    blocks = np.stack(table["input_ids"].to_numpy(zero_copy_only=False))[:8 * steps]
    rows = table["row_id"].to_numpy()[:8 * steps]
    objective = get("mlm")(cfg.objective, vocab)
    torch.manual_seed(cfg.train.seed)
    model = objective.build_model(cfg.model)
    optimizer = build_optimizer(model, cfg.train)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg.train))
    losses, counters = [], Counters()
    for step in range(steps):
        part = slice(8 * step, 8 * step + 8)
        batch = objective.transform({"input_ids": blocks[part]}, RowRandom(0, 0, rows[part]))
        batches = iter([{k: torch.as_tensor(v) for k, v in batch.items()}])
        done = train_step(model, objective, optimizer, batches, cfg, contextlib.nullcontext())
        apply_or_skip(optimizer, scheduler, counters, done.loss, done.grad_norm, cfg)
        losses.append(round(done.loss, 4))
    return losses


def test_the_loss_curve_of_a_tiny_run_is_the_golden_one(one_thread):
    got = curve()
    assert got == pytest.approx(GOLDEN, abs=2e-3), got
