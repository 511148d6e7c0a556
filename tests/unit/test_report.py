"""``sslab report`` (:mod:`sslab.report`): the self-contained HTML page of a run or a search.

Runs and searches are fabricated here in the exact on-disk formats that ``sslab pretrain`` and
``sslab tune`` write (see ``runs/demo``): no Ray, no training. The page must open offline and
anywhere, so every image is an inline PNG that decodes and nothing outside the page is referenced.
"""
from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from sslab.errors import ConfigError
from sslab.report import curves_figure, knob_figures, read_metrics, write_report

STEPS, LOG_EVERY, EVAL_EVERY, TOKENS_PER_STEP = 60, 10, 20, 2048
UNIGRAM_LOSS, UNIGRAM_ACC = 4.8, 0.2  # the MLM runs' baselines: the same validation blocks in every run
SECRET_TAIL = "and the tail of a very long traceback line that the table must not show"
EXTERNAL = re.compile(r"https?:|src=[\"']?//|href=[\"']?//|<script|<link|@import|url\(", re.I)
IMG_SRC = re.compile(r'<img [^>]*src="([^"]*)"')


# ---------------------------------------------------------------- fabricated directories


def metric_lines(final: float, steps: int, objective: str = "mlm") -> list[dict]:
    """The lines of a ``metrics.jsonl``: a loss every LOG_EVERY steps, fixed-protocol metrics every EVAL_EVERY."""
    lines = []
    for step in range(LOG_EVERY, steps + 1, LOG_EVERY):
        line = {"step": step, "loss": final + 3.0 / step ** 0.5, "lr": 1e-3, "grad_norm": 1.0,
                "tokens": step * TOKENS_PER_STEP, "tokens_per_s": 900.0 if step == LOG_EVERY else 12000.0 + step,
                "epoch": step / 100, "nonfinite_steps": 0}
        if step % EVAL_EVERY == 0 or step == steps:
            line.update(probe_acc=1 - final / 10 - 0.01 * (STEPS - step) / STEPS)
            if objective == "mlm":
                line.update(eval_mlm_loss=final + 10.0 / step, eval_mlm_acc=0.5 - final / 20,
                            eval_unigram_loss=UNIGRAM_LOSS, eval_unigram_acc=UNIGRAM_ACC)
        lines.append(line)
    return lines


