"""Checkpoints: model, optimizer, scheduler, step and data position in one ``state.pt``.

Dropout randomness is not saved because it is derived from (seed, rank, step) at every step
(see ``train_loop.step_seed``), and the data position is the step: the workers skip the
batches the saved steps consumed. Together that makes a resumed run retrace an uninterrupted one.
Ray writes each checkpoint to a fresh directory and registers it (in the run's
``checkpoint_manager_snapshot.json``) only once it is complete, so a crash mid-write leaves the
previous checkpoint as the latest: a resume, an export or :func:`latest` never pick a partial one.
A checkpoint holds only tensors, numbers, strings and their containers, and is read weights-only:
a ``state.pt`` holding any other object (unpickling it could run code) is refused.
"""
from __future__ import annotations

import contextlib
import json
import pickle
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from ray.train import Checkpoint

from sslab.errors import RunError

STATE_FILE = "state.pt"
SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's record of the registered checkpoints


@contextlib.contextmanager
def save(model, optimizer, scheduler, counters: dict, staged: Iterable[Callable[[Path], None]] = ()):
    """Yield a :class:`ray.train.Checkpoint` of the training state, in a temporary directory;
    each of ``staged`` is called with that directory once it is written."""
    with tempfile.TemporaryDirectory(prefix="sslab-ckpt-") as tmp:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "counters": counters}, Path(tmp) / STATE_FILE)
        for call in staged:
            call(Path(tmp))
        yield Checkpoint.from_directory(tmp)


def read_state(ckpt_dir: str | Path, map_location="cpu") -> dict:
    """The saved state of a checkpoint directory, loaded weights-only (no object is unpickled)."""
    path = Path(ckpt_dir) / STATE_FILE
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f"a reference to {found.group(1)}" if found else "an object that is not a tensor, number or string"
        raise RunError(f"{path} holds {what}, which no sslab checkpoint does: refused (checkpoints are "
                       f"loaded weights-only, so that reading one cannot run code)") from None


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


def latest(run_dir: str | Path) -> Path | None:
    """The run's latest complete checkpoint directory (the one a resume starts from), or None."""
    snapshot = Path(run_dir) / SNAPSHOT
    if not snapshot.is_file():
        return None
    last = json.loads(snapshot.read_text()).get("latest_checkpoint_result")
    return Path(run_dir) / last["checkpoint_dir_name"] if last else None
