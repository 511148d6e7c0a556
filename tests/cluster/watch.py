"""Reading a run while it trains, and striking it at a chosen moment."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path


def steps_logged(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.exists() else []


def rows(run_dir: Path) -> list[dict]:
    """The rows logged so far (a line being written is not one yet)."""
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    return [json.loads(line) for line in lines if line.endswith("\n")]


def losses(run_dir: Path) -> dict[int, float]:
    """Loss per step (one row per step, also after a resume)."""
    return {r["step"]: r["loss"] for r in rows(run_dir)}


class CutBack:
    """Ready once ``metrics.jsonl`` holds fewer rows than it did: a restart cut it back to the
    checkpoint it resumed from. ``before``: the rows it held just before."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.before = run_dir, []

    def __call__(self) -> bool:
        logged = rows(self.run_dir)
        if len(logged) < len(self.before):
            return True
        self.before = logged
        return False


def registered(run_dir: Path) -> list[str]:
    """Checkpoints Ray Train has registered (the ones a restart may resume from)."""
    path = run_dir / "checkpoint_manager_snapshot.json"
    if not path.exists():
        return []
    return [c["checkpoint_dir_name"] for c in json.loads(path.read_text())["checkpoint_results"]]


def train_workers() -> list:
    """The live Ray Train worker actors: node id and pid of each."""
    from ray.util.state import list_actors

    return list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")], detail=True)


class When(threading.Thread):
    """Run ``action`` once ``ready()`` holds, polling in the background while a run trains."""

    def __init__(self, ready, action, timeout_s: float = 600):
        super().__init__(daemon=True)
        self.ready, self.action, self.timeout_s, self.done, self.error = ready, action, timeout_s, False, None

    def run(self):
        deadline = time.time() + self.timeout_s
        try:
            while time.time() < deadline:
                if self.ready():
                    self.action()
                    self.done = True
                    return
                time.sleep(0.05)
        except Exception as e:  # surfaced by the test
            self.error = e