def make_run(run_dir, lines: list[dict], *, objective="mlm", mask_ratio=0.15, lr=1e-3, summary=True):
    """A run directory: config.yaml, metrics.jsonl and (if it finished) summary.json."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = {"objective": {"name": objective, "mask_ratio": mask_ratio}, "train": {"lr": lr, "max_steps": STEPS},
           "run": {"out": str(run_dir), "quiet": True}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    if summary and lines:
        last = lines[-1]
        (run_dir / "summary.json").write_text(json.dumps({
            "objective": objective, "steps": last["step"], "tokens": last["tokens"], "wall_s": 42.5,
            "tokens_per_s": last["tokens_per_s"], "num_workers": 1, "parameters": 692622, "metrics": last,
            "checkpoint": str(run_dir / f"checkpoint_{last['step']:08d}"), "model_dir": str(run_dir / "model")}))
    return run_dir


def make_search(root, trials: list[dict], *, space: dict, metric="eval_mlm_loss", mode="min", name="masking"):
    """A search directory as ``sslab tune`` leaves it. Each trial: ``id``, ``params``, ``status``,
    ``final`` (its metric; None: it failed before logging anything) and optionally ``error``."""
    for t in trials:
        if t["final"] is not None:
            steps = STEPS if t["status"] == "FINISHED" else EVAL_EVERY
            objective = t["params"].get("objective.name", "mlm")
            make_run(root / "trials" / t["id"], metric_lines(t["final"], steps, objective), objective=objective,
                     summary=t["status"] == "FINISHED")
    rows = [results_row(t, metric) for t in trials]
    rows.sort(key=lambda r: (math.isnan(r[metric]), r[metric] if mode == "min" else -r[metric]))
    columns = list(dict.fromkeys(k for r in rows for k in r))
    head = ["trial_id", *[c for c in columns if "." in c], "status", *sorted(c for c in columns if c.startswith(
        ("eval_", "probe_"))), "step", "tokens", "wall_s", "error"]
    lines = [",".join(head)] + [",".join(csv_cell(r.get(c)) for c in head) for r in rows]
    (root / "results.csv").write_text("\n".join(lines) + "\n")
    spec = {"name": name, "description": f"{name}: a fabricated search, ranked by {metric}",
            "base": {"objective": "mlm", "corpus": "synthetic"}, "space": space, "metric": metric, "mode": mode,
            "scheduler": {"name": "asha"}}
    (root / "search.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    best = next((r for r in rows if r["status"] == "FINISHED"), None)
    if best:
        (root / "best").mkdir()
        (root / "best" / "trial.json").write_text(json.dumps({"trial_id": best["trial_id"], "params": {}}))
    return root


def results_row(t: dict, metric: str) -> dict:
    steps, objective = STEPS if t["status"] == "FINISHED" else EVAL_EVERY, t["params"].get("objective.name", "mlm")
    last = metric_lines(t["final"], steps, objective)[-1] if t["final"] else {}
    row = {"trial_id": t["id"], **t["params"], "status": t["status"], metric: float("nan")}
    row.update({k: v for k, v in last.items() if k.startswith(("eval_", "probe_"))})
    row.update(step=last.get("step", ""), tokens=last.get("tokens", ""), wall_s=12.5, error=t.get("error", ""))
    return row


def csv_cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = str(value)
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


MASKING_SPACE = {"objective.mask_ratio": {"uniform": [0.1, 0.6]}, "train.lr": {"loguniform": [1e-4, 1e-2]}}
MASKING_TRIALS = [
    {"id": "a1b2c_00000", "params": {"objective.mask_ratio": 0.15, "train.lr": 2e-4}, "status": "FINISHED",
     "final": 4.9},
    {"id": "a1b2c_00001", "params": {"objective.mask_ratio": 0.40, "train.lr": 1e-3}, "status": "FINISHED",
     "final": 4.5},
    {"id": "a1b2c_00002", "params": {"objective.mask_ratio": 0.55, "train.lr": 5e-3}, "status": "STOPPED",
     "final": 5.6},
    {"id": "a1b2c_00003", "params": {"objective.mask_ratio": 0.30, "train.lr": 8e-3}, "status": "ERROR",
     "final": None, "error": "ValueError: <script>alert('x')</script> went wrong, " + SECRET_TAIL},
]
BAKEOFF_SPACE = {"objective.name": {"grid": ["mlm", "clm", "simcse"]}, "train.lr": {"loguniform": [1e-4, 1e-3]}}
BAKEOFF_TRIALS = [
    {"id": f"ff00a_0000{i}", "params": {"objective.name": name, "train.lr": lr}, "status": "FINISHED", "final": final}
    for i, (name, lr, final) in enumerate([("mlm", 2e-4, 4.0), ("clm", 3e-4, 3.0), ("simcse", 5e-4, 2.0),
                                           ("mlm", 8e-4, 3.5), ("clm", 1e-4, 2.5)])
]


@pytest.fixture(scope="module")
def masking(tmp_path_factory):
    """A 4-trial mask-ratio x lr search (one stopped early, one failed before logging) and its page."""
    root = make_search(tmp_path_factory.mktemp("masking"), MASKING_TRIALS, space=MASKING_SPACE)
    return root, write_report(root)


@pytest.fixture(scope="module")
def bakeoff(tmp_path_factory):
    """A search across objectives, ranked by probe accuracy (higher is better), and its page.
    Only the MLM trials report eval_mlm_*: the other objectives' rows and curves lack them."""
    root = make_search(tmp_path_factory.mktemp("bakeoff"), BAKEOFF_TRIALS, space=BAKEOFF_SPACE, metric="probe_acc",
                       mode="max", name="bakeoff")
    return root, write_report(root)


def resumed_lines() -> list[dict]:
    """Steps 10..40 logged, a crash, a resume from the step-20 checkpoint: 30 and 40 logged again."""
    first = metric_lines(5.0, 40)
    again = [dict(line, loss=line["loss"] - 1.0) for line in metric_lines(5.0, STEPS)[2:]]
    return first + again


# ---------------------------------------------------------------- helpers


