"""Tracking: TensorBoard event files in every run, MLflow (a local ``file:`` store) and W&B
(offline) on request, rank 0 only, and a crashed run's rerun continues the same tracked run."""
from __future__ import annotations

import json
import struct

import pytest
from tensorboardX.proto.event_pb2 import Event

import sslab
from sslab.config import load
from sslab.errors import RunError

pytestmark = pytest.mark.slow

STEPS, EVERY, CRASH = 30, 10, 15


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


@pytest.fixture(scope="module")
def crashed_and_rerun(ray_cluster, tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("tracked")
    cfg = load(overrides=tiny(root / "run", "scaling.num_workers=2", f"train.max_steps={STEPS}", "train.log_every=1",
                              f"train.checkpoint_every={EVERY}", f"train.eval_every={STEPS}", "eval.probe_docs=0",
                              f"track.mlflow_uri=file:{root / 'mlruns'}", "track.wandb_project=sslab-test",
                              "track.wandb_mode=offline"))
    mp = pytest.MonkeyPatch()
    mp.setenv("SSLAB_FAIL_AT_STEP", str(CRASH))
    with pytest.raises(RunError, match="injected failure"):
        sslab.pretrain(cfg)
    mp.undo()
    return sslab.pretrain(cfg), root


def test_tensorboard_shows_each_step_once_across_a_crash_and_rerun(crashed_and_rerun):
    result, _ = crashed_and_rerun
    scalars = tensorboard_scalars(result.run_dir / "tensorboard")
    assert sorted(scalars["train/loss"]) == list(range(1, STEPS + 1))
    # The rerun's values replace the crashed attempt's after the checkpoint it resumed from.
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["loss"] for r in rows}  # the last of a repeated step wins
    assert scalars["train/loss"] == pytest.approx(losses)
    assert list(scalars["eval/eval_mlm_loss"]) == [STEPS]


def test_mlflow_gets_one_run_with_params_and_the_whole_loss_history(crashed_and_rerun, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads a file: store only when asked
    result, root = crashed_and_rerun
    client = MlflowClient(tracking_uri=f"file:{root / 'mlruns'}")
    runs = client.search_runs([client.get_experiment_by_name("sslab").experiment_id])
    assert len(runs) == 1  # the rerun continued the crashed attempt's run
    run = runs[0]
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert run.data.params["objective.name"] == "mlm" and run.data.params["train.max_steps"] == str(STEPS)
    steps = {m.step for m in client.get_metric_history(run.info.run_id, "loss")}
    assert steps == set(range(1, STEPS + 1))
    assert run.data.metrics["eval_mlm_loss"] == pytest.approx(result.summary["metrics"]["eval_mlm_loss"])


def test_wandb_offline_writes_one_resumable_run_under_the_run_directory(crashed_and_rerun):
    result, _ = crashed_and_rerun
    run_id = (result.run_dir / ".wandb_run_id").read_text()
    attempts = sorted((result.run_dir / "wandb").glob("offline-run-*"))
    assert len(attempts) == 2 and all(p.name.endswith(run_id) for p in attempts)  # one id: `wandb sync` merges
    assert all(list(p.glob("*.wandb")) for p in attempts)


def test_a_tracker_whose_package_is_missing_is_refused_before_ray(tiny, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(sslab.ConfigError, match=r"track.mlflow_uri='file:x' needs the mlflow package"):
        sslab.pretrain(load(overrides=tiny(tmp_path / "run", "track.mlflow_uri=file:x")))
    assert not (tmp_path / "run").exists()
