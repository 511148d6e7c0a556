"""Checkpoints: model, optimizer, scheduler, step and data position in one ``state.pt``.

Dropout randomness is not saved because it is derived from (seed, rank, step) at every step
(see ``train_loop.step_seed``), and the data position is the step: the workers skip the
batches the saved steps consumed. Together that makes a resumed run retrace an uninterrupted one.
Ray writes each checkpoint to a fresh directory and registers it only once it is complete,
so a crash mid-write leaves the previous checkpoint as the latest.
"""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import torch
from ray.train import Checkpoint

STATE_FILE = "state.pt"


@contextlib.contextmanager
def save(model, optimizer, scheduler, counters: dict):
    """Yield a :class:`ray.train.Checkpoint` of the training state, in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="sslab-ckpt-") as tmp:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "counters": counters}, Path(tmp) / STATE_FILE)
        yield Checkpoint.from_directory(tmp)


def read_state(ckpt_dir: str | Path, map_location="cpu") -> dict:
    """The saved state of a checkpoint directory."""
    return torch.load(Path(ckpt_dir) / STATE_FILE, map_location=map_location, weights_only=False)


def restore(ckpt: Checkpoint | None, model, optimizer, scheduler) -> dict | None:
    """Load ``ckpt`` into the given objects; return its counters (None when there is none)."""
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        state = read_state(d, map_location=next(model.parameters()).device)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state["counters"]
