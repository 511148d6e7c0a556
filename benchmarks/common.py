"""What every benchmark script shares: its command line, interleaved repetitions, the machine
and versions it ran on, and the JSON file ``benchmarks/run.py`` turns into ``RESULTS.md``.

A figure is a ratio of sslab to the alternative measured in the same process, repetitions
interleaved (A B A B …), so a busy machine slows both sides alike; the median of the per-repetition
ratios is reported beside its goal.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
SIZES = ("smoke", "full")


def parse_args(doc: str, default_reps: int = 3, switches: dict[str, str] | None = None,
               sizes: tuple[str, ...] = SIZES) -> argparse.Namespace:
    """The options every script takes (--size among ``sizes``, --reps, --out), and its own on/off
    ``switches`` (flag: help)."""
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
    p.add_argument("--size", choices=sizes, default="full",
                   help="smoke: the smallest size, a check that the script runs (default: full)")
    p.add_argument("--reps", type=int, default=default_reps, help=f"repetitions (default {default_reps})")
    p.add_argument("--out", default=str(HERE / "results"), help="folder for the JSON results (default: %(default)s)")
    for flag, text in (switches or {}).items():
        p.add_argument(flag, action="store_true", help=text)
    args = p.parse_args()
    if args.reps < 1:
        p.error(f"--reps={args.reps} must be at least 1")
    return args


@dataclass
class Figure:
    """One line of RESULTS.md: sslab against an alternative, as a ratio with its goal."""

    name: str
    ratio: list[float]
    """Per-repetition ratio (higher is better unless ``lower_is_better``)."""
    goal: float
    ours: list[float]
    theirs: list[float]
    unit: str
    ours_label: str = "sslab"
    theirs_label: str = ""
    lower_is_better: bool = False
    note: str = ""

    @classmethod
    def compare(cls, name: str, got: dict[str, list[float]], ours: str, theirs: str, goal: float, unit: str,
                **kw) -> "Figure":
        """The figure of case ``ours`` over case ``theirs`` of an :func:`interleaved` run."""
        return cls(name, ratios(got[ours], got[theirs]), goal, got[ours], got[theirs], unit, ours, theirs, **kw)

    @property
    def median(self) -> float:
        return statistics.median(self.ratio)

    @property
    def holds(self) -> bool:
        return self.median <= self.goal if self.lower_is_better else self.median >= self.goal

    def line(self) -> str:
        sign = "<=" if self.lower_is_better else ">="
        return (f"[bench] {self.name}: {self.median:.3g} (goal {sign} {self.goal:g}, "
                f"{'holds' if self.holds else 'MISSED'}) | {self.ours_label} {statistics.median(self.ours):,.4g} "
                f"vs {self.theirs_label} {statistics.median(self.theirs):,.4g} {self.unit}")


@dataclass
class Result:
    """A script's output: its figures and the parameters it ran with."""

    script: str
    title: str
    size: str
    reps: int
    params: dict
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def save(self, out: str | Path) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        data = asdict(self)
        for fig, d in zip(self.figures, data["figures"]):
            d.update(median=fig.median, holds=fig.holds)
        data["machine"], data["versions"] = machine(), versions()
        path = out / f"{Path(self.script).stem}.json"
        path.write_text(json.dumps(data, indent=2))
        for fig in self.figures:
            print(fig.line(), flush=True)
        print(f"[bench] wrote {path}", flush=True)
        return path


def interleaved(cases: dict[str, Callable[[], float]], reps: int, warmup: bool = False) -> dict[str, list[float]]:
    """Run each case once per repetition, in turn (A B A B …); each returns its measurement.

    ``warmup`` runs each case once, unmeasured, first (Ray starts its worker processes then).
    """
    out: dict[str, list[float]] = {name: [] for name in cases}
    if warmup:
        for name, fn in cases.items():
            print(f"[bench] warm-up {name}: {fn():,.4g}", flush=True)
    for rep in range(reps):
        for name, fn in cases.items():
            value = fn()
            out[name].append(value)
            print(f"[bench] rep {rep + 1}/{reps} {name}: {value:,.4g}", flush=True)
    return out


def ratios(ours: list[float], theirs: list[float]) -> list[float]:
    return [a / b for a, b in zip(ours, theirs)]


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = self.elapsed()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def versions() -> dict:
    out = {}
    for pkg in ("sslab", "ray", "torch", "transformers", "tokenizers", "numpy", "pyarrow"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    try:
        out["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                                       text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return out


def scratch(prefix: str) -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix=f"sslab-bench-{prefix}-")


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stdout, flush=True)
