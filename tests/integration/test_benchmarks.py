"""Every benchmark script runs at its smallest size, as `make bench` runs it, so none can rot.

Not timed: the figures at this size mean nothing; what is checked is that each script measures
both sides, writes its JSON, and that RESULTS.md is assembled from them (`make test-bench`).
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.bench]

RUN = Path(__file__).parents[2] / "benchmarks" / "run.py"


@pytest.mark.parametrize("script", ["data_pipeline", "training", "search", "trial_overhead", "scale", "parity", "gpu"])
def test_script_runs_at_smoke_size_and_lands_in_results(script, tmp_path):
    out, md = tmp_path / "results", tmp_path / "RESULTS.md"
    subprocess.run([sys.executable, str(RUN), "--only", script, "--size", "smoke", "--reps", "1",
                    "--out", str(out), "--results", str(md)], check=True, timeout=900)
    result = json.loads((out / f"{script}.json").read_text())
    assert result["size"] == "smoke" and result["reps"] == 1 and result["versions"]["torch"]
    for fig in result["figures"]:
        assert len(fig["ratio"]) == 1 and all(math.isfinite(x) and x > 0 for x in fig["ratio"] + fig["ours"] + fig["theirs"])
        assert fig["name"] in md.read_text() and fig["note"] in md.read_text()  # what each side counts
    figures = {fig["name"]: fig for fig in result["figures"]}
    if script == "data_pipeline":  # the HF collator as run_mlm.py configures it
        assert "special_tokens_mask" in figures["data (b): cached blocks to masked batches / HF MLM collator with "
                                                "special_tokens_mask"]["note"]
        assert any(note.startswith("the segmenter's cost: ") for note in result["notes"])  # Chinese whole words
    if script == "training" and Path("/proc/stat").exists():  # every core each side used, and where they went
        overhead = figures["training overhead: sslab pretrain (1 worker) / bare PyTorch loop, tokens per core-second"]
        assert overhead["unit"] == "tokens/core-s" and "every process of the run" in overhead["note"]
        assert sum(note.startswith("cores in the steady window") for note in result["notes"]) == 2
        assert any(note.startswith("wall clock, sslab 1 worker / bare loop") for note in result["notes"])
    if script == "search":  # ASHA's evaluations at their measured cost
        compute = figures["search compute: ASHA / every trial to the end, in training steps with evaluations counted"]
        assert compute["unit"] == "step-equivalents" and "evaluations" in compute["note"]
        assert "an evaluation = " in result["notes"][0]
    if script == "trial_overhead":  # every part measured by the marks, each case beside the empty trainer
        table = result["notes"][0]
        for part in ("imports and unpickling", "model build", "first batch and step", "evaluation", "checkpoint",
                     "export", "Train controller and worker group", "fixed cost"):
            assert f"| {part} |" in table, part
    if script == "parity":  # MLM and CLM, each against its HF recipe in both block formats, lower is better
        assert len(figures) == 4 and all(f["lower_is_better"] and f["goal"] == 1.0 for f in figures.values())
        assert {name.rsplit(", ", 1)[1] for name in figures} == {"HF group_texts blocks", "sslab packed blocks"}
    if script == "gpu" and not result["params"]["peak_flops"]:
        assert any("MFU not measured" in note for note in result["notes"])
    else:
        assert result["figures"], f"{script} measured nothing"
