"""Ray Tune searches end to end: ASHA stops weak trials and gives their resources back, a
diverging trial errors alone, PBT copies a better trial's state, and a killed search resumes
without re-running finished trials. Trials are tiny runs on the synthetic corpus.

ASHA and PBT run twice: with trials trained in process (the default on one machine) in
``make test``, and with trials trained by worker groups (the path of multi-node clusters, marked
``cluster``) in ``make test-cluster``."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest
import ray
from transformers import AutoModel

import sslab

pytestmark = pytest.mark.slow

TRIAL = ["model.preset=tiny", "corpus.synthetic.num_docs=400", "train.seq_len=32", "train.batch_size=8",
         "train.lr=2e-3", "train.warmup_steps=2", "train.max_steps=20", "train.eval_every=10",
         "train.checkpoint_every=10", "train.log_every=10", "eval.max_blocks=32", "eval.probe_docs=60"]


def space(**extra) -> dict:
    """A search over train.lr of the MLM objective, ranked by the fixed-protocol masked-token loss."""
    return {"base": {"objective": "mlm", "corpus": "synthetic"}, "metric": "eval_mlm_loss", "mode": "min",
            "space": {"train.lr": {"grid": [3e-3, 1e-5, 1e30]}}, "num_samples": 1, **extra}


def free_resources_return(timeout_s: float = 30.0) -> bool:
    """Every placement group is gone and every CPU is free again (within ``timeout_s``)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        pgs = ray.util.placement_group_table().values()
        if all(pg["state"] == "REMOVED" for pg in pgs) and \
                ray.available_resources().get("CPU", 0) == ray.cluster_resources()["CPU"]:
            return True
        time.sleep(1.0)
    return False


