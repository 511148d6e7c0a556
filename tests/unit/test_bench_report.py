"""The benchmarks' own parts: run.py turns the scripts' JSON into RESULTS.md (each figure's median
beside its goal), training.py's CPU-share sampler, and gpu.py's options."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "benchmarks"


def load(name: str, monkeypatch):
    spec = importlib.util.spec_from_file_location(f"sslab_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def common(monkeypatch):
    return load("common", monkeypatch)


def test_a_figure_holds_by_its_median_in_the_goals_direction(common):
    faster = common.Figure("speed", [0.9, 1.2, 1.1], 1.0, [9, 12, 11], [10, 10, 10], "tok/s")
    assert faster.median == 1.1 and faster.holds
    cheaper = common.Figure("compute", [0.3, 0.5, 0.4], 0.35, [3, 5, 4], [10, 10, 10], "steps", lower_is_better=True)
    assert cheaper.median == 0.4 and not cheaper.holds
    assert "MISSED" in cheaper.line() and "<= 0.35" in cheaper.line()


def test_results_md_lists_every_figure_with_goal_verdict_machine_and_versions(common, tmp_path, monkeypatch):
    result = common.Result("benchmarks/training.py", "Training", "full", 3, params={"steps": 70})
    result.figures = [common.Figure("scaling", [1.7, 1.75, 1.72], 1.8, [3.4, 3.5, 3.44], [2, 2, 2], "tokens/s",
                                    "sslab 2 workers", "sslab 1 worker"),
                      common.Figure("overhead", [0.97, 1.0, 0.99], 0.95, [1, 1, 1], [1, 1, 1], "tokens/s")]
    result.notes = ["the machine's ceiling: 1.9x"]
    out = tmp_path / "results"
    result.save(out)
    saved = json.loads((out / "training.json").read_text())
    assert saved["figures"][0]["median"] == 1.72 and saved["figures"][0]["holds"] is False
    md = tmp_path / "RESULTS.md"
    monkeypatch.setattr("sys.argv", ["run.py", "--render", "--out", str(out), "--results", str(md)])
    load("run", monkeypatch).main()
    text = md.read_text()
    assert "| scaling | **1.72** | ≥ 1.8 | **missed** |" in text
    assert "| overhead | **0.99** | ≥ 0.95 | holds |" in text
    assert "the machine's ceiling: 1.9x" in text and "torch " in text and "CPUs" in text


def test_no_results_yet_says_how_to_make_them(tmp_path, monkeypatch):
    md = tmp_path / "RESULTS.md"
    monkeypatch.setattr("sys.argv", ["run.py", "--render", "--out", str(tmp_path / "none"), "--results", str(md)])
    load("run", monkeypatch).main()
    assert "run `make bench`" in md.read_text()


def test_cpu_shares_splits_a_window_into_workers_other_processes_and_idle(monkeypatch):
    training = load("training", monkeypatch)
    cpu = training.CpuShares()
    # (time, CPU seconds so far: train workers, whole machine busy, idle); a 2-core machine.
    cpu.samples = [(9.0, 0.0, 0.0, 0.0), (10.0, 5.0, 6.0, 1.0), (12.0, 8.6, 9.8, 1.2), (14.0, 12.2, 13.6, 1.4)]
    shares = cpu.shares(10.0, 14.0)  # the samples just inside: t=10 and t=14
    assert shares == pytest.approx({"workers": 1.8, "other": 0.1, "idle": 0.1})
    assert cpu.shares(10.5, 13.0) is None  # one sample inside: no rate to read


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads Linux's /proc")
def test_cpu_shares_sees_a_busy_core(monkeypatch):
    training = load("training", monkeypatch)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        with training.CpuShares(every_s=0.1) as cpu:
            time.sleep(1.5)
    finally:
        spinner.kill()
    shares = cpu.shares(0, float("inf"))
    assert shares["workers"] < 0.05  # only Ray Train workers count there: none is training
    assert shares["other"] > 0.8  # the spinner's core
    assert shares["other"] + shares["idle"] == pytest.approx(os.cpu_count(), abs=0.3)  # each core busy or idle


def test_gpu_script_takes_compile_and_without_a_gpu_says_full_size_needs_one():
    import torch
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here: the full size would run")
    done = subprocess.run([sys.executable, str(BENCH / "gpu.py"), "--size", "full", "--compile"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "--size full needs a CUDA GPU" in done.stderr, done.stderr
