"""One owner per directory (sslab.owner): a second owner is refused at once with the first's pid
and host and touches nothing; the lock dies with its process, SIGKILL included; a resumed run
cuts metrics.jsonl back to the step it resumes from. No Ray: the owners are plain processes."""
from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sslab import owner, prepared
from sslab.errors import DirectoryInUse, RunError
from sslab.tracking import HISTORY, cut_history

HOLDER = r"""
import sys, time
from sslab import owner
with owner.hold(sys.argv[1], "run.out"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    exec(sys.argv[3])  # what the owner does last, still holding the directory
"""


def holder(directory: Path, hold_s: float = 60, last: str = "") -> subprocess.Popen:
    """A process that owns ``directory`` for ``hold_s`` seconds, then runs ``last`` and lets go."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory), str(hold_s), last],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def files_under(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


@pytest.fixture
def held(tmp_path):
    """A run directory with a file in it, owned by another process."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("a: 1\n")
    proc = holder(run)
    yield run, proc
    proc.kill()
    proc.wait()


def test_a_second_owner_is_refused_at_once_naming_the_directory_and_the_owner(held):
    run, proc = held
    before = files_under(run)
    started = time.monotonic()
    with pytest.raises(DirectoryInUse) as refused:
        with owner.hold(run, "run.out"):
            pytest.fail("entered a directory another process owns")
    assert time.monotonic() - started < 1.0
    message = str(refused.value)
    assert message == (f"{run} is in use by another sslab command (pid {proc.pid} on {socket.gethostname()}); "
                       f"wait for it to end, or choose another --out")
    assert (refused.value.pid, refused.value.host) == (proc.pid, socket.gethostname())
    assert isinstance(refused.value, RunError)
    assert files_under(run) == before  # the owner's lock file and the run's files, untouched
    assert str(pickle.loads(pickle.dumps(refused.value))) == message  # as Ray carries it out of a task


def test_the_cli_exits_2_with_one_line_before_it_imports_a_run(held):
    run, proc = held
    refuse = ("import sys, time; from sslab.cli import main; started = time.monotonic(); "
              "code = main(sys.argv[1:]); print(code, time.monotonic() - started, 'sslab.runner' in sys.modules, "
              "'torch' in sys.modules)")
    # A fresh process, as a second terminal: refused before torch, Ray or a run is even imported.
    for argv in (["pretrain", "--corpus", "synthetic", "--out", str(run)], ["tune", "mlm_masking", "--out", str(run)]):
        done = subprocess.run([sys.executable, "-c", refuse, *argv], capture_output=True, text=True, timeout=60)
        code, seconds, runner, torch = done.stdout.split()
        assert (code, runner, torch) == ("2", "False", "False") and float(seconds) < 1.0, done.stdout
        assert done.stderr.splitlines() == [f"sslab: error: {run} is in use by another sslab command (pid {proc.pid} "
                                            f"on {socket.gethostname()}); wait for it to end, or choose another --out"]


def test_a_killed_owner_leaves_no_lock_behind(held):
    run, proc = held
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (run / owner.LOCK_FILE).exists()  # a SIGKILLed owner cannot remove its file ...
    with owner.hold(run, "run.out"):  # ... but its lock died with it
        assert json.loads((run / owner.LOCK_FILE).read_text())["pid"] == os.getpid()
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]  # let go: the lock file goes


def test_an_owner_in_this_process_refuses_another_thread_until_it_lets_go(tmp_path):
    # A long-lived process (a Ray worker running one trial's run after another) lets go on return;
    # the thread that holds a directory may take it again (the CLI, then the run it starts).
    run = tmp_path / "run"
    with owner.hold(run, "run.out"):
        refused = []

        def second():
            try:
                with owner.hold(run, "run.out"):
                    pass
            except DirectoryInUse as e:
                refused.append(e)

        thread = threading.Thread(target=second)
        thread.start()
        thread.join()
        assert len(refused) == 1 and f"pid {os.getpid()} " in str(refused[0])
        with owner.hold(run, "run.out"):  # the same thread again: still held, and still after
            pass
        assert (run / owner.LOCK_FILE).exists()
    with pytest.raises(ValueError):
        with owner.hold(run, "run.out"):
            (run / "config.yaml").write_text("")
            raise ValueError("the run failed")
    with owner.hold(run, "run.out"):
        pass


def test_a_directory_it_created_and_left_empty_is_removed(tmp_path):
    with pytest.raises(ValueError):
        with owner.hold(tmp_path / "a" / "run", "run.out"):
            raise ValueError("refused before anything was written")
    assert not (tmp_path / "a" / "run").exists()


def test_an_unwritable_directory_is_refused_as_bad_input(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(RunError, match=r"^run.out='x' is not a writable directory \(File exists\)$"):
        with owner.hold(tmp_path / "file", "run.out='x'"):
            pass


def test_a_waiter_takes_the_directory_when_its_owner_ends(tmp_path):
    run, told = tmp_path / "run", []
    proc = holder(run, hold_s=1.0)
    started = time.monotonic()
    with owner.hold(run, "run.out", wait_s=30, waiting=told.append):
        assert time.monotonic() - started > 0.5  # it waited for the owner to let go
        assert json.loads((run / owner.LOCK_FILE).read_text())["pid"] == os.getpid()
    assert proc.wait(timeout=10) == 0
    assert told == [f"pid {proc.pid} on {socket.gethostname()}"]


def test_a_second_preparation_of_an_entry_waits_for_the_first_and_finds_its_entry(tmp_path):
    root, key = str(tmp_path / "cache"), "k1"
    manifest = prepared.Manifest(key=key, unit="packed", seq_len=64,
                                 splits={"train": prepared.Split(10, 640, (prepared.Shard("attempt-a/train/s.parquet",
                                                                                          10),))})
    last = (f"from sslab import prepared; import pyarrow.fs as f; "
            f"prepared.write_manifest(f.LocalFileSystem(), {root + '/data/' + key!r}, "
            f"prepared.Manifest.from_dict({manifest.to_dict()!r}))")
    proc = holder(Path(root) / "data" / key, hold_s=1.0, last=last)
    entry = prepared.write(root, key, "packed", 64, splits={}, shard_rows=10)  # nothing to tokenise: it waits
    assert proc.wait() == 0
    assert entry.manifest == manifest and entry.uri == f"{root}/data/{key}"


# ---------------------------------------------------------------- one row per step


def rows(*steps, torn: str = "") -> str:
    return "".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in steps) + torn


def test_a_resumed_history_keeps_the_rows_up_to_its_checkpoint_and_drops_a_torn_line(tmp_path):
    path = tmp_path / HISTORY
    path.write_text(rows(5, 10, 15, 20, 25, 30, torn='{"step": 35, "lo'))
    cut_history(tmp_path, 20)
    assert path.read_text() == rows(5, 10, 15, 20)
    assert [p.name for p in tmp_path.iterdir()] == [HISTORY]  # the temporary file was renamed over it


def test_a_history_with_nothing_to_cut_is_not_rewritten(tmp_path):
    path = tmp_path / HISTORY
    path.write_text(rows(10, 20))
    inode = path.stat().st_ino
    cut_history(tmp_path, 20)
    cut_history(tmp_path / "no-such-run", 0)  # no history yet: nothing to do
    assert path.read_text() == rows(10, 20) and path.stat().st_ino == inode


def test_a_run_restarted_from_scratch_keeps_no_row(tmp_path):
    (tmp_path / HISTORY).write_text(rows(1, 2, 3))
    cut_history(tmp_path, 0)
    assert (tmp_path / HISTORY).read_text() == ""
