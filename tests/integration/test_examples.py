"""The scripts in examples/ run as a user would run them (``python examples/x.py key=value …``),
at tiny scale, on the shared local Ray cluster."""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sslab import objectives, tokenizer
from sslab.objectives import RowRandom

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).parents[2] / "examples"
SMALL = ["corpus.synthetic.num_docs=1000", "train.max_steps=20", "train.eval_every=20", "train.warmup_steps=5",
         "eval.max_blocks=64", "eval.probe_docs=100", "run.quiet=true"]


def run_example(name: str, *args, monkeypatch) -> dict:
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name), *args])
    # An example may register an objective: it leaves the registry with the test.
    monkeypatch.setattr(objectives.base, "_REGISTRY", dict(objectives.base._REGISTRY))
    return runpy.run_path(str(EXAMPLES / name), run_name="__main__")


def test_one_run_pretrains_evaluates_downstream_and_writes_a_report(ray_cluster, tokenizer_dir, tmp_path,
                                                                     monkeypatch, capsys):
    out = tmp_path / "run"
    run_example("pretrain_one_run.py", *SMALL, f"run.out={out}", f"tokenizer.path={tokenizer_dir}",
                monkeypatch=monkeypatch)
    printed = capsys.readouterr().out
    assert "eval_mlm_loss" in printed and "probe_acc" in printed and "finetune_acc" in printed
    assert (out / "model" / "config.json").is_file()
    assert f"report: {out / 'report' / 'index.html'}" in printed and (out / "report" / "index.html").is_file()


def test_a_custom_objective_from_outside_the_package_registers_and_trains(ray_cluster, tokenizer_dir, tmp_path,
                                                                          monkeypatch, capsys):
    out = tmp_path / "span_mlm"
    scope = run_example("custom_objective.py", *SMALL, f"run.out={out}", f"tokenizer.path={tokenizer_dir}",
                        "objective.mean_span=4", monkeypatch=monkeypatch)
    assert objectives.get("span_mlm") is scope["SpanMLM"]  # registered from outside the package
    assert "eval_mlm_loss" in capsys.readouterr().out  # MLM's fixed protocol: comparable with plain MLM
    saved = yaml.safe_load((out / "config.yaml").read_text())["objective"]
    assert saved["name"] == "span_mlm" and saved["mean_span"] == 4
    assert (out / "model" / "config.json").is_file()

    # Its masking: whole spans, about mask_ratio of the tokens, labels the original ids.
    vocab = tokenizer.vocab_of(tokenizer.load_tokenizer(tokenizer_dir))
    span = scope["SpanMLM"](scope["SpanMLMConfig"](mask_ratio=0.2, mean_span=4.0), vocab)
    ids = np.random.default_rng(0).choice(vocab.normal_ids, size=(256, 128))
    out = span.transform({"input_ids": ids}, RowRandom(0, 0, np.arange(256)))
    masked = out["labels"] != -100
    assert 0.15 < masked.mean() < 0.25
    assert (out["labels"][masked] == ids[masked]).all() and (out["input_ids"][masked] == vocab.mask_id).all()
    runs = np.diff(np.flatnonzero(np.diff(np.pad(masked, ((0, 0), (1, 1))).astype(int), axis=1)))
    assert runs[::2].mean() > 3  # mean length of masked runs: spans, not single tokens


def test_the_sweep_runs_its_search_and_writes_a_report(ray_cluster, tokenizer_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the script writes runs/examples/sweep under the working directory
    run_example("sweep.py", "num_samples=1", *SMALL, "scheduler.grace_period=10", f"tokenizer.path={tokenizer_dir}",
                monkeypatch=monkeypatch)
    search_dir = tmp_path / "runs" / "examples" / "sweep"
    table = pd.read_csv(search_dir / "results.csv")
    assert len(table) == 1 and table.loc[0, "status"] == "FINISHED"  # ranking is test_search.py's
    assert (search_dir / "report" / "index.html").is_file()
    assert "best model:" in capsys.readouterr().out
