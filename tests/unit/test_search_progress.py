"""The live progress line of a search (:class:`sslab.search_progress.SearchProgress`), driven
through Tune's callback hooks as Tune's controller calls them, without Ray."""
from __future__ import annotations

import io
import re
from types import SimpleNamespace

from sslab.search_progress import SearchProgress

MAX_STEPS = 100


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def trial(tid: str, last_result: dict | None = None):
    return SimpleNamespace(trial_id=tid, last_result=last_result or {})


def drive(progress: SearchProgress, clock: list[float], monkeypatch) -> None:
    """Four trials of an ASHA search: two finish, one is stopped at step 40, one fails, two pend."""
    monkeypatch.setattr("sslab.search_progress.time.monotonic", lambda: clock[0])
    progress.setup(total_num_samples=6)
    a, b, c, d = (trial(t) for t in ("t0", "t1", "t2", "t3"))
    for t in (a, b):
        progress.on_trial_start(0, [], t)
    for step in (20, 40):
        clock[0] += 10.0
        progress.on_trial_result(0, [], a, {"step": step, "eval_mlm_loss": 5.0 - step / 100})
        progress.on_trial_result(0, [], b, {"step": step, "eval_mlm_loss": 5.5 - step / 100})
    progress.on_trial_complete(0, [], b)  # ASHA stops b at step 40
    progress.on_trial_start(0, [], c)
    progress.on_trial_error(0, [], c)
    progress.on_trial_start(0, [], d)
    clock[0] += 10.0
    progress.on_trial_result(0, [], a, {"step": 100, "eval_mlm_loss": 4.0})
    progress.on_trial_complete(0, [], a)


def test_a_log_gets_one_line_per_report_with_counts_best_rate_and_eta(monkeypatch):
    log, clock = io.StringIO(), [1000.0]
    progress = SearchProgress("masking", "eval_mlm_loss", "min", MAX_STEPS, early_stopping=True, stream=log)
    drive(progress, clock, monkeypatch)
    lines = log.getvalue().splitlines()
    assert all(line.startswith("[sslab] search masking: ") for line in lines)
    assert "\r" not in log.getvalue()  # a log appends, it does not redraw
    # after the first two reports (20 steps each trial, 10 s): 4 steps/s; 6 trials of 100 steps, 40 done
    assert lines[3] == ("[sslab] search masking: 0 finished, 2 running, 4 pending | best eval_mlm_loss 4.8 (t0) "
                        "| 4.00 steps/s | eta ≤ 0:02:20")
    assert "1 stopped, 1 failed, 2 running, 2 pending" in lines[-2]
    # the end: 140 steps in 30 s; t3 has 100 steps to go and two trials are pending: 300 / 4.67 s
    assert lines[-1] == ("[sslab] search masking: 1 finished, 1 stopped, 1 failed, 1 running, 2 pending "
                         "| best eval_mlm_loss 4 (t0) | 4.67 steps/s | eta ≤ 0:01:04")


def test_a_terminal_line_is_redrawn_in_place_by_tqdm(monkeypatch):
    screen, clock = Terminal(), [0.0]
    progress = SearchProgress("masking", "eval_mlm_acc", "max", MAX_STEPS, early_stopping=False, stream=screen)
    drive(progress, clock, monkeypatch)
    progress.on_experiment_end([])
    text = screen.getvalue()
    assert text.count("\r") >= 5 and text.count("\n") <= 1  # one line, redrawn
    last = re.split(r"[\r\n]", text.strip())[-1]
    assert "best eval_mlm_acc —" in last and "eta 0:01:04" in last and "≤" not in last  # no ASHA: no bound


def test_a_resumed_search_counts_its_rate_from_the_resume(monkeypatch):
    log, clock = io.StringIO(), [0.0]
    monkeypatch.setattr("sslab.search_progress.time.monotonic", lambda: clock[0])
    progress = SearchProgress("s", "eval_mlm_loss", "min", MAX_STEPS, early_stopping=False, stream=log)
    progress.setup(total_num_samples=1)
    resumed = trial("t0", {"step": 60})  # restored from its checkpoint at step 60
    progress.on_trial_start(0, [], resumed)
    clock[0] += 10.0
    progress.on_trial_result(0, [], resumed, {"step": 80})
    assert "| 2.00 steps/s | eta 0:00:10" in log.getvalue().splitlines()[-1]


def test_the_callback_pickles_without_its_terminal_line():
    import pickle

    progress = SearchProgress("s", "eval_mlm_loss", "min", MAX_STEPS, early_stopping=True, stream=Terminal())
    progress.setup(total_num_samples=2)
    progress.on_trial_start(0, [], trial("t0"))
    assert progress.bar is not None
    # Tune pickles its callbacks into the experiment state; a resumed search opens its own line
    restored = pickle.loads(pickle.dumps(progress))
    assert restored.bar is None and restored.max_steps == MAX_STEPS and restored.state == {"t0": "running"}


def test_a_quiet_run_silences_ray_chatter_but_not_real_warnings():
    """A trial's run (run.quiet) in its own process: Ray Data's and Train's info lines and the two
    misleading warnings go; any other warning still reaches the log."""
    import logging

    from sslab.progress import quiet_libraries

    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    owners = [logging.getLogger("ray"), logging.getLogger("ray.data")]  # Ray Data's logs stop at its own handlers
    for owner in owners:
        owner.addHandler(handler)
    data, train = logging.getLogger("ray.data._internal.execution"), logging.getLogger("ray.train.torch")
    try:
        with quiet_libraries(True):
            data.info("Dataset d execution finished in 1.2 seconds")
            train.info("Moving model to device: cpu")
            data.warning("Warning: The Ray cluster currently does not have any available CPUs. The Dataset job...")
            data.warning("Progress bars disabled. To enable, set ...")
            data.warning("Spilled 3 GiB to disk")
        with quiet_libraries(False):
            train.warning("a worker died")
        data.warning("Progress bars disabled, outside a quiet run")
    finally:
        for owner in owners:
            owner.removeHandler(handler)
    assert seen == ["Spilled 3 GiB to disk", "a worker died", "Progress bars disabled, outside a quiet run"]