def steps_logged(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


BOTH_PATHS = [pytest.param("by a worker group", marks=pytest.mark.cluster), "in process"]


@pytest.mark.parametrize("trained", BOTH_PATHS)
def test_asha_stops_weak_trials_a_diverging_one_errors_and_resources_return(ray_cluster, tokenizer_dir, tmp_path,
                                                                            trained):
    # One trial at a time, in grid order: the first sets the bar at step 10, the one at lr 1e-5
    # falls below it and stops, and lr 1e30 overflows to NaN within a few steps. Trials that
    # train in process (scaling.in_process) report, stop and fail the same way.
    in_process = trained == "in process"
    result = sslab.tune(space(scheduler={"name": "asha", "grace_period": 10, "reduction_factor": 2},
                              max_concurrent_trials=1),
                        out=tmp_path / "s", overrides=TRIAL + [f"tokenizer.path={tokenizer_dir}",
                                                               f"scaling.in_process={str(in_process).lower()}",
                                                               f"data.cache_dir={tmp_path / 'cache'}"])
    table = result.table
    # One tokenisation for the whole search, before its first trial: one entry, written once.
    (entry,) = (tmp_path / "cache" / "data").iterdir()
    assert len([p for p in entry.iterdir() if p.name.startswith("attempt-")]) == 1
    assert len(table) == 3 and table["trial_id"].is_unique
    assert list(table["status"]) == ["FINISHED", "STOPPED", "ERROR"], table
    assert table.loc[0, "train.lr"] == 3e-3 and table.loc[0, "step"] == 20
    assert table.loc[1, "step"] == 10
    assert "non-finite" in table.loc[2, "error"]
    # Ranked by the fixed-protocol metric, best first; results.csv holds the same table.
    assert table.loc[0, "eval_mlm_loss"] < table.loc[1, "eval_mlm_loss"]
    saved = pd.read_csv(result.results_csv)
    assert list(saved["trial_id"]) == list(table["trial_id"])
    assert {"train.lr", "status", "eval_mlm_loss", "probe_acc", "step", "tokens", "wall_s"} <= set(saved.columns)
    # best/ is the best trial's model and tokenizer, loadable offline.
    assert result.best["trial_id"] == table.loc[0, "trial_id"]
    assert AutoModel.from_pretrained(result.best["model_dir"], local_files_only=True) is not None
    assert free_resources_return(), ray.util.placement_group_table()
    registries = [(result.search_dir / "trials" / t / "checkpoints.json").is_file() for t in table["trial_id"][:2]]
    assert registries == [in_process] * 2  # sslab's own checkpoint registry is the in-process path's


@pytest.fixture(scope="module", params=BOTH_PATHS)
def pbt_search(request, ray_cluster, tokenizer_dir, tmp_path_factory):
    """One synchronous PBT search of two trials, shared by the PBT tests: at step 10 both pause,
    the weak one (lr 1e-5) takes the strong one's checkpoint, and both restart from their
    checkpoints to finish at step 20. Every step is logged, so each trial's first step after the
    exploit is in its metrics.jsonl. Once with trials trained by worker groups, once in process."""
    spec = space(scheduler={"name": "pbt", "perturbation_interval": 10, "quantile_fraction": 0.5,
                            "resample_probability": 0.0, "mutations": ["train.lr"]},
                 space={"train.lr": {"grid": [3e-3, 1e-5]}})
    out = tmp_path_factory.mktemp("pbt") / "s"
    in_process = str(request.param == "in process").lower()
    return sslab.tune(spec, out=out, overrides=TRIAL + [f"tokenizer.path={tokenizer_dir}", "train.log_every=1",
                                                        f"scaling.in_process={in_process}"])


def rows_at(run_dir: Path, step: int) -> list[dict]:
    """The rows metrics.jsonl holds for ``step`` (one: a restart cuts it back to the step it restarts from)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if row["step"] == step]


def test_pbt_restarts_a_weak_trial_from_a_strong_ones_checkpoint(pbt_search):
    result = pbt_search
    assert list(result.table["status"]) == ["FINISHED", "FINISHED"], result.table
    trials = sorted((result.search_dir / "trials").iterdir())
    restarted = [t for t in trials if list(t.glob("restart_*"))]
    assert restarted, "no trial was exploited"
    for run_dir in restarted:
        # The restart continued from the donor's step, not from 0: its first checkpoint is past 10.
        first = sorted(p.name for p in next(run_dir.glob("restart_*")).glob("checkpoint_*"))[0]
        assert int(first.split("_")[1]) > 10, first
        assert steps_logged(run_dir)[-1] == 20
        lr = float(next(line for line in (run_dir / "config.yaml").read_text().splitlines()
                        if line.strip().startswith("lr:")).split(":")[1])
        assert lr in (3e-3, 1e-5), lr  # explore moved it along the grid, never outside it
    assert free_resources_return()


def test_pbt_exploit_restarts_the_weak_trial_from_the_donors_weights_not_its_own(pbt_search):
    # The loss a step logs is the forward pass of the weights it starts from, on that step's batch.
    # Both trials draw the same batches (same seed and data) and have no dropout, so after the
    # exploit the weak trial's step 11 must repeat the donor's step 11 exactly: the learning rate
    # it now trains at only acts from that step's update on. Had it reloaded its own step-10
    # checkpoint (weights trained at lr 1e-5), it would repeat its own loss instead.
    trials = sorted((pbt_search.search_dir / "trials").iterdir())
    decided = {t: rows_at(t, 10)[0] for t in trials}  # the evaluation PBT ranked them by (first written)
    weak, donor = sorted(trials, key=lambda t: decided[t]["eval_mlm_loss"], reverse=True)
    assert next(weak.glob("restart_*"), None), "the weak trial was not exploited"
    # Before the exploit the two had trained apart: their step-10 losses are far from equal.
    assert abs(decided[weak]["loss"] - decided[donor]["loss"]) > 0.1, decided
    # Both restarts went on from step 10, not from scratch, and each run's metrics.jsonl holds one
    # row per step: what a trial logged past 10 before its restart was cut.
    assert all(len(rows_at(t, step)) == 1 for t in trials for step in range(1, 21))
    after = {t: rows_at(t, 11)[-1] for t in trials}  # the restarts' step 11 (an earlier one was cut)
    assert after[weak]["loss"] == pytest.approx(after[donor]["loss"], rel=1e-5), (after, decided[weak])
    assert after[weak]["grad_norm"] == pytest.approx(after[donor]["grad_norm"], rel=1e-4), after


def test_a_search_ranks_trials_by_a_downstream_score_of_their_models(ray_cluster, tokenizer_dir, tmp_path):
    from sslab import downstream, synthetic
    from sslab.config import SyntheticConfig

    labelled = tmp_path / "labelled.jsonl"
    pd.DataFrame(synthetic.generate(SyntheticConfig(), 5000, 5240)).to_json(labelled, orient="records", lines=True)
    result = sslab.tune(space(metric="downstream_probe_macro_f1", mode="max", downstream={"data": str(labelled)},
                              space={"objective.mask_ratio": {"grid": [0.15, 0.5]}}),
                        out=tmp_path / "s", overrides=TRIAL + [f"tokenizer.path={tokenizer_dir}"])
    table = result.table
    assert list(table["status"]) == ["FINISHED", "FINISHED"], table
    assert table["downstream_probe_macro_f1"].is_monotonic_decreasing  # ranked by it, best first
    for row in table.itertuples():  # the score is sslab eval's on the trial's exported model
        model_dir = result.search_dir / "trials" / row.trial_id / "model"
        again = downstream.classify(model_dir, labelled, finetune=False, max_length=32)
        assert row.downstream_probe_macro_f1 == pytest.approx(again["probe_macro_f1"])
        assert row.downstream_probe_acc == pytest.approx(again["probe_acc"])
    assert result.best["trial_id"] == table.loc[0, "trial_id"]


def test_ranking_by_a_downstream_score_needs_its_data_and_a_fifo_scheduler(tmp_path):
    with pytest.raises(sslab.ConfigError, match="needs a downstream section"):
        sslab.tune(space(metric="downstream_probe_acc"), out=tmp_path / "a")
    labelled = tmp_path / "l.csv"
    pd.DataFrame({"text": ["a b", "c d", "e f", "g h"] * 3, "label": ["x", "y"] * 6}).to_csv(labelled, index=False)
    with pytest.raises(sslab.ConfigError, match="scheduler.name='asha'.*fifo"):
        sslab.tune(space(metric="downstream_probe_acc", downstream={"data": str(labelled)}, scheduler="asha"),
                   out=tmp_path / "b")
    with pytest.raises(sslab.ConfigError, match="missing.csv"):
        sslab.tune(space(metric="downstream_probe_acc", downstream={"data": str(tmp_path / "missing.csv")}),
                   out=tmp_path / "c")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
