"""Experiment tracking, from rank 0 only: TensorBoard event files in every run, MLflow and
Weights & Biases on request, through Ray's own integrations (``setup_mlflow``, ``setup_wandb``).

A resumed run continues the same MLflow and W&B run (their ids are kept in the run directory),
and TensorBoard drops the events logged after the checkpoint it resumed from; so does
``metrics.jsonl`` its rows (:func:`cut_history`), so each holds one row per step.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from sslab.config import Config
from sslab.errors import ConfigError
from sslab.files import write_whole
from sslab.protocol import is_fixed_protocol

HISTORY = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
MLFLOW_ID_FILE = ".mlflow_run_id"
WANDB_ID_FILE = ".wandb_run_id"


def check(cfg: Config) -> None:
    """Refuse, before Ray starts, a tracker whose package is not installed."""
    import importlib.util

    wanted = {"mlflow": ("track.mlflow_uri", cfg.track.mlflow_uri), "wandb": ("track.wandb_project", cfg.track.wandb_project)}
    for module, (key, value) in wanted.items():
        if value and importlib.util.find_spec(module) is None:
            raise ConfigError(f"{key}={value!r} needs the {module} package: pip install 'sslab[{module}]'")


def tag(key: str) -> str:
    """TensorBoard groups scalars by the part before the slash: fixed-protocol metrics apart."""
    return f"eval/{key}" if is_fixed_protocol(key) else f"train/{key}"


def params(cfg: Config) -> dict[str, str]:
    """The config as flat ``section.key`` parameters (what MLflow and W&B show as the run's config)."""
    from sslab.runs import flatten

    return {k: str(v) for k, v in flatten(cfg.to_dict()).items() if not k.startswith(("run.", "track."))}


class Tracker:
    """Sends each logged step to the trackers the config asks for; a no-op off rank 0."""

    def __init__(self, cfg: Config, run_dir: str | Path, start_step: int, rank: int):
        self.sinks = []
        if rank != 0:
            return
        run_dir = Path(run_dir)
        cut_history(run_dir, start_step)  # as purge_step does below: the steps after it are logged again
        if cfg.track.tensorboard:
            from tensorboardX import SummaryWriter

            # purge_step: events after the resumed checkpoint belong to the attempt that died.
            self.sinks.append(TensorBoard(SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=start_step + 1)))
        if cfg.track.mlflow_uri:
            self.sinks.append(MLflow(cfg, run_dir))
        if cfg.track.wandb_project:
            self.sinks.append(Wandb(cfg, run_dir))

    def log(self, metrics: dict) -> None:
        scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))
                   and k not in ("step", "wall_time")}  # each sink keeps its own wall time
        for sink in self.sinks:
            sink.log(scalars, int(metrics["step"]))

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def cut_history(run_dir: str | Path, step: int) -> None:
    """Cut ``metrics.jsonl`` back to its rows of steps up to ``step``, the checkpoint a run resumes
    from: the attempt that died logged the later ones, and this one logs them again. A torn line
    (a kill mid-write) goes too. The cut file replaces the old one whole (written beside it, then
    renamed), so a reader never sees half of it; a file with nothing to cut is left untouched."""
    path = Path(run_dir) / HISTORY
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.endswith("\n") and (at := step_of(line)) is not None and at <= step]
    if kept != lines:
        write_whole(path, "".join(kept))


def step_of(line: str) -> int | None:
    """The step a ``metrics.jsonl`` line logged, or None for a line that is not a whole row."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row.get("step") if isinstance(row, dict) and isinstance(row.get("step"), int) else None


class TensorBoard:
    def __init__(self, writer):
        self.writer = writer

    def log(self, scalars: dict, step: int) -> None:
        for k, v in scalars.items():
            self.writer.add_scalar(tag(k), v, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def saved_id(run_dir: Path, name: str) -> str | None:
    path = run_dir / name
    return path.read_text().strip() if path.is_file() else None


class MLflow:
    """One MLflow run per sslab run, named after its directory; a resume continues it."""

    def __init__(self, cfg: Config, run_dir: Path):
        from ray.air.integrations.mlflow import setup_mlflow

        if cfg.track.mlflow_uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses it unless asked
        previous = saved_id(run_dir, MLFLOW_ID_FILE)
        if previous:
            os.environ["MLFLOW_RUN_ID"] = previous  # mlflow.start_run continues that run
        # Parameters are logged once: MLflow refuses a changed value (a resume may raise max_steps).
        self.mlflow = setup_mlflow(None if previous else params(cfg), tracking_uri=cfg.track.mlflow_uri,
                                   experiment_name=cfg.track.mlflow_experiment, run_name=run_dir.name,
                                   create_experiment_if_not_exists=True, tags={"sslab.run_dir": str(run_dir)},
                                   rank_zero_only=False)  # only rank 0 builds a Tracker with sinks
        (run_dir / MLFLOW_ID_FILE).write_text(self.mlflow.active_run().info.run_id)

    def log(self, scalars: dict, step: int) -> None:
        self.mlflow.log_metrics(scalars, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


class Wandb:
    """One W&B run per sslab run; ``track.wandb_mode=offline`` writes it under the run directory
    for a later ``wandb sync``."""

    def __init__(self, cfg: Config, run_dir: Path):
        from ray.air.integrations.wandb import setup_wandb

        if cfg.track.wandb_mode == "offline":
            os.environ["WANDB_MODE"] = "offline"  # Ray's setup asks for an API key otherwise
        run_id = saved_id(run_dir, WANDB_ID_FILE) or uuid.uuid4().hex[:8]
        (run_dir / WANDB_ID_FILE).write_text(run_id)
        self.run = setup_wandb(params(cfg), project=cfg.track.wandb_project, id=run_id, name=run_dir.name,
                               resume="allow", dir=str(run_dir), mode=cfg.track.wandb_mode, rank_zero_only=False)

    def log(self, scalars: dict, step: int) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()