def images(page) -> list[Image.Image]:
    """Every ``<img>`` of the page, decoded; each must be an inline PNG."""
    out = []
    for src in IMG_SRC.findall(page.read_text()):
        assert src.startswith("data:image/png;base64,"), src[:60]
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        image = Image.open(io.BytesIO(data))
        image.load()
        assert image.format == "PNG"
        out.append(image)
    return out


def check_page(page):
    """The checks every page must pass: inline, decodable, sensibly sized PNGs, also written beside it."""
    text = page.read_text()
    assert not EXTERNAL.search(text), EXTERNAL.search(text).group(0)
    shown = images(page)
    assert shown and len(shown) == text.count("<img ")
    for image in shown:
        assert 300 <= image.width <= 2500 and 150 <= image.height <= 2500, image.size
    files = sorted(page.parent.glob("*.png"))
    assert len(files) == len(shown)
    embedded = set(IMG_SRC.findall(text))
    for f in files:
        assert "data:image/png;base64," + base64.b64encode(f.read_bytes()).decode() in embedded, f.name
    return text


# ---------------------------------------------------------------- a search


def test_search_page_names_the_search_and_embeds_every_plot(masking):
    root, page = masking
    assert page == root / "report" / "index.html"
    text = check_page(page)
    assert "masking" in text and "a fabricated search, ranked by eval_mlm_loss" in text
    assert "eval_mlm_loss (min)" in text
    assert "a1b2c_00001: eval_mlm_loss = 4.667" in text  # the best trial and its metric in the header
    names = {f.stem for f in page.parent.glob("*.png")}
    assert {"curves", "throughput"} <= names


def test_the_table_lists_trials_best_first_with_the_error_escaped_and_shortened(masking):
    _, page = masking
    text = page.read_text()
    table = text[text.index("<table"):text.index("</table>")]
    assert re.findall(r"<td>(a1b2c_\d+)</td>", table) == ["a1b2c_00001", "a1b2c_00000", "a1b2c_00002", "a1b2c_00003"]
    assert "1 ★" in table and "ERROR" in table and "STOPPED" in table
    assert "&lt;script&gt;alert" in table and "<script" not in text
    assert SECRET_TAIL not in text and "…" in table
    for column in ("objective.mask_ratio", "train.lr", "status", "eval_mlm_loss", "probe_acc"):
        assert f"<th>{column}</th>" in table


def test_a_knob_plot_per_numeric_param_on_the_axis_its_domain_asks_for(masking):
    root, page = masking
    names = {f.stem for f in page.parent.glob("*.png")}
    assert {"knob_objective.mask_ratio", "knob_train.lr"} <= names
    assert "objectives" not in names  # objective.name is not searched
    import pandas as pd

    table = pd.read_csv(root / "results.csv", dtype={"trial_id": str})
    figures = knob_figures(table, yaml.safe_load((root / "search.yaml").read_text()), "eval_mlm_loss", "min",
                           "a1b2c_00001")
    scales = {name: fig.axes[0].get_xscale() for name, fig in figures.items()}
    assert scales == {"knob_objective.mask_ratio": "linear", "knob_train.lr": "log"}
    ax = figures["knob_objective.mask_ratio"].axes[0]
    points = {c.get_label(): sorted(c.get_offsets()[:, 0].tolist()) for c in ax.collections}
    # the ERROR trial (mask ratio 0.30) is left out
    assert points == {"finished": [0.15, 0.40], "stopped early": [0.55], "best (a1b2c_00001)": [0.40]}


def test_a_trial_that_logged_nothing_is_named_not_fatal(masking):
    _, page = masking
    assert "no metrics logged by a1b2c_00003" in page.read_text()


def test_objectives_are_compared_when_the_search_spans_them(bakeoff):
    root, page = bakeoff
    text = check_page(page)
    names = {f.stem for f in page.parent.glob("*.png")}
    assert {"objectives", "knob_train.lr", "curves", "throughput"} <= names
    assert "knob_objective.name" not in names  # a categorical param has no scatter against the metric
    assert "Objectives compared" in text and "probe_acc (max)" in text
    assert "objective</dt><dd>clm, mlm, simcse</dd>" in text
    order = re.findall(r"<td>(ff00a_\d+)</td>", text)
    assert order[0] == "ff00a_00002" and len(order) == 5  # simcse, the highest probe accuracy


