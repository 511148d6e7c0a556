"""`sslab study NAME` end to end, as a user runs it: the command in a fresh process with no Ray
running, at the study's smallest size. It prints the paper's numbers beside sslab's and each
direction the paper states with its verdict, and leaves study.md, study.json and a report that
opens with the comparison. The numbers at this size mean nothing; the README's table comes from
the `tiny` size."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

STUDIES = {
    # name: (a paper column header, a direction it states). One study: the others differ in their
    # YAML only (their several seeds and verdicts are tested without Ray in tests/unit/test_study.py),
    # and each run costs make test about a minute.
    "simcse_temperature": ("paper STS-B", "tau 0.05 > tau 1"),
}


def last_eval(run_dir, metric: str) -> float:
    """The metric's last logged value in a trial's metrics.jsonl."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r[metric] for r in rows if metric in r][-1]


@pytest.mark.parametrize("name", list(STUDIES))
def test_sslab_study_prints_the_paper_beside_sslab_and_leaves_its_comparison(name, tmp_path):
    out = tmp_path / "study"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # no Ray to join: it starts its own
    done = subprocess.run([sys.executable, "-m", "sslab.cli", "study", name, "--size", "smoke", "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    column, direction = STUDIES[name]
    stdout = done.stdout
    assert f"[sslab] study {name} at size smoke: the paper's numbers beside sslab's" in stdout
    table = stdout[stdout.index("setting  "):]
    assert column in table and "direction the paper states" in table and direction in table
    comparison = json.loads((out / "study.json").read_text())
    verdicts = [c["verdict"] for c in comparison["claims"]]
    assert all(v == "agrees" or v.endswith("does not reproduce at this size") for v in verdicts), verdicts
    assert comparison["summary"] in stdout.replace("\n", " ")
    # Each sslab value is the trial's last evaluation (not the best of its curve), one trial per setting and seed.
    trials = {t.name: t for t in (out / "trials").iterdir()}
    assert len(trials) == len(comparison["settings"]) * len(comparison["seeds"])
    import pandas as pd

    results = pd.read_csv(out / "results.csv", dtype={"trial_id": str})
    assert (results["status"] == "FINISHED").all() and (results["step"] == comparison["steps"]).all()
    for row in results.itertuples():
        assert getattr(row, comparison["metric"]) == pytest.approx(last_eval(trials[row.trial_id],
                                                                             comparison["metric"]))
    assert (out / "study.md").read_text().startswith(f"# Study {name}, size smoke")
    page = (out / "report" / "index.html").read_text()
    assert page.index(f"Study {name}: the paper beside sslab") < page.index("Trials, best first")
