"""What a search found, in words: the verdict that opens its report.

The best trial's ranking metric against each trivial baseline of it (each objective declares its
own, :attr:`Objective.baselines`), the searched knob that best orders the trials by that metric
(all compared at the last step every trial reached), and the training steps early stopping saved
against every trial run to the end. :mod:`sslab.report` draws the same baselines as reference lines.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sslab.errors import ConfigError


def fmt(value) -> str:
    """A number for the page: 4 significant digits, thousands separated; ``—`` for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, (int, np.integer)) or (isinstance(value, float) and value.is_integer() and value >= 1000):
        return f"{int(value):,}"
    return f"{value:.4g}" if isinstance(value, (float, np.floating)) else str(value)


def ok(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Trials that did not fail and have a value of ``metric``."""
    return table[(table["status"] != "ERROR") & table[metric].notna()]


def baselines_of(objectives) -> dict[str, str]:
    """Each trivial baseline the ``objectives`` report -> the metric it is a baseline for. An
    objective this process does not know (a plug-in registered elsewhere) adds none."""
    from sslab.objectives import get

    out = {}
    for name in objectives:
        try:
            out.update(get(str(name)).baselines)
        except ConfigError:
            continue
    return out


def baseline_label(baseline: str, metric: str) -> str:
    """A baseline's name beside its metric: ``eval_unigram_loss`` of ``eval_mlm_loss`` -> ``unigram baseline``."""
    words = [w for w in baseline.split("_") if w not in {*metric.split("_"), "eval", "baseline"}]
    return " ".join([*words, "baseline"]) if words else "trivial baseline"


def baseline_values(rows, metric: str, baselines: dict) -> dict[str, float]:
    """``label -> value`` of each baseline of ``metric``: its median over the ``rows`` (the runs'
    last values) that report both. The fixed protocol scores the same validation blocks in every
    run, so the runs of one objective agree on it."""
    out = {}
    for name in (b for b, m in baselines.items() if m == metric):
        values = [row[name] for row in rows if pd.notna(row.get(metric)) and pd.notna(row.get(name))]
        if values:
            out[baseline_label(name, metric)] = float(np.median(values))
    return out


def verdict(table, histories: dict, spec: dict, metric: str, mode: str, best, baselines: dict) -> str:
    """One paragraph on what the search found: the best trial against each baseline of the
    ranking metric, the knob that mattered most, the compute early stopping saved."""
    if best is None:
        return f"No trial finished with a value of {metric}: the search found nothing to rank."
    parts = [against_baselines(table, metric, mode, best, baselines), knob_verdict(table, histories, metric, mode),
             compute_verdict(table, spec)]
    return " ".join(p for p in parts if p)


def against_baselines(table, metric: str, mode: str, best: str, baselines: dict) -> str:
    row = table[table["trial_id"] == best].iloc[0]
    value, said = row[metric], []
    for name in (b for b, m in baselines.items() if m == metric and pd.notna(row.get(b))):
        base, label = row[name], baseline_label(name, metric)
        gain = base - value if mode == "min" else value - base
        if gain > 0:
            share = f" ({gain / abs(base):.1%})" if base else ""
            said.append(f"beats the {label} ({fmt(base)}) by {fmt(gain)}{share}")
        else:
            said.append(f"does not beat the {label} ({fmt(base)}): the model has not learned more than it knows")
    reaches = f"The best trial, {best}, reaches {metric} = {fmt(value)}"
    if not said:
        return f"{reaches} (no baseline of {metric} was logged to compare it with)."
    return f"{reaches}: it {' and '.join(said)}."


def at_common_step(table, histories: dict, metric: str) -> tuple[pd.Series, int]:
    """Each trial's ``metric`` at the last step every trial that logged it reached (trials stopped
    early are compared where they stopped, not against trials that ran longer), and that step."""
    good = set(ok(table, metric)["trial_id"])
    series = {t: df[["step", metric]].dropna() for t, df in histories.items()
              if t in good and metric in df and df[metric].notna().any()}
    if not series:
        return pd.Series(dtype=float), 0
    step = int(min(s["step"].max() for s in series.values()))
    return pd.Series({t: s[s["step"] <= step][metric].iloc[-1] for t, s in series.items()
                      if (s["step"] <= step).any()}), step


def knob_effects(table, values: pd.Series) -> dict[str, tuple[float, str]]:
    """Each searched param -> (effect in [0, 1], its sign or best value) on the trials' ``values``.
    A number is scored by Spearman's rho (the effect is rho squared, the sign rho's); a category
    by the share of the ranks' variance its groups explain (eta squared)."""
    rank = values.rank()
    out = {}
    for name in (c for c in table.columns if "." in c):
        x = table.set_index("trial_id")[name].reindex(values.index)
        if x.nunique(dropna=True) < 2 or x.isna().any():
            continue
        numeric = pd.to_numeric(x, errors="coerce")
        if numeric.notna().all() and x.dtype != bool:
            rho = numeric.rank().corr(rank)
            if pd.notna(rho):
                out[name] = (rho * rho, f"{rho:+.2f}")
            continue
        groups = rank.groupby(x.astype(str))
        total = ((rank - rank.mean()) ** 2).sum()
        between = (groups.size() * (groups.mean() - rank.mean()) ** 2).sum()
        out[name] = (between / total if total else 0.0, str(groups.mean().idxmin()))
    return out


def knob_verdict(table, histories: dict, metric: str, mode: str) -> str:
    values, step = at_common_step(table, histories, metric)
    if len(values) < 4:  # with 3 trials, rho is one of 0, +-0.5, +-1
        return ""
    if mode == "max":
        values = -values  # ranks below: low is good
    effects = knob_effects(table, values)
    if not effects:
        return ""
    name, (effect, how) = max(effects.items(), key=lambda kv: kv[1][0])
    where = f"over {len(values)} trials at step {step:,}"
    if effect < 0.09:  # |rho| < 0.3
        return f"No searched knob had a clear effect on {metric} ({where}; the largest was {name})."
    if how.startswith(("+", "-")):  # a number: rho of the knob against the (low-is-good) ranks
        direction = "higher" if how.startswith("-") else "lower"
        rho = -float(how) if mode == "max" else float(how)
        return (f"{name} mattered most: {direction} values gave better {metric} "
                f"(Spearman rho {rho:+.2f} {where}).")
    return f"{name} mattered most: {how} did best (eta squared {effect:.2f} {where})."


def compute_verdict(table, spec: dict) -> str:
    """How much of a full grid's training steps (every trial to the end) the search ran."""
    good = table[table["status"] != "ERROR"]
    steps = pd.to_numeric(good.get("step"), errors="coerce").fillna(0)
    finished = steps[good["status"] == "FINISHED"]
    if not len(good) or not len(finished):
        return ""
    full, ran = len(good) * finished.max(), steps.sum()
    stopped = int((good["status"] == "STOPPED").sum())
    scheduler = str((spec.get("scheduler") or {}).get("name") or "the scheduler").upper()
    if not stopped:
        return f"Every trial ran all {int(finished.max()):,} steps (no early stopping)."
    return (f"{scheduler} stopped {stopped} of {len(good)} trials early: the search ran {int(ran):,} of the "
            f"{int(full):,} training steps a full grid would, {1 - ran / full:.0%} less compute.")
