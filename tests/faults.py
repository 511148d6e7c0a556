"""Faults injected into the training workers' loop through sslab's worker hooks
(``sslab.pretrain(cfg, hooks=RunHooks(worker=(...)))``). Each strikes a fresh attempt only, never
one resumed from a checkpoint, so a run that restarts after the fault goes on to the end."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import ray.cloudpickle

from sslab import checkpoint
from sslab.runner import RunHooks
from sslab.train_loop import WorkerHook


class CrashBeforeStep(WorkerHook):
    """Every worker raises before optimizer step ``step + 1``, as a crashed worker would."""

    def __init__(self, step: int):
        self.step = step

    def before_step(self, step: int, resumed: bool) -> None:
        if step == self.step and not resumed:
            raise RuntimeError(f"injected failure at step {step}")


class KillWhileCopyingCheckpoint(WorkerHook):
    """Rank 0 is SIGKILLed (as a lost machine would be) while Ray copies its step-``step`` checkpoint."""

    def __init__(self, step: int):
        self.step = step

    def checkpoint_staged(self, staged: Path, dest: Path, resumed: bool) -> None:
        if dest.name == f"checkpoint_{self.step:08d}" and not resumed:
            die_once_copying(staged, dest)


def crash_before_step(step: int) -> RunHooks:
    return RunHooks(worker=(CrashBeforeStep(step),))


def kill_while_copying_checkpoint(step: int) -> RunHooks:
    return RunHooks(worker=(KillWhileCopyingCheckpoint(step),))


def die_once_copying(tmp: Path, dest: Path) -> None:
    """Pad the checkpoint so that copying it takes a while, and SIGKILL this process as soon as
    the copy has begun: ``dest`` holds a first file.

    Waits first until an earlier checkpoint is registered: Train's controller collects reports
    every ~2 s, and a kill before it has would restart the run from step 0 (and strike again)."""
    deadline = time.monotonic() + 300
    while checkpoint.latest(dest.parent) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    with open(tmp / "padding.bin", "wb") as f:
        f.truncate(256 * 2**20)  # sparse: cheap to make, a real 256 MiB to copy

    def watch():
        while not (dest.is_dir() and any(dest.iterdir())):
            time.sleep(0.001)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()


# Workers unpickle these hooks without importing this file (it is not on their path).
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