# ---------------------------------------------------------------- baselines and the verdict


def verdict_of(page) -> str:
    found = re.search(r'<p class="verdict" id="verdict">(.*?)</p>', page.read_text())
    assert found, "the page has no verdict"
    return found.group(1)


def panel(fig, title):
    return next(ax for ax in fig.axes if ax.get_title() == title)


def reference_lines(ax) -> dict[str, float]:
    """The horizontal reference lines of a panel: label -> height."""
    return {line.get_label(): line.get_ydata()[0] for line in ax.lines
            if "baseline" in line.get_label() and len(set(line.get_ydata())) == 1}


def test_baselines_are_reference_lines_on_their_metric_not_curves_of_their_own(masking):
    root, _ = masking
    histories = {t["id"]: read_metrics(root / "trials" / t["id"]) for t in MASKING_TRIALS if t["final"] is not None}
    fig = curves_figure(histories, "a1b2c_00001", "eval_mlm_loss",
                        {"eval_unigram_loss": "eval_mlm_loss", "eval_unigram_acc": "eval_mlm_acc"})
    titles = {ax.get_title() for ax in fig.axes if ax.get_visible()}
    assert titles == {"eval_mlm_loss (ranking metric)", "loss", "eval_mlm_acc", "probe_acc"}
    assert reference_lines(panel(fig, "eval_mlm_loss (ranking metric)")) == {"unigram baseline 4.8": UNIGRAM_LOSS}
    assert reference_lines(panel(fig, "eval_mlm_acc")) == {"unigram baseline 0.2": UNIGRAM_ACC}
    assert reference_lines(panel(fig, "loss")) == {}


def test_the_knob_plots_carry_the_ranking_metrics_baseline(masking):
    root, _ = masking
    import pandas as pd

    table = pd.read_csv(root / "results.csv", dtype={"trial_id": str})
    figures = knob_figures(table, yaml.safe_load((root / "search.yaml").read_text()), "eval_mlm_loss", "min",
                           "a1b2c_00001", {"eval_unigram_loss": "eval_mlm_loss"})
    for fig in figures.values():
        assert reference_lines(fig.axes[0]) == {"unigram baseline 4.8": UNIGRAM_LOSS}


def test_the_verdict_opens_the_page_with_the_best_trial_against_its_baseline_and_the_compute_saved(masking):
    _, page = masking
    text = page.read_text()
    said = verdict_of(page)
    assert text.index('id="verdict"') < text.index("<dl>")  # at the top, before the facts
    # eval_mlm_loss of the best trial: 4.5 + 10/60; the unigram baseline: 4.8
    assert said.startswith("The best trial, a1b2c_00001, reaches eval_mlm_loss = 4.667: it beats the unigram "
                           "baseline (4.8) by 0.1333 (2.8%).")
    # 3 trials that did not fail, 60 steps each in a full grid; the stopped one ran 20
    assert "ASHA stopped 1 of 3 trials early: the search ran 140 of the 180 training steps a full grid would, " \
           "22% less compute." in said


def test_the_verdict_says_plainly_when_the_best_trial_has_not_beaten_its_baseline(tmp_path):
    trials = [{"id": f"d0000_0000{i}", "params": {"objective.mask_ratio": r}, "status": "FINISHED", "final": final}
              for i, (r, final) in enumerate([(0.15, 5.0), (0.3, 5.2)])]
    said = verdict_of(write_report(make_search(tmp_path, trials, space={"objective.mask_ratio": {"uniform": [0.1, 0.6]}})))
    assert "reaches eval_mlm_loss = 5.167: it does not beat the unigram baseline (4.8)" in said
    assert "Every trial ran all 60 steps (no early stopping)." in said
    assert "mattered most" not in said  # two trials say nothing about which knob matters


