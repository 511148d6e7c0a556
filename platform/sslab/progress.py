"""Progress lines with an ETA: the training loop's (one per report, rank 0 only) and those of the
long steps before it (the tokenizer's sample, the pipeline)."""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
import time
from typing import Iterable, Iterator

from sslab.protocol import is_fixed_protocol


TIMELINE = "SSLAB_TIMELINE"
"""Environment variable naming a file every sslab process appends its stage marks to
(``benchmarks/trial_overhead.py`` breaks a trial's wall time into parts with them)."""


def mark(event: str) -> None:
    """Append ``event`` with the time, this process and its start time to ``$SSLAB_TIMELINE``, if
    set; nothing otherwise. Called at stage boundaries only (start-up, evaluations, checkpoints,
    teardown), never per step."""
    path = os.environ.get(TIMELINE)
    if path:
        line = {"event": event, "t": time.time(), "pid": os.getpid(), "proc_start": process_start()}
        with open(path, "a") as f:  # one short O_APPEND write: lines of several processes do not interleave
            f.write(json.dumps(line) + "\n")


@functools.cache
def process_start() -> float | None:
    """When this process started (Unix time), from /proc; None where there is no /proc."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def fmt_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Throughput and the share of time spent waiting for data over the last reporting window
    (evaluation time excluded), and an ETA."""

    def __init__(self, total_steps: int, start_step: int, quiet: bool = False):
        self.total, self.step, self.quiet = total_steps, start_step, quiet
        self.window_start = self.last_tick = time.perf_counter()
        self.window_tokens, self.window_waited, self.train_seconds, self.session_steps = 0, 0.0, 0.0, 0
        self.tokens_per_s = self.data_wait = 0.0

    def tick(self, tokens: int, waited_s: float = 0.0) -> None:
        """Count one finished optimizer step of ``tokens`` tokens (all workers), of which this
        worker spent ``waited_s`` seconds waiting for data."""
        self.step += 1
        self.session_steps += 1
        self.window_tokens += tokens
        self.window_waited += waited_s
        self.last_tick = time.perf_counter()
        elapsed = self.last_tick - self.window_start
        if elapsed > 0:
            self.tokens_per_s = self.window_tokens / elapsed
            self.data_wait = min(1.0, self.window_waited / elapsed)

    def line(self, metrics: dict) -> None:
        """Print the progress line, then start a new window (so report time is not counted)."""
        self.train_seconds += self.last_tick - self.window_start
        if not self.quiet:
            per_step = self.train_seconds / max(1, self.session_steps)
            # The objective's parts (gen_loss, nsp_loss …), then the fixed-protocol metrics.
            extra = "".join(f" | {k} {v:.4g}" for k, v in metrics.items()
                            if (is_fixed_protocol(k) or k.endswith(("_loss", "_acc")))
                            and isinstance(v, float))
            print(f"[sslab] step {self.step}/{self.total} | loss {metrics['loss']:.4f} | lr {metrics['lr']:.2e} "
                  f"| {self.tokens_per_s / 1e3:.1f}k tok/s{extra} | eta {fmt_duration(per_step * (self.total - self.step))}",
                  file=sys.__stdout__, flush=True)  # past Ray Train's print-to-logger patch
        self.window_start, self.window_tokens, self.window_waited = time.perf_counter(), 0, 0.0


def say(message: str, quiet: bool = False) -> None:
    if not quiet:
        print(f"[sslab] {message}", file=sys.__stdout__, flush=True)


NOISE = ("Progress bars disabled", "does not have any available CPUs", "execution finished in",
         "Data sink Parquet finished")
"""Ray Data lines that mislead or only repeat: bars are off on purpose in a quiet run, a trial's own
task holds the CPU that Ray Data finds taken (its tasks get the CPU the search left them), and a
line per dataset finished says nothing sslab's own progress lines do not."""


class DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in NOISE)


@contextlib.contextmanager
def quiet_libraries(quiet: bool):
    """While a run works in this process: Ray Data's line per dataset it finishes ("execution
    finished", "Data sink Parquet finished": sslab says what its stages did) and the :data:`NOISE`
    warnings dropped. In a quiet run (every trial of a search) also Ray Data's and Ray Train's
    other info lines ("Moving model to device") and transformers' bar of the export's shards. A
    worker group's processes get the same from Train's ``LoggingConfig``; a run trained in
    process needs it here."""
    from transformers.utils import logging as hf_logging

    loggers = [logging.getLogger(name) for name in ("ray.data", "ray.train")]
    levels, drop = [lg.level for lg in loggers], DropNoise()
    handlers = [h for lg in loggers for h in lg.handlers] + logging.getLogger("ray").handlers
    bars = hf_logging.is_progress_bar_enabled()
    for h in handlers:
        h.addFilter(drop)
    if quiet:
        for lg in loggers:
            lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        for h in handlers:
            h.removeFilter(drop)
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def stage(what: str, quiet: bool = False):
    """``[sslab] what ...`` on entry and ``what: done in Ns`` on exit."""
    say(f"{what} ...", quiet)
    start = time.perf_counter()
    yield
    say(f"{what}: done in {time.perf_counter() - start:.0f}s", quiet)


def counting(items: Iterable, total: int, what: str, quiet: bool = False, every_s: float = 5.0) -> Iterator:
    """Yield ``items``, printing ``what: n/total | rate | eta`` every ``every_s`` seconds."""
    start = last = time.perf_counter()
    for n, item in enumerate(items, 1):
        yield item
        now = time.perf_counter()
        if not quiet and now - last >= every_s:
            rate = n / (now - start)
            say(f"{what}: {n:,}/{total:,} | {rate:,.0f}/s | eta {fmt_duration((total - n) / rate)}")
            last = now
