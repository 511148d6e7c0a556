"""The live progress line of a search, one per trial report: trials finished, stopped, failed,
running and pending, the best result so far, the search's steps per second and its ETA.

It is a Ray Tune :class:`~ray.tune.Callback` (Tune calls it in the driver on every trial's start,
report and end). On a terminal tqdm redraws the line in place; anywhere else (a log file, CI,
``ray job logs``) each report appends it as a line of its own. It also marks each trial's start
and end in the driver for :func:`sslab.progress.mark` (``benchmarks/trial_overhead.py``).
"""
from __future__ import annotations

import sys
import time

from ray.tune import Callback

from sslab.progress import fmt_duration, mark


class SearchProgress(Callback):
    """Progress of a search ranked by ``metric`` (``mode`` min or max) whose trials train
    ``max_steps`` steps unless ``early_stopping`` (ASHA) stops them first; ``quiet`` prints nothing."""

    def __init__(self, name: str, metric: str, mode: str, max_steps: int, early_stopping: bool, stream=None,
                 quiet: bool = False):
        self.name, self.metric, self.mode, self.max_steps = name, metric, mode, max_steps
        self.early_stopping, self.quiet = early_stopping, quiet
        self.stream = stream
        self.reset()

    def reset(self) -> None:
        self.total = 0
        self.start = time.monotonic()
        self.state: dict[str, str] = {}  # trial id -> running / finished / stopped / failed
        self.step: dict[str, int] = {}  # trial id -> its last reported step
        self.gained = 0  # steps trained in this session (a resumed search counts from its resume)
        self.best: tuple[float, str] | None = None
        self.bar = None
        self.last = ""

    def __getstate__(self) -> dict:
        # Tune pickles the run config, callbacks included, into its experiment state: a resumed
        # search starts its count afresh and opens its own terminal line.
        state = dict(self.__dict__)
        state["bar"] = None
        return state

    # ------------------------------------------------------------ Tune's hooks

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info) -> None:
        self.reset()
        self.total = int(total_num_samples or num_samples or 0)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        mark("tune.trial_start")
        self.state[trial.trial_id] = "running"
        self.step.setdefault(trial.trial_id, int((trial.last_result or {}).get("step") or 0))
        self.show()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        tid, step = trial.trial_id, int(result.get("step") or 0)
        self.gained += max(0, step - self.step.get(tid, 0))
        self.step[tid] = step
        self.state[tid] = "running"
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and value == value:
            better = self.best is None or (value < self.best[0] if self.mode == "min" else value > self.best[0])
            if better:
                self.best = (float(value), tid)
        self.show()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        mark("tune.trial_end")
        done = self.step.get(trial.trial_id, 0) >= self.max_steps
        self.state[trial.trial_id] = "finished" if done else "stopped"
        self.show()

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        mark("tune.trial_end")
        self.state[trial.trial_id] = "failed"
        self.show()

    def on_experiment_end(self, trials, **info) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    # ------------------------------------------------------------ the line

    def line(self) -> str:
        """``search N: 2 finished, 1 stopped, 2 running, 1 pending | best … | 3.1 steps/s | eta 0:04:10``."""
        counts = {s: sum(1 for v in self.state.values() if v == s) for s in ("finished", "stopped", "failed", "running")}
        pending = max(0, self.total - len(self.state))
        parts = ", ".join(f"{n} {s}" for s, n in counts.items() if n or s in ("finished", "running"))
        best = f"best {self.metric} {self.best[0]:.4g} ({self.best[1]})" if self.best else f"best {self.metric} —"
        elapsed = time.monotonic() - self.start
        rate = self.gained / elapsed if elapsed > 0 else 0.0
        left = sum(self.max_steps - self.step.get(t, 0) for t, s in self.state.items() if s == "running")
        left += pending * self.max_steps
        # ASHA may stop any trial still running: the remaining steps are an upper bound
        eta = ("≤ " if self.early_stopping and left else "") + fmt_duration(left / rate) if rate > 0 else "—"
        return (f"search {self.name}: {parts}, {pending} pending | {best} | {rate:.2f} steps/s "
                f"| eta {eta if left else '0:00:00'}")

    def show(self) -> None:
        if self.quiet:
            return
        line = self.line()
        if line == self.last:
            return
        self.last = line
        stream = self.stream or sys.__stderr__
        if not stream.isatty():
            print(f"[sslab] {line}", file=stream, flush=True)
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=None, bar_format="[sslab] {desc}", file=stream, dynamic_ncols=True, leave=True)
        self.bar.set_description_str(line)