def test_the_verdict_names_the_knob_that_mattered_most_and_its_direction(tmp_path):
    # the loss falls with the learning rate; the mask ratio is shuffled against it
    lrs, ratios = [1e-4, 3e-4, 1e-3, 3e-3, 6e-3], [0.3, 0.15, 0.5, 0.2, 0.4]
    trials = [{"id": f"e0000_0000{i}", "params": {"objective.mask_ratio": r, "train.lr": lr}, "status": "FINISHED",
               "final": 5.0 - i * 0.2} for i, (lr, r) in enumerate(zip(lrs, ratios))]
    said = verdict_of(write_report(make_search(tmp_path, trials, space=MASKING_SPACE)))
    assert "train.lr mattered most: higher values gave better eval_mlm_loss (Spearman rho -1.00 over 5 trials " \
           "at step 60)." in said
    # ranked by a metric where higher is better, the direction still reads as "better"
    (tmp_path / "max").mkdir()
    flipped = make_search(tmp_path / "max", trials, space=MASKING_SPACE, metric="eval_mlm_acc", mode="max")
    said = verdict_of(write_report(flipped))
    assert "train.lr mattered most: higher values gave better eval_mlm_acc (Spearman rho +1.00" in said
    assert "it beats the unigram baseline (0.2) by" in said


def test_a_categorical_knob_names_its_best_value(bakeoff):
    _, page = bakeoff
    said = verdict_of(page)
    assert said.startswith("The best trial, ff00a_00002, reaches probe_acc = ")
    assert "(no baseline of probe_acc was logged to compare it with)" in said
    assert "objective.name mattered most: simcse did best (eta squared" in said


def test_a_studys_comparison_with_its_paper_opens_the_search_page(tmp_path):
    import html

    import pandas as pd

    from sslab.study import compare, load_study

    trials = [{"id": f"c0000_0000{i}", "params": {"objective.noise_density": r}, "status": "FINISHED", "final": final}
              for i, (r, final) in enumerate([(0.15, 4.9), (0.25, 4.7), (0.5, 4.8)])]
    root = make_search(tmp_path, trials, space={"objective.noise_density": {"grid": [0.15, 0.25, 0.5]}})
    table = pd.DataFrame({"objective.noise_density": [0.15, 0.25, 0.5], "status": ["FINISHED"] * 3,
                          "eval_span_loss": [4.9, 4.7, 4.8]})
    study = compare(load_study("span_corruption"), "tiny", table, 60)
    (root / "study.json").write_text(json.dumps(study))
    page = write_report(root).read_text()
    sections = re.findall(r"<h2>(.*?)</h2>", page)
    assert sections[0] == "Study span_corruption: the paper beside sslab at size tiny"
    first = page[page.index("<h2>"):page.index(f"<h2>{sections[1]}")]
    assert "83.28" in first and "15 % &gt; 50 %" in first and "does not reproduce at this size" in first
    assert html.escape(study["summary"], quote=True) in first


def test_a_single_trial_search_with_a_nan_metric_still_renders(tmp_path):
    trials = [{"id": "b0000_00000", "params": {"objective.mask_ratio": 0.2}, "status": "FINISHED", "final": 4.0}]
    root = make_search(tmp_path, trials, space={"objective.mask_ratio": {"uniform": [0.1, 0.6]}})
    csv = (root / "results.csv").read_text().splitlines()
    col = csv[0].split(",").index("eval_mlm_acc")
    cells = csv[1].split(",")
    cells[col] = "nan"
    (root / "results.csv").write_text("\n".join([csv[0], ",".join(cells)]) + "\n")
    text = check_page(write_report(root))
    assert "b0000_00000" in text and "—" in text


def test_a_search_where_every_trial_failed(tmp_path):
    (tmp_path / "search.yaml").write_text(yaml.safe_dump({"name": "doomed", "metric": "eval_mlm_loss",
                                                          "space": MASKING_SPACE}))
    (tmp_path / "results.csv").write_text(
        "trial_id,objective.mask_ratio,train.lr,status,step,tokens,wall_s,error\n"
        "c0000_00000,0.2,0.001,ERROR,,,3.0,RunError: loss or gradient was non-finite for 5 steps in a row\n")
    text = write_report(tmp_path).read_text()
    assert "doomed" in text and "no trial finished" in text and "non-finite" in text
    assert "no metrics logged by c0000_00000" in text and "no trial has a value of eval_mlm_loss" in text
    assert "<img " not in text and "Throughput" not in text  # no empty plots


# ---------------------------------------------------------------- a run


