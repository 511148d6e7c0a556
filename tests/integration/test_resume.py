"""Resume equivalence (torchtitan-style): a run that crashes and is rerun from its last checkpoint
produces the losses an uninterrupted run would have produced, step for step."""
from __future__ import annotations

import json

import pytest

import sslab
from sslab.config import load
from sslab.errors import RunError

pytestmark = pytest.mark.slow

STEPS, EVERY, CRASH = 30, 10, 15


def losses(run_dir) -> dict[int, float]:
    """Loss per step from metrics.jsonl; after a resume a step may repeat, and the last wins."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


@pytest.fixture(scope="module")
def overrides(ray_cluster, tiny):
    return lambda out, *extra: tiny(out, "scaling.num_workers=2", f"train.max_steps={STEPS}", "train.log_every=1",
                                    f"train.checkpoint_every={EVERY}", f"train.eval_every={STEPS}",
                                    "eval.probe_docs=0", "model.dropout=0.1", *extra)


@pytest.fixture(scope="module")
def uninterrupted(overrides, tmp_path_factory):
    return sslab.pretrain(load(overrides=overrides(tmp_path_factory.mktemp("a") / "run")))


def test_rerunning_a_crashed_run_resumes_after_its_last_checkpoint_with_identical_losses(
        overrides, uninterrupted, tmp_path, monkeypatch):
    cfg = load(overrides=overrides(tmp_path / "run"))
    monkeypatch.setenv("SSLAB_FAIL_AT_STEP", str(CRASH))
    with pytest.raises(RunError, match="injected failure"):
        sslab.pretrain(cfg)
    assert max(losses(tmp_path / "run")) == CRASH
    monkeypatch.delenv("SSLAB_FAIL_AT_STEP")
    resumed = sslab.pretrain(cfg)  # the same command again

    assert resumed.summary["steps"] == STEPS
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # The rerun starts at the step after the last checkpoint (10), not at 0 and not at the crash.
    assert [r["step"] for r in rows][CRASH:CRASH + 2] == [EVERY + 1, EVERY + 2]
    expected, got = losses(uninterrupted.run_dir), losses(tmp_path / "run")
    assert got == expected  # bit for bit on CPU: same data, masks, dropout and optimizer state
    assert resumed.summary["metrics"]["eval_mlm_loss"] == uninterrupted.summary["metrics"]["eval_mlm_loss"]

    lines = (tmp_path / "run" / "metrics.jsonl").read_text()
    again = sslab.pretrain(cfg)  # a finished run: nothing to train, the same model exported again
    assert again.summary["steps"] == STEPS and (tmp_path / "run" / "metrics.jsonl").read_text() == lines


def test_a_worker_failure_within_max_failures_restarts_from_the_checkpoint(overrides, uninterrupted,
                                                                           tmp_path, monkeypatch):
    monkeypatch.setenv("SSLAB_FAIL_AT_STEP", str(CRASH))
    result = sslab.pretrain(load(overrides=overrides(tmp_path / "run", "scaling.max_failures=1")))
    assert result.summary["steps"] == STEPS
    assert losses(tmp_path / "run") == losses(uninterrupted.run_dir)


def test_a_rerun_with_a_different_model_config_is_refused_before_training(overrides, uninterrupted):
    cfg = load(overrides=overrides(uninterrupted.run_dir, "train.lr=0.01"))
    with pytest.raises(RunError, match="train.lr"):
        sslab.pretrain(cfg)
