"""Submitting to a running cluster: a Ray head started with ``ray start --head`` on 127.0.0.1, and
``ray job submit -- sslab pretrain …`` as cluster/README.md shows: the job's driver joins that
cluster (through the ``RAY_ADDRESS`` Ray sets for it) and the run finishes there."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

BIN = Path(sys.executable).parent  # ray and sslab of this environment


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """``ray start --head`` on 127.0.0.1 in its own process group; yields the dashboard address."""
    if ray_is_up():
        import ray

        ray.shutdown()
    port, dashboard = free_port(), free_port()
    # Ray 2.60 protects a cluster with a token (kept in ~/.ray/auth_token); a client that
    # submits needs RAY_AUTH_MODE=token to send it.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    tmp_path = tmp_path_factory.mktemp("head")
    log = (tmp_path / "head.log").open("w")
    proc = subprocess.Popen([str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
                             f"--port={port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                             "--num-cpus=4", "--disable-usage-stats"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        wait_for_jobs_api(address, env, proc, tmp_path / "head.log")
        yield address, env
    finally:
        # --block stops the node's processes on SIGTERM, gracefully over ~35 s on 2 cores; the
        # test is done with them, so the whole process group is killed after a few seconds.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        # `ray start` recorded this head as the machine's current cluster; a later local Ray
        # (Train's placement-group cleaner resolves "auto" through that file) must not find it.
        current = Path("/tmp/ray/ray_current_cluster")
        if current.is_file() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()


def ray_is_up() -> bool:
    import ray

    return ray.is_initialized()


def wait_for_jobs_api(address: str, env: dict, proc, log: Path, timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        assert proc.poll() is None, f"ray start exited: {log.read_text()[-2000:]}"
        listed = subprocess.run([str(BIN / "ray"), "job", "list", "--address", address], env=env,
                                capture_output=True, text=True)
        if listed.returncode == 0:
            return
        time.sleep(2)
    raise AssertionError(f"the Ray head's job API did not come up: {log.read_text()[-2000:]}")


def submit(address: str, env: dict, command: list[str], timeout_s: float = 600) -> subprocess.CompletedProcess:
    """``ray job submit`` and wait; retried while the head's job agent is still starting."""
    deadline = time.time() + timeout_s
    while True:
        done = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", address, "--", *command],
                              env=env, capture_output=True, text=True, timeout=timeout_s)
        if "No available agent" not in done.stderr or time.time() > deadline:
            return done
        time.sleep(3)


def test_ray_job_submit_runs_sslab_pretrain_on_the_running_cluster(head, tiny, tmp_path):
    address, env = head
    out = tmp_path / "run"
    command = ["sslab", "pretrain", "--objective", "mlm", "--workers", "2", "--max-steps", "10",
               *tiny(out, "train.eval_every=10", "eval.probe_docs=0", "run.quiet=false")]
    done = submit(address, env, command)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout and "run finished" in done.stdout, done.stdout[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 10 and summary["num_workers"] == 2
    # The run joined the submitted-to cluster rather than starting one of its own.
    assert "Started a local Ray instance" not in done.stdout


def test_a_failing_job_exits_non_zero_with_sslab_s_one_line(head, tmp_path):
    address, env = head
    done = submit(address, env, ["sslab", "pretrain", "--corpus", str(tmp_path / "missing"),
                                 "--out", str(tmp_path / "run")])
    assert done.returncode != 0 and "failed" in done.stdout
    # The job log carries sslab's one line (Ray echoes the log once more in its status message).
    missing = tmp_path / "missing"
    assert f"sslab: error: corpus.source '{missing}' does not exist" in done.stdout, done.stdout[-3000:]
    assert "Traceback" not in done.stdout