def test_a_resumed_runs_repeated_steps_count_once_and_the_last_line_wins(tmp_path):
    run = make_run(tmp_path / "run", resumed_lines())
    df = read_metrics(run)
    assert df["step"].tolist() == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    resumed = {line["step"]: line["loss"] for line in metric_lines(5.0, STEPS)}
    assert df.set_index("step").loc[30, "loss"] == pytest.approx(resumed[30] - 1.0)
    assert df.set_index("step").loc[10, "loss"] == pytest.approx(resumed[10])
    loss = next(ax for ax in curves_figure({"run": df}).axes if ax.get_title() == "loss")
    xs = loss.lines[0].get_xdata().tolist()
    assert xs == sorted(set(xs)) and len(xs) == STEPS // LOG_EVERY  # each step plotted once, in order


def test_a_run_page_shows_what_the_run_is(tmp_path):
    run = make_run(tmp_path / "my_run", resumed_lines())
    (run / "report").mkdir()
    (run / "report" / "knob_gone.png").write_bytes(b"from an earlier report")  # must not linger
    page = write_report(run)
    text = check_page(page)
    assert "my_run" in text and "sslab run" in text
    for fact in ("mlm", "692,622", "0:00:42", f"{STEPS * TOKENS_PER_STEP:,}"):
        assert f"<dd>{fact}</dd>" in text, fact
    assert {f.stem for f in page.parent.glob("*.png")} == {"curves", "throughput"}


def test_a_run_with_one_logged_step_and_no_summary(tmp_path):
    run = make_run(tmp_path / "short", metric_lines(5.0, LOG_EVERY), summary=False)
    (run / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text() + '{"step": 20, "loss": 4.')  # torn line
    text = check_page(write_report(run))
    assert "unfinished" in text
    assert read_metrics(run)["step"].tolist() == [LOG_EVERY]


def test_the_users_matplotlib_backend_and_pyplot_are_left_alone(tmp_path):
    run = make_run(tmp_path / "run", metric_lines(5.0, STEPS))
    code = ("import sys, matplotlib; matplotlib.use('svg'); from sslab.report import write_report; "
            f"write_report({str(run)!r}); print('matplotlib.pyplot' in sys.modules, matplotlib.get_backend())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "svg"]


def test_a_path_that_is_neither_a_run_nor_a_search_names_itself(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    for bad in (tmp_path, tmp_path / "missing"):
        with pytest.raises(ConfigError, match=re.escape(str(bad))):
            write_report(bad)
    (tmp_path / "search.yaml").write_text("metric: eval_mlm_loss\n")
    with pytest.raises(ConfigError, match="results.csv"):
        write_report(tmp_path)


# ---------------------------------------------------------------- in a browser


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
COUNT_LOADED = ("<script>addEventListener('load', () => { document.title = 'loaded=' + "
                "[...document.images].filter(i => i.complete && i.naturalWidth > 0).length; });</script>")


def chromium(*args, timeout=60) -> str:
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--virtual-time-budget=5000", *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary: the report is not checked in a browser "
                                              "(apt-get install chromium; .ci/run does where it can)")
def test_chromium_renders_every_image_and_the_verdict(masking, tmp_path):
    """The page in a real browser, offline: every image decodes and shows, the verdict names the
    best trial, and a screenshot is kept (in ``$SSLAB_ARTIFACTS`` when CI sets it)."""
    _, page = masking
    text = page.read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", COUNT_LOADED + "</body>"))
    dom = chromium("--dump-dom", probe.as_uri())
    assert re.search(r"<title>loaded=(\d+)</title>", dom).group(1) == str(text.count("<img "))
    shown = re.search(r'<p class="verdict" id="verdict">(.*?)</p>', dom)
    assert shown and shown.group(1).startswith("The best trial, a1b2c_00001, reaches eval_mlm_loss")
    artifacts = Path(os.environ.get("SSLAB_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "report_search.png"
    chromium("--window-size=1280,2400", f"--screenshot={shot}", page.as_uri())
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2400)
    colors = image.getcolors(maxcolors=1 << 20)
    assert len(colors) > 50  # not a blank page
    blue = sum(n for n, (r, g, b) in colors if b > 150 and r < 80 and 90 < g < 150)  # matplotlib's C0 in the plots
    assert blue > 1000
