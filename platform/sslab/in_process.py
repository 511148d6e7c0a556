"""A 1-worker CPU run trained in the calling process (``scaling.in_process``).

Ray Train's local mode runs a training function in the caller with the ``ray.train`` API, but it
keeps only its last report and persists no checkpoint. sslab installs its own variant of that
mode's function utilities: a report's checkpoint is copied into the run directory and registered
(:func:`sslab.checkpoint.persist`), a resume starts from the latest registered one, and each
report reaches the run's report hooks (a Tune trial's queue). The training function is
:func:`sslab.train_loop.train_loop_per_worker`, the one a worker group runs, so both paths give
the same losses and the same checkpoints. What it saves is the worker group's processes: Train's
controller, its worker, the dataset manager and split coordinators, about 20 s of start-up on
2 cores.
"""
from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from ray.train import Checkpoint
from ray.train.v2._internal.execution.train_fn_utils import LocalTrainFnUtils, set_train_fn_utils

from sslab import checkpoint as sslab_checkpoint
from sslab.errors import SslabError
from sslab.train_loop import WorkerPlan, train_loop_per_worker

log = logging.getLogger("sslab")

ReportHook = Callable[[dict, "str | None"], None]
"""Called with each report's metrics and the persisted checkpoint's directory (or None)."""


class InProcess(LocalTrainFnUtils):
    """``ray.train``'s function utilities for a run trained in this process."""

    def __init__(self, run_dir: Path, datasets: dict, keep: int, on_report: Sequence[ReportHook]):
        super().__init__(experiment_name=run_dir.name, dataset_shards=datasets)
        self.run_dir, self.keep, self.on_report = run_dir, keep, on_report
        self.last_metrics: dict | None = None
        self.last_checkpoint: Path | None = None

    def report(self, metrics, checkpoint=None, checkpoint_dir_name=None, **_) -> None:
        if checkpoint is not None:
            self.last_checkpoint = sslab_checkpoint.persist(checkpoint.path, self.run_dir, checkpoint_dir_name,
                                                            self.keep, metrics)
        self.last_metrics = metrics
        for hook in self.on_report:
            hook(dict(metrics), str(self.last_checkpoint) if checkpoint is not None else None)

    def get_checkpoint(self) -> Checkpoint | None:
        found = sslab_checkpoint.latest(self.run_dir)
        return Checkpoint(str(found)) if found else None


@dataclass
class Result:
    """What :func:`fit` returns: the fields of ``ray.train.Result`` that sslab reads."""

    metrics: dict
    checkpoint: Checkpoint | None


def fit(plan: WorkerPlan, datasets: dict, run_dir: Path, keep: int, max_failures: int,
        on_report: Sequence[ReportHook] = ()) -> Result:
    """Train ``plan`` in this process; a failure other than sslab's own error is retried from the
    latest checkpoint up to ``max_failures`` times (-1: always), as a worker group's restart is."""
    failures, threads = 0, torch.get_num_threads()  # the loop sets the worker's; this process keeps its own
    while True:
        session = InProcess(run_dir, datasets, keep, on_report)
        set_train_fn_utils(session)
        try:
            train_loop_per_worker({"plan": plan})
            entries = sslab_checkpoint.registered(run_dir)
            if not entries:
                return Result(session.last_metrics or {}, None)
            # A rerun of a finished run trains nothing and reports nothing: its result is the last checkpoint's.
            return Result(session.last_metrics or entries[-1]["metrics"], Checkpoint(str(run_dir / entries[-1]["name"])))
        except Exception as e:
            # The failed attempt's frames hold its Ray Data iterators: close them now, while Ray is
            # up, not when the caller drops the exception (a driver may have shut Ray down by then).
            traceback.clear_frames(e.__traceback__)
            if isinstance(e, SslabError) or (max_failures != -1 and failures >= max_failures):
                raise
            failures += 1
            log.warning("training failed (%s: %s); restarting from the last checkpoint (failure %d of %s)",
                        type(e).__name__, e, failures, "any" if max_failures == -1 else max_failures)
        finally:
            set_train_fn_utils(None)  # this process is a driver again
            torch.set_num_threads(threads)
