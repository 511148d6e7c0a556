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
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from ray.train import Checkpoint

from sslab.errors import RunError
from sslab.files import write_whole

STATE_FILE = "state.pt"
SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's record of the registered checkpoints
REGISTRY = "checkpoints.json"  # sslab's, for a run trained in process (scaling.in_process)


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
    """The run's latest complete checkpoint directory (the one a resume starts from), or None:
    the last one Ray Train registered, or sslab's registry's for a run trained in process."""
    snapshot = Path(run_dir) / SNAPSHOT
    if snapshot.is_file():
        last = json.loads(snapshot.read_text()).get("latest_checkpoint_result")
        return Path(run_dir) / last["checkpoint_dir_name"] if last else None
    entries = registered(run_dir)
    return Path(run_dir) / entries[-1]["name"] if entries else None


def trained_in_process(run_dir: str | Path) -> bool | None:
    """Whose checkpoints ``run_dir`` holds: sslab's registry's (True, a run trained in process),
    Ray Train's snapshot's (False, a worker group), or neither yet (None)."""
    if (Path(run_dir) / SNAPSHOT).is_file():
        return False
    return True if (Path(run_dir) / REGISTRY).is_file() else None


def registered(run_dir: str | Path) -> list[dict]:
    """The checkpoints sslab registered for a run trained in process, oldest first: each one's
    ``name`` and the ``metrics`` reported with it."""
    path = Path(run_dir) / REGISTRY
    return json.loads(path.read_text())["checkpoints"] if path.is_file() else []


def persist(staged: str | Path, run_dir: Path, name: str, keep: int, metrics: dict) -> Path:
    """Copy the checkpoint in ``staged`` to ``run_dir/name`` and register it with the ``metrics``
    reported with it, as Ray Train does for a worker group: it is complete before the registry
    names it (a crash mid-copy leaves the previous one the latest), and only the ``keep`` latest
    stay."""
    dest, partial = run_dir / name, run_dir / f".{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(staged, partial)
    shutil.rmtree(dest, ignore_errors=True)  # a rerun reaching a step again writes it again
    partial.rename(dest)
    entries = [e for e in registered(run_dir) if e["name"] != name] + [{"name": name, "metrics": metrics}]
    kept, dropped = entries[-keep:], entries[:-keep]
    write_whole(run_dir / REGISTRY, json.dumps({"checkpoints": kept},
                                               default=lambda v: v.item() if hasattr(v, "item") else str(v)))
    for old in dropped:
        shutil.rmtree(run_dir / old["name"], ignore_errors=True)
    return dest
