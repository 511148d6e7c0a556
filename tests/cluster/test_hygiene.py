"""Resource hygiene of a long sweep: tiny trials, each a whole run, keep the driver's memory
bounded and leave no placement group, actor or reserved CPU behind."""
from __future__ import annotations

import json
import os
import threading
import time

import psutil
import pytest
import ray
from ray.util.state import list_actors

import sslab
from sslab import cluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# Each trial trains in its own task (scaling.in_process unset: 1-worker CPU trials train in process).
# CI sweeps 16; SSLAB_HYGIENE_TRIALS=100 runs the full sweep (30 trials in worker groups, three at
# a time, took 883 s on 2 cores).
TRIALS = int(os.environ.get("SSLAB_HYGIENE_TRIALS", 16))
# The driver's memory may grow by less than this per trial after the first fifth of the trials: at
# 16 trials, 104 MB over the last 13 (the 30-trial sweep allowed 200 MB over 24, the same per trial).
LEAK_PER_TRIAL_MB = 8
RAY_DATA_SINGLETONS = {"_StatsActor", "_AutoscalingCoordinatorActor"}
TRIAL = ["model.preset=tiny", "corpus.synthetic.num_docs=200", "train.seq_len=32", "train.batch_size=4",
         "train.warmup_steps=1", "train.max_steps=2", "train.eval_every=2", "train.checkpoint_every=2",
         "train.log_every=2", "eval.max_blocks=8", "eval.probe_docs=0", "train.keep_checkpoints=1"]


@pytest.fixture(scope="module")
def local_ray():
    if ray.is_initialized():
        ray.shutdown()
    # Three trials at a time; idle workers stay warm, as in the Ray sslab starts.
    cluster.start_local_ray(6)
    yield
    ray.shutdown()


class MemoryLog(threading.Thread):
    """The driver's resident memory, sampled each second, with how many trials had finished."""

    def __init__(self, trials_dir):
        super().__init__(daemon=True)
        self.trials_dir, self.samples, self.stopped = trials_dir, [], threading.Event()

    def run(self):
        while not self.stopped.wait(1.0):
            self.sample()
        self.sample()  # the end of the search

    def sample(self):
        finished = len(list(self.trials_dir.glob("*/summary.json"))) if self.trials_dir.exists() else 0
        self.samples.append((finished, psutil.Process().memory_info().rss / 2**20))

    def peak_after(self, finished: int) -> float:
        return max(rss for n, rss in self.samples if n >= finished)


def test_a_long_sweep_keeps_driver_memory_bounded_and_leaves_nothing_behind(local_ray, tokenizer_dir,
                                                                                      tmp_path):
    spec = {"base": {"objective": "mlm", "corpus": "synthetic"}, "metric": "eval_mlm_loss", "mode": "min",
            "space": {"train.lr": {"loguniform": [1e-4, 1e-2]}}, "num_samples": TRIALS,
            "search": {"name": "random", "seed": 0}, "resources": {"workers": 1, "cpus_per_worker": 1}}
    memory = MemoryLog(tmp_path / "s" / "trials")
    memory.start()
    started = time.time()
    result = sslab.tune(spec, out=tmp_path / "s", overrides=TRIAL + [f"tokenizer.path={tokenizer_dir}"])
    memory.stopped.set()
    memory.join()
    table = result.table
    assert len(table) == TRIALS and table["trial_id"].is_unique and (table["status"] == "FINISHED").all(), table

    # Memory: what the driver holds after the first fifth of the trials is what it holds at the end, give or
    # take what Tune keeps per trial (its results and state, a few hundred kB each).
    early, late = memory.peak_after(TRIALS // 5), memory.peak_after(TRIALS)
    report = {"trials": TRIALS, "wall_s": round(time.time() - started), "rss_mb_after_a_fifth": round(early),
              "rss_mb_peak_at_end": round(late), "rss_mb_max": round(max(r for _, r in memory.samples))}
    (tmp_path / "memory.json").write_text(json.dumps(report))
    print(f"\n[hygiene] {report}")
    assert late - early < LEAK_PER_TRIAL_MB * (TRIALS - TRIALS // 5), report

    # Nothing left behind: every placement group removed, every CPU free, no actor of any run
    # alive (Ray Data's two per-cluster bookkeeping actors stay, whatever ran).
    def leftovers() -> list[str]:
        alive = list_actors(address=ray.get_runtime_context().gcs_address, filters=[("state", "=", "ALIVE")])
        pgs = [pg for pg in ray.util.placement_group_table().values() if pg["state"] != "REMOVED"]
        busy = ray.available_resources().get("CPU", 0) != ray.cluster_resources()["CPU"]
        return ([a.class_name for a in alive if a.class_name not in RAY_DATA_SINGLETONS]
                + [f"placement group {pg['placement_group_id']}" for pg in pgs] + (["reserved CPUs"] if busy else []))

    deadline = time.time() + 60
    while leftovers() and time.time() < deadline:
        time.sleep(2)
    assert not leftovers()
