"""Resume equivalence (torchtitan-style): a run that crashes and is rerun from its last checkpoint
produces the losses an uninterrupted run would have produced, step for step; and its
``metrics.jsonl`` and tracking (TensorBoard, MLflow, W&B) show one run with each step once. Both
runs train their own tokenizer in a fresh run directory, so they also show that one config and
seed give one run: the same tokenizer, byte for byte, and the same losses. Both mask on a
falling schedule (0.4 to 0.1), so the rerun also shows that a row's mask ratio comes from its step."""
from __future__ import annotations

import json
import struct
from types import SimpleNamespace

import pytest
import torch
from tensorboardX.proto.event_pb2 import Event

import sslab
from sslab.config import load
from sslab.errors import RunError

from faults import crash_before_step

pytestmark = pytest.mark.slow

STEPS, EVERY, CRASH = 30, 10, 15


def losses(run_dir) -> dict[int, float]:
    """Loss per step from metrics.jsonl (one row per step, also after a resume)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


@pytest.fixture(scope="module")
def overrides(ray_cluster, tiny):
    # tokenizer.path=null: each run trains its own WordPiece tokenizer on the corpus (the default).
    return lambda out, *extra: tiny(out, "tokenizer.path=null", "tokenizer.vocab_size=2000", "scaling.num_workers=2",
                                    f"train.max_steps={STEPS}", "train.log_every=1", f"train.checkpoint_every={EVERY}",
                                    f"train.eval_every={STEPS}", "eval.probe_docs=0", "model.dropout=0.1",
                                    "objective.mask_ratio=0.4", "objective.mask_schedule=linear",
                                    "objective.mask_ratio_end=0.1", *extra)


@pytest.fixture(scope="module")
def uninterrupted(overrides, tmp_path_factory):
    return sslab.pretrain(load(overrides=overrides(tmp_path_factory.mktemp("a") / "run")))


@pytest.fixture(scope="module")
def crashed_and_rerun(overrides, tmp_path_factory):
    """A run that crashes at step 15, is rerun to the end, then rerun once more when finished;
    it is tracked to TensorBoard, MLflow (a file: store) and W&B (offline) throughout."""
    root = tmp_path_factory.mktemp("crashed")
    cfg = load(overrides=overrides(root / "run", f"track.mlflow_uri=file:{root / 'mlruns'}",
                                   "track.mlflow_experiment=bakeoff", "track.wandb_project=sslab-test",
                                   "track.wandb_mode=offline"))
    with pytest.raises(RunError, match="injected failure"):
        sslab.pretrain(cfg, hooks=crash_before_step(CRASH))
    crashed = (root / "run" / "metrics.jsonl").read_text()
    resumed = sslab.pretrain(cfg)  # the same command again
    lines = (root / "run" / "metrics.jsonl").read_text()
    again = sslab.pretrain(cfg)  # a finished run: nothing to train, the same model exported again
    return SimpleNamespace(root=root, run_dir=root / "run", crashed=crashed, resumed=resumed, lines=lines,
                           again=again)


def test_rerunning_a_crashed_run_resumes_after_its_last_checkpoint_with_identical_losses(
        crashed_and_rerun, uninterrupted):
    run = crashed_and_rerun
    crashed = [json.loads(line) for line in run.crashed.splitlines()]
    assert [r["step"] for r in crashed] == list(range(1, CRASH + 1))  # logged past its last checkpoint (10)
    assert run.resumed.summary["steps"] == STEPS
    rows = [json.loads(line) for line in run.lines.splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # one row per step: 11 to 15 are not repeated
    # The rerun starts at the step after the last checkpoint (10), not at 0 and not at the crash:
    # it kept the crashed attempt's rows up to 10 and logged 11 to 15 again.
    assert rows[:EVERY] == crashed[:EVERY]
    assert all(row["wall_time"] > crashed[-1]["wall_time"] for row in rows[EVERY:CRASH])
    expected, got = losses(uninterrupted.run_dir), losses(run.run_dir)
    assert got == expected  # bit for bit on CPU: same data, masks, dropout and optimizer state
    assert [r["mask_ratio"] for r in rows] == pytest.approx([0.4 - 0.3 * (s - 1) / STEPS for s in range(1, STEPS + 1)])
    assert run.resumed.summary["metrics"]["eval_mlm_loss"] == uninterrupted.summary["metrics"]["eval_mlm_loss"]
    assert run.again.summary["steps"] == STEPS and (run.run_dir / "metrics.jsonl").read_text() == run.lines


def test_two_fresh_runs_with_one_config_and_seed_train_the_same_tokenizer_and_losses(crashed_and_rerun,
                                                                                     uninterrupted):
    # The crashed run trained its tokenizer in its own fresh directory before it crashed.
    tokenizers = [r / "tokenizer" / "tokenizer.json" for r in (uninterrupted.run_dir, crashed_and_rerun.run_dir)]
    assert tokenizers[0].read_bytes() == tokenizers[1].read_bytes()
    first = [json.loads(line) for line in (uninterrupted.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in first] == list(range(1, STEPS + 1))
    # Before the crash, the two runs had logged the same losses, step for step.
    crashed_rows = [json.loads(line) for line in crashed_and_rerun.crashed.splitlines()]
    assert [row["loss"] for row in crashed_rows] == [row["loss"] for row in first[:CRASH]]


# ---------------------------------------------------------------- tracking across the crash


def tensorboard_scalars(logdir) -> dict[str, dict[int, float]]:
    """Scalars as TensorBoard shows them: a START session log at step s (``purge_step``) drops
    the events at step s and later that were written before it."""
    seen: dict[str, dict[int, float]] = {}
    for path in sorted(logdir.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        for event in read_events(path):
            if event.HasField("session_log") and event.session_log.status == event.session_log.START:
                for series in seen.values():
                    for step in [s for s in series if s >= event.step]:
                        del series[step]
            for value in event.summary.value:
                seen.setdefault(value.tag, {})[event.step] = value.simple_value
    return seen


def read_events(path):
    """TFRecord framing: length (8 bytes), its CRC (4), the record, its CRC (4)."""
    data, i = path.read_bytes(), 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        yield Event.FromString(data[i + 12:i + 12 + n])
        i += 12 + n + 4


def test_tensorboard_shows_each_step_once_across_a_crash_and_rerun(crashed_and_rerun):
    run = crashed_and_rerun
    scalars = tensorboard_scalars(run.run_dir / "tensorboard")
    assert sorted(scalars["train/loss"]) == list(range(1, STEPS + 1))
    # The rerun's values replace the crashed attempt's after the checkpoint it resumed from.
    assert scalars["train/loss"] == pytest.approx(losses(run.run_dir))
    assert list(scalars["eval/eval_mlm_loss"]) == [STEPS]


def test_mlflow_gets_one_run_in_the_configured_experiment_with_params_and_loss_history(crashed_and_rerun, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads a file: store only when asked
    run = crashed_and_rerun
    client = MlflowClient(tracking_uri=f"file:{run.root / 'mlruns'}")
    found = client.search_runs([client.get_experiment_by_name("bakeoff").experiment_id])
    assert len(found) == 1  # the reruns continued the crashed attempt's run
    tracked = found[0]
    assert tracked.info.run_name == "run" and tracked.info.status == "FINISHED"
    assert tracked.data.params["objective.name"] == "mlm" and tracked.data.params["train.max_steps"] == str(STEPS)
    assert {m.step for m in client.get_metric_history(tracked.info.run_id, "loss")} == set(range(1, STEPS + 1))
    assert tracked.data.metrics["eval_mlm_loss"] == pytest.approx(run.resumed.summary["metrics"]["eval_mlm_loss"])


def test_wandb_offline_writes_one_resumable_run_under_the_run_directory(crashed_and_rerun):
    run_dir = crashed_and_rerun.run_dir
    run_id = (run_dir / ".wandb_run_id").read_text()
    attempts = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(attempts) >= 2 and all(p.name.endswith(run_id) for p in attempts)  # one id: `wandb sync` merges
    assert all(list(p.glob("*.wandb")) for p in attempts)


def test_a_tracker_whose_package_is_missing_is_refused_before_ray(tiny, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(sslab.ConfigError, match=r"track.mlflow_uri='file:x' needs the mlflow package"):
        sslab.pretrain(load(overrides=tiny(tmp_path / "run", "track.mlflow_uri=file:x")))
    assert not (tmp_path / "run").exists()


def test_a_worker_failure_within_max_failures_restarts_from_the_checkpoint(overrides, uninterrupted, tmp_path):
    result = sslab.pretrain(load(overrides=overrides(tmp_path / "run", "scaling.max_failures=1")),
                            hooks=crash_before_step(CRASH))
    assert result.summary["steps"] == STEPS
    assert losses(tmp_path / "run") == losses(uninterrupted.run_dir)


def test_a_rerun_with_a_different_model_config_is_refused_before_training(overrides, uninterrupted):
    cfg = load(overrides=overrides(uninterrupted.run_dir, "train.lr=0.01"))
    with pytest.raises(RunError, match="train.lr"):
        sslab.pretrain(cfg)


def test_a_crashed_run_reruns_compiled_from_its_checkpoint_and_keeps_the_checkpoint_format(
        ray_cluster, tiny, tmp_path):
    # train.compile changes how a run runs, not what it is: the rerun resumes, and TorchInductor's
    # model trains on the same weights and data (its dropout draws from its own generator).
    run_dir = tmp_path / "run"
    steps = lambda *extra: load(overrides=tiny(run_dir, "train.max_steps=20", "train.log_every=1",
                                               f"train.checkpoint_every={EVERY}", "train.eval_every=20",
                                               "eval.probe_docs=0", "model.dropout=0.1", *extra))
    with pytest.raises(RunError, match="injected failure"):
        sslab.pretrain(steps(), hooks=crash_before_step(CRASH))
    eager = losses(run_dir)  # steps 1 to 14, in eager mode
    eager_keys = list(torch.load(run_dir / f"checkpoint_{EVERY:08d}" / "state.pt", map_location="cpu",
                                 weights_only=False)["model"])
    result = sslab.pretrain(steps("train.compile=true"))
    assert result.summary["steps"] == 20
    compiled = losses(run_dir)
    assert [compiled[s] for s in range(1, EVERY + 1)] == [eager[s] for s in range(1, EVERY + 1)]
    rerun = range(EVERY + 1, CRASH)  # the steps both attempts ran: the first compiled ones
    assert all(compiled[s] == pytest.approx(eager[s], rel=0.01) for s in rerun)
    assert any(compiled[s] != eager[s] for s in rerun)  # Inductor's kernels ran, not the eager model
    state = torch.load(result.summary["checkpoint"] + "/state.pt", map_location="cpu", weights_only=False)["model"]
    assert list(state) == eager_keys  # no _orig_mod. prefix: export and init_from read it as before
