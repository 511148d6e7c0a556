"""scaling.in_process: a 1-worker CPU run trained in the calling process, through the training
function a worker group runs, gives the worker group's losses and checkpoints, and resumes and
retries the same way."""
from __future__ import annotations

import json

import pytest
import torch

import sslab
from sslab import checkpoint
from sslab.config import load
from sslab.errors import ConfigError, RunError

from faults import crash_before_step

pytestmark = pytest.mark.slow


def rows(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def losses(run_dir) -> dict[int, float]:
    """Each logged step's loss (one row per step, also after a resume)."""
    return {r["step"]: r["loss"] for r in rows(run_dir)}


@pytest.fixture(scope="module")
def steps(tiny):
    return lambda out, *extra: load(overrides=tiny(out, "train.max_steps=12", "train.log_every=1",
                                                   "train.warmup_steps=2", "train.checkpoint_every=6", "train.eval_every=12",
                                                   "eval.probe_docs=0", "model.dropout=0.1", *extra))


@pytest.fixture(scope="module")
def worker_group(ray_cluster, steps, tmp_path_factory):
    return sslab.pretrain(steps(tmp_path_factory.mktemp("group") / "run", "scaling.in_process=false"))


def test_a_run_in_process_trains_exactly_as_its_worker_group(worker_group, steps, tmp_path):
    local = sslab.pretrain(steps(tmp_path / "run"))  # unset: a 1-worker CPU run on a local Ray trains in process
    assert checkpoint.trained_in_process(local.run_dir) and not checkpoint.trained_in_process(worker_group.run_dir)
    assert losses(local.run_dir) == losses(worker_group.run_dir)  # bit for bit, dropout included
    assert local.summary["metrics"]["eval_mlm_loss"] == worker_group.summary["metrics"]["eval_mlm_loss"]
    assert local.summary["steps"] == 12 and torch.get_num_threads() >= 1
    for step in (6, 12):  # the same checkpoints, kept under the same names
        name = f"checkpoint_{step:08d}"
        ours, theirs = (checkpoint.read_state(r.run_dir / name) for r in (local, worker_group))
        assert ours["counters"] == theirs["counters"]
        assert all(torch.equal(ours["model"][k], theirs["model"][k]) for k in theirs["model"])
    assert checkpoint.latest(local.run_dir) == local.run_dir / "checkpoint_00000012"
    again = sslab.pretrain(steps(tmp_path / "run", "scaling.in_process=true"))  # finished: nothing to train
    assert again.summary["metrics"]["eval_mlm_loss"] == local.summary["metrics"]["eval_mlm_loss"]
    assert losses(again.run_dir) == losses(local.run_dir)
    with pytest.raises(RunError, match=r"scaling.in_process=false cannot resume .* written in process"):
        sslab.pretrain(steps(tmp_path / "run", "scaling.in_process=false"))  # its checkpoints are sslab's
    with pytest.raises(RunError, match=r"scaling.in_process=true cannot resume .* by a worker group"):
        sslab.pretrain(steps(worker_group.run_dir, "scaling.in_process=true"))


def test_a_crash_in_process_resumes_from_the_last_checkpoint_and_max_failures_retries(worker_group, steps,
                                                                                       tmp_path):
    crashed = steps(tmp_path / "crashed", "scaling.in_process=true")
    with pytest.raises(RunError, match="injected failure at step 9"):
        sslab.pretrain(crashed, hooks=crash_before_step(9))
    assert max(losses(tmp_path / "crashed")) == 9
    sslab.pretrain(crashed)  # the same command again
    # Logged to the crash (9), cut back to the checkpoint (6) as the rerun resumed, then 7 to 12: each step once.
    resumed_after_6 = list(range(1, 13))
    assert [r["step"] for r in rows(tmp_path / "crashed")] == resumed_after_6
    assert losses(tmp_path / "crashed") == losses(worker_group.run_dir)
    retried = sslab.pretrain(steps(tmp_path / "retried", "scaling.in_process=true", "scaling.max_failures=1"),
                             hooks=crash_before_step(9))
    assert [r["step"] for r in rows(retried.run_dir)] == resumed_after_6
    assert losses(retried.run_dir) == losses(worker_group.run_dir)


def test_only_a_one_worker_cpu_run_trains_in_process(tiny, tmp_path):
    for extra in (["scaling.num_workers=2"], ["scaling.simulate_gpu=true"], ["scaling.use_gpu=true"]):
        with pytest.raises(ConfigError, match="scaling.in_process=True is invalid"):
            load(overrides=tiny(tmp_path / "run", "scaling.in_process=true", *extra))
