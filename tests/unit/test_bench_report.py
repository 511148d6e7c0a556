"""The benchmarks' own parts: run.py turns the scripts' JSON into RESULTS.md (each figure's median
beside its goal, old definitions marked), training.py's CPU-share sampler, search.py's compute in
step-equivalents, data_pipeline.py's rows for the HF collator, and gpu.py's options."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "benchmarks"


def load(name: str, monkeypatch):
    spec = importlib.util.spec_from_file_location(f"sslab_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def common(monkeypatch):
    return load("common", monkeypatch)


def test_a_figure_holds_by_its_median_in_the_goals_direction(common):
    faster = common.Figure("speed", [0.9, 1.2, 1.1], 1.0, [9, 12, 11], [10, 10, 10], "tok/s")
    assert faster.median == 1.1 and faster.holds
    cheaper = common.Figure("compute", [0.3, 0.5, 0.4], 0.35, [3, 5, 4], [10, 10, 10], "steps", lower_is_better=True)
    assert cheaper.median == 0.4 and not cheaper.holds
    assert "MISSED" in cheaper.line() and "<= 0.35" in cheaper.line()


def test_results_md_lists_every_figure_with_goal_verdict_machine_and_versions(common, tmp_path, monkeypatch):
    result = common.Result("benchmarks/training.py", "Training", "full", 3, params={"steps": 70})
    result.figures = [common.Figure("scaling", [1.7, 1.75, 1.72], 1.8, [3.4, 3.5, 3.44], [2, 2, 2], "tokens/s",
                                    "sslab 2 workers", "sslab 1 worker"),
                      common.Figure("overhead", [0.97, 1.0, 0.99], 0.95, [1, 1, 1], [1, 1, 1], "tokens/s")]
    result.notes = ["the machine's ceiling: 1.9x"]
    out = tmp_path / "results"
    result.save(out)
    saved = json.loads((out / "training.json").read_text())
    assert saved["figures"][0]["median"] == 1.72 and saved["figures"][0]["holds"] is False
    md = tmp_path / "RESULTS.md"
    monkeypatch.setattr("sys.argv", ["run.py", "--render", "--out", str(out), "--results", str(md)])
    load("run", monkeypatch).main()
    text = md.read_text()
    assert "| scaling | **1.72** | ≥ 1.8 | **missed** |" in text
    assert "| overhead | **0.99** | ≥ 0.95 | holds |" in text
    assert "the machine's ceiling: 1.9x" in text and "torch " in text and "CPUs" in text


def test_no_results_yet_says_how_to_make_them(tmp_path, monkeypatch):
    md = tmp_path / "RESULTS.md"
    monkeypatch.setattr("sys.argv", ["run.py", "--render", "--out", str(tmp_path / "none"), "--results", str(md)])
    load("run", monkeypatch).main()
    assert "run `make bench`" in md.read_text()


def test_figure_notes_and_old_definitions_reach_results_md(common, tmp_path, monkeypatch):
    run = load("run", monkeypatch)
    old = "search compute: ASHA trial-steps / every trial to the end"
    assert old in run.REDEFINED
    result = common.Result("benchmarks/search.py", "Search", "full", 3, params={})
    result.figures = [common.Figure(old, [0.25, 0.2, 0.5], 0.35, [520, 432, 1032], [2048] * 3, "trial-steps",
                                    "asha", "fifo", lower_is_better=True),
                      common.Figure("search quality", [1, 1, 1], 1.02, [4.7] * 3, [4.7] * 3, "loss", "asha", "fifo",
                                    lower_is_better=True, note="the best finished trial of each")]
    out, md = tmp_path / "results", tmp_path / "RESULTS.md"
    result.save(out)
    monkeypatch.setattr("sys.argv", ["run.py", "--render", "--out", str(out), "--results", str(md)])
    run.main()
    text = md.read_text()
    assert f"| {old} | **0.25** | ≤ 0.35 | **to be re-measured** |" in text  # not "holds": measured the old way
    assert "`python benchmarks/run.py --only search`" in text and run.REDEFINED[old] in text
    assert "| search quality | **1** | ≤ 1.02 | holds |" in text
    assert "- search quality: the best finished trial of each" in text


def test_the_shipped_results_render_and_each_old_definition_says_to_re_measure(monkeypatch, tmp_path):
    run = load("run", monkeypatch)
    md = tmp_path / "RESULTS.md"
    monkeypatch.setattr("sys.argv", ["run.py", "--render", "--results", str(md)])
    run.main()
    rows = {line.split(" | ")[1]: line for line in md.read_text().splitlines() if line.startswith("| `")}
    for path in sorted((BENCH / "results").glob("*.json")):
        for fig in json.loads(path.read_text())["figures"]:
            assert ("**to be re-measured**" in rows[fig["name"]]) == (fig["name"] in run.REDEFINED), fig["name"]


def sample(t, run, workers=(), busy=0.0, idle=0.0):
    return (t, run, frozenset(workers), busy, idle)


def test_cpu_shares_splits_a_window_into_workers_rest_of_run_outside_and_idle(monkeypatch):
    training = load("training", monkeypatch)
    cpu = training.CpuShares()
    # A 2-core machine; CPU seconds so far per pid of the run: 1 the driver, 2 a Train worker, 3 a Ray
    # Data task that ends inside the window, 4 one that starts inside it.
    cpu.samples = [training.Sample(*s) for s in (
        sample(9.0, {1: 0.0, 2: 0.0, 3: 0.0}),
        sample(10.0, {1: 0.5, 2: 5.0, 3: 0.2}, {2}, busy=6.0, idle=1.0),
        sample(12.0, {1: 0.6, 2: 6.8, 3: 0.6}, {2}, busy=9.8, idle=1.2),
        sample(14.0, {1: 0.7, 2: 8.6, 4: 0.3}, {2}, busy=13.6, idle=1.4))]
    shares = cpu.shares(10.0, 14.0)  # the samples just inside: t=10 to t=14
    # workers 3.6 s; rest: driver 0.2 + task 3 until last seen 0.4 + task 4 from its start 0.3
    assert shares == pytest.approx({"workers": 0.9, "rest": 0.225, "run": 1.125, "outside": 0.775, "idle": 0.1})
    assert cpu.shares(10.5, 13.0) is None  # one sample inside: no rate to read


def test_the_run_is_this_process_and_its_descendants(monkeypatch):
    training = load("training", monkeypatch)
    assert training.descendants(1, {1: 0, 2: 1, 3: 2, 4: 0, 5: 4}) == {1, 2, 3}


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads Linux's /proc")
def test_cpu_sample_counts_our_children_not_others_nor_the_sampling_thread(monkeypatch):
    import threading

    training = load("training", monkeypatch)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    # An orphan: its parent exits at once, so it is not below this process (another user's, say).
    orphan = int(subprocess.run([sys.executable, "-c", "import subprocess, sys; print(subprocess.Popen([sys.executable, "
                                 "'-c', 'import time; time.sleep(60)'], stdout=subprocess.DEVNULL, "
                                 "stderr=subprocess.DEVNULL).pid)"], capture_output=True, text=True, check=True).stdout)
    try:
        start = time.process_time()
        while time.process_time() - start < 0.3:  # this thread burns CPU: the sampler's own is left out
            pass
        whole, less = training.CpuShares.sample(), training.CpuShares.sample(leave_out_thread=threading.get_native_id())
    finally:
        child.kill()
        os.kill(orphan, 9)
    assert child.pid in whole.run and orphan not in whole.run and os.getpid() in whole.run
    assert whole.run[os.getpid()] - less.run[os.getpid()] >= 0.25
    assert not whole.workers  # no Ray Train worker here
    assert whole.busy > 0 and whole.idle >= 0


def test_search_compute_counts_evaluations_at_their_measured_cost(monkeypatch):
    search = load("search", monkeypatch)
    # per repetition: (seconds of a training step, of an evaluation)
    cost = [(0.05, 0.5), (0.1, 0.5)]
    assert search.step_equivalents([520, 432], [40, 30], cost) == pytest.approx([520 + 40 * 10, 432 + 30 * 5])
    notes = search.compute_notes({"asha": [520, 432], "fifo": [2048, 2048]}, {"asha": [40, 30], "fifo": [16, 16]},
                                 cost, [8, 16])
    assert "rep 1: an evaluation = 10 training steps" in notes[0] and "2048 trial-steps + 16 evaluations" in notes[0]


def test_the_hf_collator_gets_rows_with_their_special_tokens_mask_as_run_mlm_gives_them(monkeypatch):
    import numpy as np
    from transformers import DataCollatorForLanguageModeling

    from sslab.config import SyntheticConfig, TokenizerConfig
    from sslab.synthetic import generate
    from sslab.tokenizer import train_tokenizer

    data_pipeline = load("data_pipeline", monkeypatch)
    tok = train_tokenizer(TokenizerConfig(vocab_size=500), generate(SyntheticConfig(num_docs=50), 0, 50)["text"], 64)
    ids = np.full((4, 16), tok.convert_tokens_to_ids("the"), dtype=np.int32)
    ids[:, 0], ids[:, 9] = tok.cls_token_id, tok.sep_token_id
    rows = data_pipeline.collator_rows(tok, ids)
    assert all(isinstance(r["input_ids"], list) for r in rows)  # a `datasets` table's rows, as Trainer hands them
    assert rows[0]["special_tokens_mask"] == [1] + [0] * 8 + [1] + [0] * 6
    batch = DataCollatorForLanguageModeling(tok, mlm_probability=0.99, return_tensors="pt")(rows)
    assert "special_tokens_mask" not in batch  # the collator used it
    assert (batch["labels"][:, [0, 9]] == -100).all() and (batch["labels"][:, 1:9] != -100).any()


def test_gpu_script_takes_compile_and_without_a_gpu_says_full_size_needs_one():
    import torch
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here: the full size would run")
    done = subprocess.run([sys.executable, str(BENCH / "gpu.py"), "--size", "full", "--compile"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "--size full needs a CUDA GPU" in done.stderr, done.stderr
