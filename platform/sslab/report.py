"""``sslab report R``: one self-contained HTML page for a run or a search directory.

The page (``R/report/index.html``) embeds its plots as inline PNGs (also written beside it) and
its CSS, and references nothing outside itself: it can be mailed, attached to an issue or opened
offline. A search's page opens with its verdict: the best trial's ranking metric against each
trivial baseline of it, the knob that mattered most, and the compute early stopping saved. Then a
header of what ``R`` is, a study's comparison with its paper (``sslab study``), the ranked trial table of a search, learning curves against tokens seen,
the searched knobs against the ranking metric, the objectives compared (when a search spans them)
and throughput. Baselines (``eval_unigram_loss`` and the like, declared by each objective) are
drawn as labelled reference lines on the metric they are a baseline for.

Plots use :class:`matplotlib.figure.Figure` directly, not pyplot: no global backend or figure
registry is touched, so a caller's interactive session is left as it was and nothing leaks.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from matplotlib import colormaps, ticker
from matplotlib.figure import Figure

from sslab.errors import ConfigError
from sslab.progress import fmt_duration
from sslab.protocol import fixed_protocol_names, is_fixed_protocol
from sslab.verdict import baseline_values, baselines_of, fmt, ok, verdict

ERROR_CHARS = 80  # the table's error column is cut here; the full text stays in results.csv
CSS = """body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1200px;
padding:0 1em;color:#222}h1{margin-bottom:.1em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.kind{color:#777;font-weight:normal}.verdict{font-size:15px;background:#f3f7fb;border-left:4px solid #3a78b5;
padding:.6em 1em;margin:1em 0}dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1.2em}
dt{color:#666}dd{margin:0}img{max-width:100%;height:auto}.row{display:flex;flex-wrap:wrap;gap:1em}
.scroll{overflow-x:auto}.note{color:#666}table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right}th{background:#f4f4f4}
td:nth-child(2){text-align:left;font-family:monospace}
td:last-child{text-align:left;min-width:16em}tbody tr:nth-child(even){background:#fafafa}"""


@dataclass
class Section:
    """One part of the page: a heading, its figures (name -> Figure) and/or HTML, and a note."""

    title: str
    figures: dict
    html: str = ""
    note: str = ""


def write_report(path) -> Path:
    """Write ``<path>/report/index.html`` (and the PNGs it embeds) for the run or search directory
    ``path``; return the page's path. Raises :class:`ConfigError` if ``path`` is neither."""
    root = Path(path).expanduser().resolve()
    build = search_page if kind_of(root) == "search" else run_page
    title, kind, facts, sections, summary = build(root)
    out = root / "report"
    out.mkdir(exist_ok=True)
    for old in out.glob("*.png"):  # a knob or objective no longer in the data must not linger
        old.unlink()
    page = out / "index.html"
    page.write_text(render(title, kind, facts, sections, out, summary), encoding="utf-8")
    return page


def kind_of(root: Path) -> str:
    """``"search"`` or ``"run"``, from the files ``root`` holds."""
    if (root / "results.csv").is_file():
        return "search"
    if (root / "search.yaml").is_file():
        raise ConfigError(f"{root} holds a search without results.csv: report it once the search has finished")
    if (root / "metrics.jsonl").is_file() or (root / "config.yaml").is_file():
        return "run"
    raise ConfigError(f"{root} is neither a run directory (config.yaml, metrics.jsonl) "
                      "nor a search directory (results.csv, search.yaml)")


# ---------------------------------------------------------------- reading


def read_metrics(run_dir) -> pd.DataFrame:
    """The logged steps of a run, one row per step in step order (a step logged twice, as an sslab
    that did not cut the file back on a resume left it, keeps its last line); empty if nothing was
    logged. A torn last line is skipped."""
    rows = []
    path = Path(run_dir) / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a run killed mid-write
    df = pd.DataFrame([r for r in rows if isinstance(r, dict) and "step" in r])
    if df.empty:
        return df
    df = df.drop_duplicates("step", keep="last").sort_values("step", kind="stable").reset_index(drop=True)
    return df.replace([np.inf, -np.inf], np.nan)


def read_mapping(path: Path) -> dict:
    """A YAML or JSON file's mapping, or ``{}`` if it is missing or not a mapping."""
    if not path.is_file():
        return {}
    data = (json.loads if path.suffix == ".json" else yaml.safe_load)(path.read_text())
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------- a run


def run_page(root: Path):
    """Title, kind, header facts and sections of a run's page."""
    cfg, summary = read_mapping(root / "config.yaml"), read_mapping(root / "summary.json")
    df = read_metrics(root)
    baselines = baselines_of([summary.get("objective") or (cfg.get("objective") or {}).get("name")])
    last = df.ffill().iloc[-1].to_dict() if len(df) else {}  # the latest value of each metric
    objective = summary.get("objective") or (cfg.get("objective") or {}).get("name")
    wall = fmt_duration(summary["wall_s"]) if "wall_s" in summary else "— (unfinished: no summary.json)"
    facts = {"objective": objective, "steps": summary.get("steps", last.get("step")),
             "tokens": summary.get("tokens", last.get("tokens")), "wall time": wall,
             "parameters": summary.get("parameters"),
             **{k: last.get(k) for k in fixed_protocol_names(last)}}
    none = "" if len(df) else "no metrics.jsonl lines: the run logged nothing"
    curves = {"curves": curves_figure({root.name: df}, baselines=baselines)} if len(df) else {}
    sections = [Section("Learning curves", curves, note=none),
                Section("Throughput", {"throughput": run_throughput(df)} if "tokens_per_s" in df else {})]
    return root.name, "run", facts, sections, ""


def run_throughput(df: pd.DataFrame) -> Figure:
    """Tokens/s against step."""
    fig = Figure(figsize=(8, 3), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(df["step"], df["tokens_per_s"], marker="o" if len(df) < 30 else None, ms=3)
    ax.set(xlabel="step", ylabel="tokens / s", title="throughput (the first window includes start-up)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    return fig


# ---------------------------------------------------------------- a search


def search_page(root: Path):
    """Title, kind, header facts and sections of a search's page."""
    spec = read_mapping(root / "search.yaml")
    table = pd.read_csv(root / "results.csv", dtype={"trial_id": str}).replace([np.inf, -np.inf], np.nan)
    metric, mode = spec.get("metric") or next(iter(fixed_protocol_names(table)), "loss"), spec.get("mode", "min")
    table = table.assign(**{c: table.get(c, np.nan) for c in ("status", metric)})  # all trials may have failed
    best = best_trial(root, table, metric)
    histories = {t: read_metrics(root / "trials" / t) for t in table["trial_id"]}
    logged = {t: df for t, df in histories.items() if len(df)}
    missing = ", ".join(t for t, df in histories.items() if not len(df))
    note = f"no metrics logged by {missing}" if missing else ""
    baselines = baselines_of(searched_objectives(spec, table))
    curves = {"curves": curves_figure(logged, best, metric, baselines)} if logged else {}
    sections = [Section(f"Trials, best first by {metric} ({mode})", {}, trial_table(table, best)),
                Section("Learning curves", curves, note=note),
                knob_section(table, spec, metric, mode, best, baselines)]
    study = read_mapping(root / "study.json")  # `sslab study`: the paper's numbers beside sslab's come first
    if study:
        from sslab.study import html_of

        sections.insert(0, Section(f"Study {study['study']}: the paper beside sslab at size {study['size']}", {},
                                   html_of(study)))
    if "objective.name" in table:
        sections.append(Section("Objectives compared", {"objectives": objective_figure(table, metric, mode)}))
    sections.append(Section("Throughput", {"throughput": search_throughput(logged, best)} if logged else {}))
    summary = verdict(table, logged, spec, metric, mode, best, baselines)
    return spec.get("name") or root.name, "search", search_facts(spec, table, best, metric, mode), sections, summary


def searched_objectives(spec: dict, table: pd.DataFrame) -> list[str]:
    """The objectives the trials trained: the searched ``objective.name`` values, else the base's."""
    if "objective.name" in table:
        return sorted(table["objective.name"].dropna().astype(str).unique())
    base = (spec.get("base") or {}).get("objective")
    return [base.get("name") if isinstance(base, dict) else base]


def best_trial(root: Path, table: pd.DataFrame, metric: str) -> str | None:
    """The id in ``best/trial.json``, else the first finished (else ranked) trial with a metric."""
    chosen = read_mapping(root / "best" / "trial.json").get("trial_id")
    if chosen in set(table["trial_id"]):
        return chosen
    good = ok(table, metric)
    finished = good[good["status"] == "FINISHED"]
    return next(iter((finished if len(finished) else good)["trial_id"]), None)


def search_facts(spec: dict, table: pd.DataFrame, best: str | None, metric: str, mode: str) -> dict:
    objectives = searched_objectives(spec, table)
    counts = table["status"].value_counts()
    row = table[table["trial_id"] == best].iloc[0] if best else None
    return {"description": spec.get("description"), "objective": ", ".join(o for o in objectives if o) or None,
            "metric": f"{metric} ({mode})", "trials": f"{len(table)} (" + ", ".join(
                f"{n} {s.lower()}" for s, n in counts.items()) + ")",
            "steps (longest trial)": table["step"].max() if "step" in table else None,
            "tokens (all trials)": table["tokens"].sum() if "tokens" in table else None,
            "trial time (sum)": fmt_duration(table["wall_s"].sum()) if "wall_s" in table else None,
            "best trial": f"{best}: {metric} = {fmt(row[metric])}" if row is not None else "— (no trial finished)"}


def trial_table(table: pd.DataFrame, best: str | None) -> str:
    """The ranked table as escaped HTML; the best trial is marked and errors shortened."""
    shown = table.copy()
    shown.insert(0, "rank", [f"{i} ★" if t == best else str(i) for i, t in enumerate(shown["trial_id"], 1)])
    if "error" in shown:
        shown["error"] = shown["error"].fillna("").astype(str).map(
            lambda e: e if len(e) <= ERROR_CHARS else e[:ERROR_CHARS - 1] + "…")
    shown = as_counts(shown).to_html(index=False, escape=True, na_rep="—", border=0, float_format="{:.4g}".format)
    return f'<div class="scroll">{shown}</div>'


def as_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Whole-number columns that are not metrics (step, tokens) as ``122,880``: a missing value makes
    pandas read them back as floats, which would show as ``1.229e+05``."""
    for name in [c for c in table.columns if not is_fixed_protocol(c)]:
        values = table[name]
        if values.dtype.kind in "iuf" and values.notna().any() and (values.dropna() % 1 == 0).all():
            table[name] = values.map(lambda v: "—" if pd.isna(v) else f"{int(v):,}")
    return table


def numeric_params(table: pd.DataFrame, spec: dict) -> dict:
    """Searched numeric params -> whether to plot them on a log axis (loguniform, or >= 2 decades)."""
    out = {}
    for name in (c for c in table.columns if "." in c):
        values = pd.to_numeric(table[name], errors="coerce")
        if table[name].dtype == bool or not values.notna().any() or values.notna().sum() < table[name].notna().sum():
            continue  # a flag, or text such as objective.name
        kind = next(iter((spec.get("space") or {}).get(name) or {}), "")
        positive = values.dropna()
        out[name] = kind == "loguniform" or (positive.min() > 0 and positive.max() / positive.min() >= 100)
    return out


def knob_section(table, spec, metric, mode, best, baselines=None) -> Section:
    """The searched knobs against the ranking metric, or why there is nothing to plot."""
    knobs = knob_figures(table, spec, metric, mode, best, baselines) if len(ok(table, metric)) else {}
    why = "no numeric param was searched" if len(ok(table, metric)) else f"no trial has a value of {metric}"
    note = "failed trials are left out; hollow markers: trials stopped early" if knobs else why
    return Section(f"Searched knobs vs {metric}", knobs, note=note)


def knob_figures(table, spec, metric, mode, best, baselines=None) -> dict:
    """One scatter per searched numeric param against the ranking metric."""
    lines = baseline_values([row for _, row in ok(table, metric).iterrows()], metric, baselines or {})
    return {f"knob_{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}": knob_figure(table, name, log, metric, mode, best, lines)
            for name, log in numeric_params(table, spec).items()}


def knob_figure(table, name: str, log: bool, metric: str, mode: str, best, lines: dict | None = None) -> Figure:
    """``metric`` against the param ``name``: finished trials filled, stopped ones hollow, the best a
    star, and the metric's baselines as reference ``lines``."""
    fig = Figure(figsize=(5.6, 3.8), layout="constrained")
    ax = fig.add_subplot()
    draw_baselines(ax, lines or {})
    good = ok(table, metric)
    x, y = pd.to_numeric(good[name], errors="coerce"), good[metric]
    done = good["status"] == "FINISHED"
    groups = {"finished": (done, dict(color="C0")),
              "stopped early": (~done, dict(facecolors="none", edgecolors="C0")),
              f"best ({best})": (good["trial_id"] == best, dict(marker="*", s=220, color="C3", zorder=3))}
    for label, (pick, style) in groups.items():
        if pick.any():
            ax.scatter(x[pick], y[pick], label=label, **{"zorder": 2, **style})
    if log and len(x.dropna()) and x.min() > 0:
        log_x(ax, x.max() / x.min())
    better = "lower" if mode == "min" else "higher"
    ax.set(xlabel=name, ylabel=f"{metric} ({better} is better)", title=f"{name} vs {metric}")
    ax.grid(alpha=0.3)
    if ax.collections:
        ax.legend(fontsize="small")
    return fig


def log_x(ax, ratio: float) -> None:
    """A log scale whose labels do not overlap: matplotlib's own labels every minor tick of a
    span under a decade (2x10^-4, 3x10^-4, ... run into each other), and a log axis over a narrow
    span shows nothing a linear one does not."""
    decades = math.log10(ratio)
    if decades < 0.5:
        return
    ax.set_xscale("log")
    if decades >= 2:
        return  # decade labels: matplotlib's are readable
    ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5) if decades >= 1 else (1, 2, 3, 5, 7)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def objective_figure(table: pd.DataFrame, metric: str, mode: str) -> Figure:
    """The best ``metric`` per objective as a bar, every trial of it as a dot; best objective on top."""
    good = ok(table, metric)
    groups = good.groupby(good["objective.name"].astype(str))[metric]
    best = (groups.min() if mode == "min" else groups.max()).sort_values(ascending=mode == "min")
    fig = Figure(figsize=(8, 1.2 + 0.45 * max(len(best), 1)), layout="constrained")
    ax = fig.add_subplot()
    rows = {name: i for i, name in enumerate(reversed(best.index))}
    ax.barh(list(rows), [best[n] for n in rows], color="C0", alpha=0.6)
    ax.scatter(good[metric], good["objective.name"].astype(str).map(rows), color="k", s=14, zorder=3)
    for name, i in rows.items():
        ax.annotate(fmt(best[name]), (best[name], i), xytext=(4, 0), textcoords="offset points", va="center")
    better = "lower" if mode == "min" else "higher"
    ax.set(xlabel=f"{metric} ({better} is better)", title=f"best {metric} per objective (bar), each trial (dot)")
    ax.margins(x=0.12)
    return fig


def search_throughput(histories: dict, best) -> Figure:
    """Median tokens/s of each trial, without its first window (which includes start-up)."""
    speed = {t: df["tokens_per_s"].iloc[1 if len(df) > 1 else 0:].median()
             for t, df in histories.items() if "tokens_per_s" in df}
    fig = Figure(figsize=(8, 1.2 + 0.3 * max(len(speed), 1)), layout="constrained")
    ax = fig.add_subplot()
    names = list(reversed(speed))
    ax.barh(names, [speed[t] for t in names], color=["C3" if t == best else "C0" for t in names])
    ax.set(xlabel="median tokens / s", title="throughput per trial (red: best trial)")
    ax.grid(axis="x", alpha=0.3)
    return fig


# ---------------------------------------------------------------- baselines


def draw_baselines(ax, lines: dict[str, float]) -> None:
    """Each baseline as a dashed horizontal line, labelled with its name and value at the right."""
    for label, value in lines.items():
        ax.axhline(value, color="0.35", ls="--", lw=1.2, zorder=1, label=f"{label} {fmt(value)}")
        ax.annotate(f"{label} {fmt(value)}", (1, value), xycoords=("axes fraction", "data"), xytext=(-4, 3),
                    textcoords="offset points", ha="right", va="bottom", fontsize="small", color="0.25")


# ---------------------------------------------------------------- curves and the page


def curves_figure(histories: dict, best: str | None = None, metric: str | None = None,
                  baselines: dict | None = None) -> Figure:
    """Training loss and every fixed-protocol metric against tokens seen: one panel per metric,
    one line per run (the ranking ``metric`` first; the ``best`` run drawn thick and dark). A
    baseline (``baselines``: name -> the metric it baselines) is a reference line on its metric's
    panel, not a panel of its own."""
    baselines = baselines or {}
    keys = sorted({k for df in histories.values() for k in fixed_protocol_names(df)})
    keys = [k for k in keys if baselines.get(k) not in keys]
    keys = ([metric] if metric in keys else []) + ["loss"] + [k for k in keys if k != metric]
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.1 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    colors, handles = colormaps["tab10" if len(histories) <= 10 else "tab20"], {}
    for i, (name, df) in enumerate(histories.items()):
        style = dict(color="k", lw=2.4, zorder=3) if name == best else dict(color=colors(i % 20), lw=1.2, alpha=0.85)
        label = f"{name} (best)" if name == best else name
        for ax, key in zip(axes, keys):
            data = df[["tokens", key]].dropna() if {"tokens", key} <= set(df) else pd.DataFrame()
            if len(data):  # evaluations are sparse: dots show where they were taken
                marker = "o" if key != "loss" or len(data) == 1 else None
                handles[label] = ax.plot(data["tokens"], data[key], marker=marker, ms=3, label=label, **style)[0]
    finals = [df.ffill().iloc[-1] for df in histories.values() if len(df)]
    for ax, key in zip(axes, keys):
        draw_baselines(ax, baseline_values(finals, key, baselines))
        ax.set(xlabel="tokens seen", title=f"{key} (ranking metric)" if key == metric else key)
        ax.xaxis.set_major_formatter(ticker.EngFormatter())
        ax.grid(alpha=0.3)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    if len(histories) > 1:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=min(len(handles), 6),
                   fontsize="small")
    return fig


def png(fig: Figure, path: Path) -> str:
    """Save ``fig`` to ``path`` and return its base64 text for an inline ``data:`` image."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    path.write_bytes(buf.getvalue())
    return base64.b64encode(buf.getvalue()).decode("ascii")


def render(title: str, kind: str, facts: dict, sections: list[Section], out: Path, summary: str = "") -> str:
    """The whole page, opening with the ``summary`` verdict; each section's figures become
    ``out/<name>.png`` and inline images."""
    esc = html.escape
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(fmt(v))}</dd>" for k, v in facts.items() if v is not None)
    body = []
    for s in (s for s in sections if s.figures or s.html or s.note):
        imgs = "".join(f'<img alt="{esc(name)}" src="data:image/png;base64,{png(fig, out / f"{name}.png")}">'
                       for name, fig in s.figures.items())
        note = f'<p class="note">{esc(s.note)}</p>' if s.note else ""
        body.append(f"<h2>{esc(s.title)}</h2>{note}<div class=\"row\">{imgs}</div>{s.html}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)} — sslab {kind}</title>'
            f"<style>{CSS}</style></head><body><h1>{esc(title)} <span class=\"kind\">sslab {kind}</span></h1>"
            + (f'<p class="verdict" id="verdict">{esc(summary)}</p>' if summary else "")
            + f"<dl>{dl}</dl>{''.join(body)}</body></html>\n")
