"""A search whose driver is killed (SIGKILL of the driver and the Ray it started) and rerun with
``--resume`` keeps its finished trials without re-running them, lists each trial once, and
keeps the searcher's state: the trials it had proposed are the ones it finishes."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

import sslab

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

TRIAL = ["model.preset=tiny", "corpus.synthetic.num_docs=400", "train.seq_len=32", "train.batch_size=8",
         "train.lr=2e-3", "train.warmup_steps=2", "train.max_steps=20", "train.eval_every=10",
         "train.checkpoint_every=10", "train.log_every=10", "eval.max_blocks=32", "eval.probe_docs=60"]


SAMPLES = 3


def steps_logged(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_killed_search_resumes_without_rerunning_finished_trials(ray_cluster, tokenizer_dir, tmp_path):
    # Trials of two Ray Train workers each: a TorchTrainer inside the Tune trial.
    out, trial = tmp_path / "s", TRIAL + ["resources.workers=2", f"tokenizer.path={tokenizer_dir}"]
    args = ["tune", str(spec_file(tmp_path)), "--out", str(out), *trial]
    log = (tmp_path / "driver.log").open("w")
    driver = subprocess.Popen([sys.executable, "-m", "sslab.cli", *args], start_new_session=True,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        first = wait_for_finished_trial(out, driver, timeout_s=400)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started
        driver.wait()
    # the live progress line, appended to the log (not a terminal) once per report
    progress = [line for line in (tmp_path / "driver.log").read_text().splitlines() if line.startswith("[sslab] search ")]
    assert any(re.search(r": \d finished, 1 running, \d pending \| best eval_mlm_loss \d[\d.]* \(\w+\) "
                         r"\| \d+\.\d\d steps/s \| eta (≤ )?\d+:\d\d:\d\d$", line) for line in progress), progress[-5:]
    before = (first / "summary.json").stat().st_mtime, steps_logged(first)
    proposed = {p.name: lr_of(p) for p in (out / "trials").iterdir()}  # what the searcher had drawn
    with pytest.raises(sslab.RunError, match="--resume"):
        sslab.tune(spec_file(tmp_path), out=out, overrides=trial)
    result = sslab.tune(spec_file(tmp_path), out=out, resume=True, overrides=trial)
    table = result.table
    assert len(table) == SAMPLES and table["trial_id"].is_unique, table
    assert (table["status"] == "FINISHED").all(), table
    rows = pd.read_csv(result.results_csv)
    assert len(rows) == SAMPLES and rows["trial_id"].is_unique  # no trial listed twice
    assert ((first / "summary.json").stat().st_mtime, steps_logged(first)) == before  # not re-run
    # The searcher went on from its saved state: the trials it had proposed kept their draws, and
    # the rest are new draws (a searcher restarted from its seed would repeat the first ones).
    finished = {p.name: lr_of(p) for p in (out / "trials").iterdir()}
    assert {k: finished[k] for k in proposed} == proposed
    assert len(set(finished.values())) == SAMPLES, finished
    assert all(json.loads((p / "summary.json").read_text())["num_workers"] == 2 for p in (out / "trials").iterdir())


def lr_of(run_dir: Path) -> float:
    return yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["lr"]


def spec_file(tmp_path: Path) -> Path:
    """Three random draws of train.lr from a seeded searcher, ranked by masked-token loss."""
    path = tmp_path / "three_lrs.yaml"
    if not path.exists():
        path.write_text(json.dumps({  # JSON is YAML
            "base": {"objective": "mlm", "corpus": "synthetic"}, "metric": "eval_mlm_loss", "mode": "min",
            "space": {"train.lr": {"loguniform": [1e-4, 3e-3]}}, "num_samples": SAMPLES,
            "search": {"name": "random", "seed": 7}, "max_concurrent_trials": 1}))
    return path


def wait_for_finished_trial(out: Path, driver: subprocess.Popen, timeout_s: float) -> Path:
    """The first trial whose run finished and whose end Tune has recorded in its experiment state."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        assert driver.poll() is None, f"the search exited early ({driver.returncode}): see driver.log"
        done = [p.parent for p in (out / "trials").glob("*/summary.json")]
        states = list((out / "tune").glob("experiment_state*.json"))
        if done and states and "TERMINATED" in states[0].read_text():
            return done[0]
        time.sleep(2.0)
    raise AssertionError(f"no trial finished in {timeout_s:.0f}s")
