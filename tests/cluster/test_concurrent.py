"""Two sslab commands at once on one machine, each a process of its own as a user starts them in two
terminals, with no Ray running and no RAY_ADDRESS (so each starts a local Ray of its own):

- the same ``--out`` twice: the second is refused within seconds, with exit code 2 and one line
  naming the directory and the first's pid, and the first goes on;
- the owner killed with SIGKILL after a step past its last checkpoint: the same command takes the
  directory, resumes, and ``metrics.jsonl`` holds each step once;
- the same for a search's ``--out`` (``sslab tune``);
- a run and a search at once, each its own ``--out``: both finish, and no log holds a traceback.

One test drives all of it (a run and a search side by side from the start), since each command
pays Ray's and Train's start-up on 2 cores. Each run trains in a worker group (``scaling.in_process=false``): that starts Ray Train's
placement-group cleaner, which used to print "Found multiple active Ray instances" beside another
local Ray."""
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
import ray

from sslab import checkpoint
from sslab.owner import LOCK_FILE

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

STEPS, LOG, CHECKPOINT = 200, 10, 50  # a window of 40 steps past each checkpoint to kill the run in
RUN = ["--corpus", "synthetic", "--preset", "tiny", "--max-steps", str(STEPS), "--quiet",
       "corpus.synthetic.num_docs=1000", "train.seq_len=64", "train.batch_size=8", "train.warmup_steps=5",
       f"train.log_every={LOG}", f"train.checkpoint_every={CHECKPOINT}", f"train.eval_every={STEPS}",
       "eval.max_blocks=32", "eval.probe_docs=0", "scaling.in_process=false"]


@pytest.fixture(scope="module")
def no_ray():
    """No Ray in this process either: the commands' two are the only ones on the machine."""
    if ray.is_initialized():
        ray.shutdown()


class Command:
    """``sslab argv`` in a session of its own (it and the Ray it starts die together), logging to ``log``."""

    def __init__(self, cwd: Path, name: str, *argv: str):
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        self.log = cwd / f"{name}.log"
        self.started = time.monotonic()
        with self.log.open("w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "sslab.cli", *argv], cwd=cwd, env=env,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.log.name} still ran after {timeout_s:.0f} s:\n{self.text()[-3000:]}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def text(self) -> str:
        return self.log.read_text()

    def assert_clean(self) -> None:
        """No traceback in the log, and no word of another Ray. One kind is let through: Ray Train's
        own warning, "safe to ignore" in its words, that a resource request timed out (after 5 s)
        on an overloaded machine, which it logs with its traceback (two commands on 2 cores)."""
        text = self.text()
        assert "multiple active Ray instances" not in text, text[-3000:]
        lines = text.splitlines()
        tracebacks = [i for i, line in enumerate(lines) if "Traceback (most recent call last)" in line
                      and not (i and "Failed to send resource request" in lines[i - 1])]
        assert not tracebacks, "\n".join(lines[tracebacks[0] - 1:tracebacks[0] + 30]) if tracebacks else ""


def wait_for(ready, what: str, timeout_s: float, *alive: Command) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        for c in alive:
            assert c.proc.poll() is None, f"{c.log.name} exited ({c.proc.returncode}) before {what}: {c.text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} in {timeout_s:.0f} s"
        time.sleep(0.2)


def owner_pid(directory: Path) -> int | None:
    try:
        return json.loads((directory / LOCK_FILE).read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    return [json.loads(line) for line in lines if line.endswith("\n")]


def past_checkpoint(run_dir: Path) -> bool:
    """A checkpoint is registered, and the run logged a step at least 20 past it."""
    latest = checkpoint.latest(run_dir)
    logged = max((r["step"] for r in rows(run_dir)), default=0)
    return latest is not None and logged >= int(latest.name.split("_")[1]) + 20


def refused_line(directory: Path, pid: int) -> str:
    return (f"sslab: error: {directory} is in use by another sslab command (pid {pid} on {socket.gethostname()}); "
            f"wait for it to end, or choose another --out")


def spec_file(tmp_path: Path) -> Path:
    """One trial (a search's own directory and a trial's run directory inside it), in a worker group."""
    path = tmp_path / "one_lr.yaml"
    path.write_text(json.dumps({  # JSON is YAML
        "base": {"objective": "mlm", "corpus": "synthetic"}, "metric": "eval_mlm_loss", "mode": "min",
        "space": {"train.lr": {"grid": [1e-3]}}, "num_samples": 1, "max_concurrent_trials": 1}))
    return path


TRIAL = ["model.preset=tiny", "corpus.synthetic.num_docs=400", "train.seq_len=32", "train.batch_size=8",
         "train.warmup_steps=2", "train.max_steps=10", "train.eval_every=10", "train.log_every=5",
         "eval.max_blocks=16", "eval.probe_docs=0", "scaling.in_process=false"]


def test_one_owner_per_run_and_search_directory_and_a_run_and_a_search_side_by_side(no_ray, tokenizer_dir, tmp_path):
    a, s = tmp_path / "a", tmp_path / "s"
    run = lambda name: Command(tmp_path, name, "pretrain", *RUN, "--out", str(a), f"tokenizer.path={tokenizer_dir}")
    search = lambda name: Command(tmp_path, name, "tune", str(spec_file(tmp_path)), "--out", str(s), *TRIAL,
                                  f"tokenizer.path={tokenizer_dir}")
    first, beside = run("first"), search("beside")  # two terminals, two --out
    try:
        wait_for(lambda: owner_pid(a) == first.proc.pid, "lock on the run", 120, first)
        second = run("second")  # the same command again, by mistake
        assert second.wait(120) == 2
        refused_after = time.monotonic() - second.started
        assert second.text().splitlines() == [refused_line(a, first.proc.pid)]
        print(f"the second command was refused {refused_after:.1f} s after it started")
        wait_for(lambda: owner_pid(s) == beside.proc.pid, "lock on the search", 120, beside)
        search_again = search("search_again")
        assert search_again.wait(120) == 2
        assert search_again.text().splitlines() == [refused_line(s, beside.proc.pid)]
        assert first.proc.poll() is None and beside.proc.poll() is None  # both go on

        # Killed after a logged step past its last checkpoint (one Ray Train has registered).
        wait_for(lambda: past_checkpoint(a), "a step logged past a checkpoint", 600, first)
        first.kill()
        killed_rows, latest = rows(a), checkpoint.latest(a)
        resumed_from = int(latest.name.split("_")[1])
        assert killed_rows[-1]["step"] > resumed_from, (killed_rows[-1], latest)

        again = run("again")  # the same command once more: the lock died with the killed one
        assert again.wait(600) == 0, again.text()[-3000:]
        assert beside.wait(900) == 0, beside.text()[-3000:]
    finally:
        for command in (first, beside):
            command.kill()
    logged = rows(a)
    assert [r["step"] for r in logged] == list(range(LOG, STEPS + 1, LOG))  # each step once
    kept = [r for r in killed_rows if r["step"] <= resumed_from]
    assert logged[:len(kept)] == kept  # resumed from its checkpoint, not from 0: those rows are the first's
    assert json.loads((a / "summary.json").read_text())["steps"] == STEPS
    assert "run finished" in again.text() and "search finished" in beside.text()
    again.assert_clean()
    beside.assert_clean()
    trials = sorted((s / "trials").iterdir())
    assert len(trials) == 1 and (trials[0] / "summary.json").is_file()
    assert [r["step"] for r in rows(trials[0])] == [5, 10]
    for directory in (a, s, trials[0]):
        assert not (directory / LOCK_FILE).exists(), directory  # let go as they ended
