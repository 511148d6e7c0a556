"""Fixed-protocol metrics (eval_*, probe_*, downstream_*) are the same set wherever sslab ranks,
records or shows results: one rule, in sslab.protocol."""
from __future__ import annotations

import json

import pandas as pd

from sslab import protocol, search, tracking


def test_the_rule_covers_every_protocol_and_nothing_a_run_measures_its_own_way():
    named = ["eval_mlm_loss", "probe_acc", "downstream_topic_acc", "loss", "gen_loss", "lr", "step", "evaluation"]
    assert [k for k in named if protocol.is_fixed_protocol(k)] == ["eval_mlm_loss", "probe_acc", "downstream_topic_acc"]
    assert protocol.fixed_protocol({"loss": 1.0, "probe_acc": 0.5, "eval_x": 2.0}) == {"probe_acc": 0.5, "eval_x": 2.0}


def test_the_best_trials_record_keeps_its_downstream_scores(tmp_path):
    # A search ranked by a downstream task: best/trial.json must carry the score it was ranked by.
    for trial in ("a", "b"):
        (tmp_path / "trials" / trial / "model").mkdir(parents=True)
        (tmp_path / "trials" / trial / "model" / "config.json").write_text("{}")
    table = pd.DataFrame([
        {"trial_id": "b", "train.lr": 1e-3, "status": "FINISHED", "downstream_topic_acc": 0.9, "eval_mlm_loss": 4.0,
         "probe_acc": 0.7, "step": 10, "tokens": 100, "wall_s": 1.0, "error": ""},
        {"trial_id": "a", "train.lr": 1e-2, "status": "FINISHED", "downstream_topic_acc": 0.8, "eval_mlm_loss": 3.9,
         "probe_acc": 0.6, "step": 10, "tokens": 100, "wall_s": 1.0, "error": ""}])
    best = search.export_best(table, tmp_path)
    saved = json.loads((tmp_path / "best" / "trial.json").read_text())
    assert best["trial_id"] == saved["trial_id"] == "b"
    assert saved["metrics"] == {"downstream_topic_acc": 0.9, "eval_mlm_loss": 4.0, "probe_acc": 0.7}
    assert saved["params"] == {"train.lr": 1e-3}


def test_tune_shows_the_ranking_metric_then_every_other_fixed_protocol_metric_first():
    reported = {"loss": 3.0, "step": 10, "tokens": 100, "eval_mlm_loss": 4.0, "downstream_topic_acc": 0.9,
                "probe_acc": 0.7, "device": "cpu"}
    assert list(search.tune_result(reported, "probe_acc"))[:5] == [
        "probe_acc", "downstream_topic_acc", "eval_mlm_loss", "step", "tokens"]


def test_trackers_group_every_fixed_protocol_metric_apart_from_training_values():
    assert [tracking.tag(k) for k in ("eval_mlm_loss", "downstream_topic_acc", "loss")] == [
        "eval/eval_mlm_loss", "eval/downstream_topic_acc", "train/loss"]
