"""Multi-node runs and faults on a ``Cluster`` of two worker nodes: a two-worker run spreads
over both; losing a node, a worker process, or a worker in the middle of a checkpoint write
costs the steps since the last complete checkpoint and nothing else (with ``max_failures``
left, the run resumes and retraces the losses of an uninterrupted run exactly); without
failures left the run stops with one clear line and its last checkpoint loads."""
from __future__ import annotations

import os
import signal

import pytest

import sslab
from sslab import checkpoint
from sslab.config import load
from sslab.errors import RunError

from faults import kill_while_copying_checkpoint
from watch import CutBack, When, losses, registered, rows, steps_logged, train_workers

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

STEPS, EVERY = 30, 10


@pytest.fixture(scope="module")
def overrides(nodes, tiny):
    return lambda out, *extra: tiny(out, "scaling.num_workers=2", "scaling.placement_strategy=SPREAD",
                                    f"train.max_steps={STEPS}", "train.log_every=1", f"train.checkpoint_every={EVERY}",
                                    f"train.eval_every={STEPS}", "eval.probe_docs=0", "model.dropout=0.1", *extra)


@pytest.fixture(scope="module")
def uninterrupted(nodes, overrides, tmp_path_factory):
    """A run no fault touches, and the nodes its workers ran on."""
    run_dir = tmp_path_factory.mktemp("a") / "run"
    seen = set()
    spy = When(lambda: steps_logged(run_dir), lambda: seen.update(a.node_id for a in train_workers()))
    spy.start()
    result = sslab.pretrain(load(overrides=overrides(run_dir)))
    return result, seen


def past_checkpoint(run_dir, seen: dict):
    """Ready to strike: the step-10 checkpoint is registered and training went on past it. The
    rows logged by then go to ``seen["rows"]``."""
    def ready():
        logged = rows(run_dir)
        if "checkpoint_00000010" in registered(run_dir) and max((r["step"] for r in logged), default=0) >= 14:
            seen["rows"] = logged
            return True
        return False
    return ready


def assert_resumed_after_step_10_as_if_uninterrupted(run_dir, uninterrupted, before: list[dict]):
    """``before``: the rows the run had logged before the fault, past step 10."""
    logged = rows(run_dir)
    assert [r["step"] for r in logged] == list(range(1, STEPS + 1))  # one row per step
    # From the last complete checkpoint, not from 0: the rows up to 10 are the first attempt's,
    # and the restart logged the steps after it again, with the same losses.
    assert logged[:EVERY] == before[:EVERY] and len(before) > EVERY
    assert logged[EVERY]["wall_time"] > before[-1]["wall_time"]
    assert losses(run_dir) == losses(uninterrupted.run_dir)  # same data, masks and dropout after the resume


def test_a_two_worker_run_places_a_worker_on_each_node_and_finishes(nodes, uninterrupted):
    result, seen = uninterrupted
    assert seen == {n.node_id for n in nodes.workers}
    assert result.summary["steps"] == STEPS and (result.run_dir / "model" / "config.json").is_file()


def test_losing_a_node_with_a_failure_left_resumes_from_the_last_checkpoint(nodes, overrides, uninterrupted,
                                                                            tmp_path):
    run_dir = tmp_path / "run"
    lost, seen = nodes.workers[1], {}
    strike = When(past_checkpoint(run_dir, seen), lambda: nodes.remove(lost))
    strike.start()
    try:
        result = sslab.pretrain(load(overrides=overrides(run_dir, "scaling.max_failures=1")))
    finally:
        strike.join(1)
        nodes.refill()
    assert strike.done, strike.error
    assert result.summary["steps"] == STEPS
    assert_resumed_after_step_10_as_if_uninterrupted(run_dir, uninterrupted[0], seen["rows"])


def test_losing_a_node_without_failures_left_stops_with_one_line_and_the_checkpoint_loads(nodes, overrides,
                                                                                         tmp_path):
    run_dir = tmp_path / "run"
    strike = When(past_checkpoint(run_dir, {}), lambda: nodes.remove(nodes.workers[1]))
    strike.start()
    try:
        with pytest.raises(RunError, match="training failed") as failed:
            sslab.pretrain(load(overrides=overrides(run_dir, "scaling.max_failures=0")))
    finally:
        strike.join(1)
        nodes.refill()
    assert strike.done, strike.error
    message = str(failed.value)
    assert "\n" not in message and f"rerun the same command to resume from the last checkpoint in {run_dir}" in message
    last = checkpoint.latest(run_dir)
    assert last is not None and last.name >= "checkpoint_00000010"
    assert checkpoint.read_state(last)["counters"]["step"] == int(last.name.split("_")[1])


def test_a_killed_worker_process_resumes_from_the_last_checkpoint(nodes, overrides, uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    seen = {}
    strike = When(past_checkpoint(run_dir, seen), lambda: os.kill(train_workers()[-1].pid, signal.SIGKILL))
    strike.start()
    result = sslab.pretrain(load(overrides=overrides(run_dir, "scaling.max_failures=1")))
    strike.join(1)
    assert strike.done, strike.error
    assert result.summary["steps"] == STEPS
    assert_resumed_after_step_10_as_if_uninterrupted(run_dir, uninterrupted[0], seen["rows"])


def test_a_worker_killed_while_writing_a_checkpoint_resumes_from_the_previous_one(nodes, overrides, uninterrupted,
                                                                                   tmp_path):
    run_dir = tmp_path / "run"
    partial = {}

    def record_partial():  # what the killed write left behind, before the resumed run rewrites it
        partial["files"] = {p.name: p.stat().st_size for p in (run_dir / "checkpoint_00000020").iterdir()}
        partial["latest"] = checkpoint.latest(run_dir)

    cut_back = CutBack(run_dir)
    spy = When(cut_back, record_partial)
    spy.start()
    result = sslab.pretrain(load(overrides=overrides(run_dir, "scaling.max_failures=1")),
                            hooks=kill_while_copying_checkpoint(20))
    spy.join(1)
    assert result.summary["steps"] == STEPS
    # The kill left step 20's directory part-written (its 256 MiB padding not copied), and the
    # resume chose step 10's complete checkpoint over it.
    assert sum(partial["files"].values()) < 256 * 2**20, partial
    assert partial["latest"] == run_dir / "checkpoint_00000010", partial
    assert_resumed_after_step_10_as_if_uninterrupted(run_dir, uninterrupted[0], cut_back.before)
    state = checkpoint.read_state(run_dir / "checkpoint_00000020")  # written again, whole, by the resumed run
    assert state["counters"]["step"] == 20
