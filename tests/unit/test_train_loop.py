"""The training step's arithmetic, without Ray: accumulation, clipping, skipping, schedule, init_from."""
from __future__ import annotations

import contextlib
import math
import shutil

import numpy as np
import pytest
import torch

from sslab import checkpoint, synthetic, tokenizer, train_loop
from sslab.config import ModelConfig, SyntheticConfig, TokenizerConfig, load
from sslab.errors import ConfigError, RunError
from sslab.objectives import get
from sslab.train_loop import Counters, apply_or_skip, build_optimizer, lr_factor, train_step


@pytest.fixture(scope="module")
def vocab():
    docs = synthetic.generate(SyntheticConfig(num_docs=300), 0, 300)["text"]
    tok = tokenizer.train_tokenizer(TokenizerConfig(vocab_size=400), docs, 512)
    return tok, tokenizer.vocab_of(tok)


def mlm(vocab, *overrides):
    cfg = load(overrides=["model.dropout=0.0", *overrides])
    return cfg, get("mlm")(cfg.objective, vocab[1])


def batch(vocab, rows: int, seed: int, masked_per_row: int = 6) -> dict[str, torch.Tensor]:
    """Random blocks with exactly ``masked_per_row`` scored positions per row."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab[1].size, size=(rows, 16))
    labels = np.full_like(ids, -100)
    for r in range(rows):
        pos = rng.choice(np.arange(1, 15), masked_per_row, replace=False)
        labels[r, pos] = ids[r, pos]
        ids[r, pos] = vocab[1].mask_id
    return {"input_ids": torch.as_tensor(ids), "labels": torch.as_tensor(labels)}


def grads_after(cfg, objective, batches) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = objective.build_model(cfg.model)
    optimizer = build_optimizer(model, cfg.train)
    train_step(model, objective, optimizer, iter(batches), cfg, contextlib.nullcontext())
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_accumulating_two_half_batches_gives_the_gradient_of_the_whole_batch(vocab):
    cfg1, obj = mlm(vocab, "train.grad_accum=1", "train.grad_clip=0")
    cfg2, _ = mlm(vocab, "train.grad_accum=2", "train.grad_clip=0")
    whole = batch(vocab, 8, seed=1)
    halves = [{k: v[:4] for k, v in whole.items()}, {k: v[4:] for k, v in whole.items()}]
    for a, b in zip(grads_after(cfg1, obj, [whole]), grads_after(cfg2, obj, halves)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_the_step_clips_the_global_gradient_norm_and_reports_the_norm_before_clipping(vocab):
    cfg, obj = mlm(vocab, "train.grad_clip=0.01")
    torch.manual_seed(0)
    model = obj.build_model(cfg.model)
    optimizer = build_optimizer(model, cfg.train)
    done = train_step(model, obj, optimizer, iter([batch(vocab, 4, seed=2)]), cfg, contextlib.nullcontext())
    loss, norm, tokens = done.loss, done.grad_norm, done.tokens
    clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
    assert norm > 0.01 and clipped == pytest.approx(0.01, rel=1e-3)
    assert math.isfinite(loss) and tokens == 4 * 16


def test_data_running_out_before_max_steps_is_an_error(vocab):
    cfg, obj = mlm(vocab, "train.grad_accum=2")
    model = obj.build_model(cfg.model)
    with pytest.raises(RunError, match="ran out"):
        train_step(model, obj, build_optimizer(model, cfg.train),
                   iter([batch(vocab, 2, seed=3)]), cfg, contextlib.nullcontext())


class CountingOptimizer:
    def __init__(self):
        self.steps = 0

    def step(self):
        self.steps += 1

    def zero_grad(self, set_to_none=True):
        pass


class CountingScheduler(CountingOptimizer):
    pass


def test_a_non_finite_step_is_skipped_and_counted_and_too_many_in_a_row_fail(vocab):
    cfg, _ = mlm(vocab, "train.max_nonfinite=3")
    opt, sched, counters = CountingOptimizer(), CountingScheduler(), Counters()
    apply_or_skip(opt, sched, counters, 1.0, 0.5, cfg)
    apply_or_skip(opt, sched, counters, float("nan"), 0.5, cfg)
    apply_or_skip(opt, sched, counters, 1.0, float("inf"), cfg)
    assert opt.steps == 1 and counters.nonfinite_total == 2 and counters.nonfinite_run == 2
    apply_or_skip(opt, sched, counters, 1.0, 0.5, cfg)  # a good step resets the streak
    assert opt.steps == 2 and counters.nonfinite_run == 0
    for _ in range(2):
        apply_or_skip(opt, sched, counters, float("nan"), 0.5, cfg)
    with pytest.raises(RunError, match="non-finite for 3 steps in a row"):
        apply_or_skip(opt, sched, counters, float("nan"), 0.5, cfg)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_the_schedule_warms_up_linearly_then_decays_to_min_lr(schedule):
    t = load(overrides=[f"train.schedule={schedule}", "train.warmup_steps=10", "train.max_steps=110",
                        "train.min_lr_ratio=0.1"]).train
    warm = [lr_factor(s, t) for s in range(10)]
    assert warm == sorted(warm) and warm[0] < 0.2 and lr_factor(10, t) == pytest.approx(1.0)
    assert lr_factor(60, t) == pytest.approx(0.55)  # halfway, linear and cosine agree
    assert lr_factor(110, t) == pytest.approx(0.1)
    assert lr_factor(1000, t) == pytest.approx(0.1)  # past max_steps (a resumed, extended run)


def test_init_from_continues_from_a_saved_model_and_refuses_a_too_small_vocabulary(vocab, tmp_path):
    cfg, obj = mlm(vocab)
    model = obj.build_model(cfg.model)
    obj.export(model, str(tmp_path / "m"))
    loaded = obj.build_model(ModelConfig(init_from=str(tmp_path / "m")))
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    small_cfg, small = mlm(vocab, "model.preset=tiny")
    small.vocab = tokenizer.Vocab(**{**vars(vocab[1]), "size": vocab[1].size + 1000})
    with pytest.raises(ConfigError, match="token embeddings"):
        small.build_model(ModelConfig(init_from=str(tmp_path / "m")))


def trained_state(cfg, objective, vocab, steps: int):
    """Model, optimizer and schedule after ``steps`` optimizer steps, as a checkpoint holds them."""
    torch.manual_seed(0)
    model = objective.build_model(cfg.model)
    optimizer = build_optimizer(model, cfg.train)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg.train))
    for i in range(steps):
        train_step(model, objective, optimizer, iter([batch(vocab, 4, seed=i)]), cfg, contextlib.nullcontext())
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    return model, optimizer, scheduler


def test_a_pbt_start_loads_the_donors_state_under_the_trials_own_learning_rate(vocab, tmp_path, monkeypatch):
    donor_cfg, obj = mlm(vocab, "train.lr=1e-3", "train.warmup_steps=2", "train.max_steps=20")
    donor = trained_state(donor_cfg, obj, vocab, steps=5)
    with checkpoint.save(*donor, {"step": 5, "tokens": 320, "nonfinite_total": 0, "nonfinite_run": 0}) as ckpt:
        saved = tmp_path / "donor"
        shutil.copytree(ckpt.path, saved)
    cfg, _ = mlm(vocab, "train.lr=4e-3", "train.warmup_steps=2", "train.max_steps=20")  # explore's new lr
    fresh = trained_state(cfg, obj, vocab, steps=0)
    monkeypatch.setattr(train_loop.ray.train, "get_checkpoint", lambda: None)  # the trial's own run is new
    counters = train_loop.restore(str(saved), *fresh, cfg.train)
    model, optimizer, scheduler = fresh
    assert counters["step"] == 5
    for a, b in zip(model.parameters(), donor[0].parameters()):  # the donor's weights …
        torch.testing.assert_close(a, b)
    moments = [optimizer.state[p]["exp_avg"] for p in model.parameters()]
    donor_moments = [donor[1].state[p]["exp_avg"] for p in donor[0].parameters()]
    for a, b in zip(moments, donor_moments):  # … and Adam's moments
        torch.testing.assert_close(a, b)
    # … but this trial's learning rate, at the donor's point of the schedule, now and after a step.
    assert optimizer.param_groups[0]["lr"] == pytest.approx(4e-3 * lr_factor(5, cfg.train))
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(4e-3 * lr_factor(6, cfg.train))


def test_a_runs_own_checkpoint_wins_over_the_pbt_start(vocab, tmp_path, monkeypatch):
    cfg, obj = mlm(vocab)
    own = object()
    seen = []
    monkeypatch.setattr(train_loop.ray.train, "get_checkpoint", lambda: own)
    monkeypatch.setattr(train_loop.checkpoint, "restore", lambda ckpt, *a: seen.append(ckpt) or {"step": 9})
    assert train_loop.restore(str(tmp_path), None, None, None, cfg.train) == {"step": 9}
    assert seen == [own]  # a worker restart inside a PBT restart resumes its own latest state
