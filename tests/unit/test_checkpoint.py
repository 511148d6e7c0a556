"""Checkpoints load weights-only: everything a checkpoint stores is a tensor, a number, a string or
a container of them, and a ``state.pt`` holding any other object is refused without running it."""
from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from sslab import checkpoint, synthetic, tokenizer
from sslab.config import SyntheticConfig, TokenizerConfig, load
from sslab.errors import RunError
from sslab.objectives import available, get
from sslab.train_loop import Counters, lr_factor


@pytest.fixture(scope="module")
def tok():
    docs = synthetic.generate(SyntheticConfig(num_docs=200), 0, 200)["text"]
    return tokenizer.train_tokenizer(TokenizerConfig(vocab_size=300), docs, 128)


def training_state(tok, name: str):
    """Model, optimizer (one step taken, so it has moments) and schedule of objective ``name``."""
    cfg = load(overrides=[f"objective.name={name}", "model.preset=tiny", "model.max_positions=128",
                          "train.seq_len=64", "train.warmup_steps=2", "train.max_steps=20"])
    cls = get(cfg.objective.name)
    extra = cls.extra_tokens(cfg.objective)
    tok = copy.deepcopy(tok)
    if extra:
        tok.add_special_tokens({"additional_special_tokens": extra}, replace_extra_special_tokens=False)
    torch.manual_seed(0)
    model = cls(cfg.objective, tokenizer.vocab_of(tok, extra)).build_model(cfg.model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": params[::2]}, {"params": params[1::2], "weight_decay": 0.0}],
                                  lr=cfg.train.lr, betas=cfg.train.betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg.train))
    for p in params:
        p.grad = torch.full_like(p, 1e-3)
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler


@pytest.mark.parametrize("name", [*available(), "mlm+sop"])
def test_every_objectives_checkpoint_loads_weights_only_and_restores(tok, name, tmp_path):
    model, optimizer, scheduler = training_state(tok, name)
    counters = asdict(Counters(step=7, tokens=7 * 512, nonfinite_total=1, nonfinite_run=0))
    with checkpoint.save(model, optimizer, scheduler, counters) as ckpt:
        state = torch.load(Path(ckpt.path) / checkpoint.STATE_FILE, map_location="cpu", weights_only=True)
        assert set(state) == {"model", "optimizer", "scheduler", "counters"}
        assert state["counters"] == counters
        assert optimizer.state and state["optimizer"]["state"]  # Adam's moments are in it
        model2, optimizer2, scheduler2 = training_state(tok, name)
        for p in model2.parameters():
            p.data.zero_()
        assert checkpoint.restore(ckpt, model2, optimizer2, scheduler2) == counters
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        torch.testing.assert_close(a, b)
    for p, q in zip(model.parameters(), model2.parameters()):
        if p in optimizer.state:
            torch.testing.assert_close(optimizer.state[p]["exp_avg"], optimizer2.state[q]["exp_avg"])
    assert scheduler2.state_dict() == scheduler.state_dict()


class RunsCode:
    """Unpickling this touches ``marker``: what a checkpoint from an untrusted source could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_a_checkpoint_holding_an_arbitrary_object_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code_ran"
    torch.save({"model": {"w": torch.ones(2)}, "counters": {"step": 1}, "extra": RunsCode(marker)},
               tmp_path / checkpoint.STATE_FILE)
    with pytest.raises(RunError, match=rf"^{tmp_path / checkpoint.STATE_FILE} holds a reference to .*refused"):
        checkpoint.read_state(tmp_path)
    assert not marker.exists()
    torch.load(tmp_path / checkpoint.STATE_FILE, weights_only=False)  # what a full unpickling does
    assert marker.exists()


def test_a_checkpoint_persisted_in_process_is_registered_whole_and_only_the_kept_ones_stay(tmp_path):
    run_dir, staged = tmp_path / "run", tmp_path / "staged"
    run_dir.mkdir()
    staged.mkdir()
    (staged / checkpoint.STATE_FILE).write_bytes(b"state")
    assert checkpoint.latest(run_dir) is None
    for step in (10, 20, 30):
        checkpoint.persist(staged, run_dir, f"checkpoint_{step:08d}", keep=2, metrics={"step": step, "device": "cpu"})
    assert checkpoint.latest(run_dir) == run_dir / "checkpoint_00000030"
    assert [e["name"] for e in checkpoint.registered(run_dir)] == ["checkpoint_00000020", "checkpoint_00000030"]
    assert checkpoint.registered(run_dir)[-1]["metrics"] == {"step": 30, "device": "cpu"}
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint_00000020", "checkpoint_00000030",
                                                          checkpoint.REGISTRY]  # step 10 pruned, nothing partial
    assert (run_dir / "checkpoint_00000030" / checkpoint.STATE_FILE).read_bytes() == b"state"
