"""Published ablations run again at a size that fits: ``sslab study NAME``.

A study (``search_spaces/studies/<name>.yaml``) names a paper, the table or figure it reproduces,
the values published for each setting of one knob and the directions the paper states ("tau 0.05
beats tau 1"). sslab trains every setting on the same seeds, each trial to its last step (a grid
under FIFO: nothing stopped early, nothing tuned, nothing picked), and sets each setting's
fixed-protocol metric at its last evaluation, never the best of its curve, beside the paper's
numbers. For every stated direction it says whether sslab agrees, and plainly where it does not
reproduce at this size: the opposite direction, a tie, or (with several seeds, which train
every setting alike) a gap that does not hold on every seed or exceed its spread across them. The comparison is printed, written as ``study.md`` and ``study.json``
in the search directory, and opens the search's report.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sslab import config as config_mod
from sslab.config import require
from sslab.errors import ConfigError

KEYS = {"description", "paper", "setting", "settings", "seeds", "metric", "mode", "stands_for", "base", "sizes",
        "resources"}
PAPER_KEYS = {"citation", "where", "quantity", "says", "checked", "columns", "claims"}
FIXED = {"space", "metric", "mode", "scheduler", "search", "num_samples", "downstream", "name", "description"}
"""Search keys a study sets itself: its grid, metric and FIFO scheduler are what it is."""


@dataclass(frozen=True)
class Setting:
    """One value of the study's knob: its label, its value, and the paper's number per column."""

    label: str
    value: Any
    paper: tuple = ()


@dataclass(kw_only=True)
class Study:
    """A published ablation: the paper's values and directions, and how sslab runs it."""

    name: str
    description: str
    paper: dict
    """``citation``, ``where`` (table or figure), ``quantity``, ``says``, ``checked``, ``columns``, ``claims``."""
    setting: str
    """The config field the ablation varies (``objective.tau``)."""
    settings: list[Setting]
    seeds: list[int]
    """Every setting trains once per seed; several seeds estimate the run-to-run noise."""
    metric: str
    mode: str
    stands_for: str
    """Why ``metric`` stands for the paper's quantity."""
    base: dict
    sizes: dict
    """Size name -> ``{dotted key: value}`` over ``base``; ``tiny`` is the CPU default."""
    resources: dict

    @property
    def claims(self) -> list[tuple[str, str]]:
        """The directions the paper states, each (better label, worse label)."""
        return [tuple(c) for c in self.paper["claims"]]

    def search(self, size: str = "tiny") -> dict:
        """The search-space mapping of ``size``: every setting x seed, FIFO, one sample each."""
        require(size in self.sizes, "--size", size, f"a size of study {self.name}: {', '.join(self.sizes)}")
        base, resources = copy.deepcopy(self.base), dict(self.resources)
        for key, value in self.sizes[size].items():
            if key.startswith("resources."):
                resources[key.removeprefix("resources.")] = value
            else:
                config_mod.set_dotted(base, key, value)
        space = {self.setting: {"grid": [s.value for s in self.settings]}}
        if len(self.seeds) > 1:
            space["train.seed"] = {"grid": list(self.seeds)}
        else:
            config_mod.set_dotted(base, "train.seed", self.seeds[0])
        return {"name": f"study-{self.name}", "description": self.description, "base": base, "space": space,
                "metric": self.metric, "mode": self.mode, "scheduler": {"name": "fifo"}, "search": {"name": "grid"},
                "num_samples": 1, "resources": resources}


def shipped_studies() -> list[Path]:
    """The study files shipped in ``sslab.search_spaces.studies``."""
    from sslab.search_spaces import studies

    return sorted(Path(str(studies.path("x"))).parent.glob("*.yaml"))


def load_study(name: str | Path) -> Study:
    """A validated :class:`Study` from a YAML path or the name of a shipped one."""
    path = Path(name)
    if not path.is_file():
        path = next((p for p in shipped_studies() if p.stem == str(name).removesuffix(".yaml")), None)
        if path is None:
            names = ", ".join(p.stem for p in shipped_studies())
            raise ConfigError(f"study {str(name)!r} is neither a file nor a shipped study ({names})")
    data = config_mod.read_yaml(path)
    unknown = sorted(set(data) - KEYS) or sorted(set(data.get("paper") or {}) - PAPER_KEYS)
    if unknown:
        raise ConfigError(f"{path.name}: unknown study key '{unknown[0]}' (known: {', '.join(sorted(KEYS))}; "
                          f"paper: {', '.join(sorted(PAPER_KEYS))})")
    missing = sorted((KEYS - {"resources"}) - set(data)) or sorted(PAPER_KEYS - set(data["paper"]))
    if missing:
        raise ConfigError(f"{path.name}: the study needs '{missing[0]}'")
    columns = list(data["paper"]["columns"] or [])
    settings = [Setting(str(s["label"]), s.get("value"), tuple(s.get("paper") or ())) for s in data["settings"]]
    labels = [s.label for s in settings]
    require(len(settings) >= 2 and len(set(labels)) == len(labels), "settings", labels, "two or more distinct labels")
    for s in settings:
        require(len(s.paper) in (0, len(columns)), f"settings[{s.label}].paper", list(s.paper),
                f"one value per paper column ({', '.join(columns) or 'none'})")
    for claim in data["paper"]["claims"]:
        require(isinstance(claim, list) and len(claim) == 2 and set(map(str, claim)) <= set(labels)
                and claim[0] != claim[1], "paper.claims", claim, f"[better, worse], two of {labels}")
    seeds = data["seeds"]
    require(isinstance(seeds, list) and seeds and all(type(s) is int and s >= 0 for s in seeds), "seeds", seeds,
            "a non-empty list of integers >= 0")
    require("tiny" in data["sizes"], "sizes", list(data["sizes"]), "a 'tiny' size (the CPU default)")
    require(data["mode"] in ("min", "max"), "mode", data["mode"], "min or max")
    paper = {**data["paper"], "columns": columns, "claims": [list(map(str, c)) for c in data["paper"]["claims"]],
             "values": {k: [s.paper[i] if s.paper else None for s in settings] for i, k in enumerate(columns)}}
    return Study(name=path.stem, description=str(data["description"]), paper=paper, setting=str(data["setting"]),
                 settings=settings, seeds=seeds, metric=str(data["metric"]), mode=data["mode"],
                 stands_for=str(data["stands_for"]), base=data["base"], sizes=data["sizes"],
                 resources=data.get("resources") or {})


def check_overrides(study: Study, overrides: list[str]) -> None:
    """Refuse what would make the study another experiment: its grid, metric, scheduler, seeds."""
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key.split(".")[0] in FIXED or key == study.setting or (key == "train.seed" and len(study.seeds) > 1):
            raise ConfigError(f"{key}: a study runs its own grid of {study.setting} on seeds {study.seeds}, every "
                              f"trial to the end, ranked by {study.metric}; set a trial's config (model.preset=...) "
                              "or resources.* instead, or write a search space for `sslab tune`")


@dataclass
class StudyResult:
    """A finished study: the comparison (as in ``study.json``) and the search it ran."""

    comparison: dict
    search: Any  # sslab.search.SearchResult

    def __str__(self) -> str:
        return text_of(self.comparison)


def study(name, *, size: str = "tiny", out: str | Path | None = None, resume: bool = False,
          overrides: list[str] | None = None) -> StudyResult:
    """Run the study ``name`` (a shipped name like ``"dynamic_masking"`` or a YAML path) at ``size``
    into ``out`` (default ``runs/study-<name>-<size>``) and compare it with the paper; ``overrides``
    (``["train.max_steps=600"]``) set every trial's config, or ``resources.*``."""
    from sslab.search import tune, write_report

    s = load_study(name)
    check_overrides(s, list(overrides or []))
    spec = s.search(size)
    result = tune(spec, out=out or f"runs/study-{s.name}-{size}", resume=resume, overrides=list(overrides or []))
    ran = config_mod.build(config_mod.read_yaml(result.search_dir / "search.yaml")["base"])  # overrides included
    seeds = s.seeds if len(s.seeds) > 1 else [ran.train.seed]
    comparison = compare(s, size, result.table, ran.train.max_steps, seeds)
    (result.search_dir / "study.json").write_text(json.dumps(comparison, indent=2, default=str))
    (result.search_dir / "study.md").write_text(markdown_of(comparison))
    result.report = write_report(result.search_dir)  # again, now opening with the comparison
    return StudyResult(comparison, result)


# ---------------------------------------------------------------- the comparison


def same(a, b) -> bool:
    """Whether a results-table cell holds the setting value ``b`` (None/NaN for null)."""
    missing = [x is None or (isinstance(x, float) and math.isnan(x)) for x in (a, b)]
    if any(missing):
        return all(missing)
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    except (TypeError, ValueError):
        return str(a) == str(b)


def compare(s: Study, size: str, table, max_steps: int, seeds: list[int] | None = None) -> dict:
    """The comparison of a finished study's results ``table`` (one row per trial: the setting,
    ``train.seed`` when several, ``status`` and the metric at the trial's last report) with the
    paper. A setting's sslab value is the mean over ``seeds`` (default: the study's)."""
    seeds = list(seeds or s.seeds)
    rows = []
    for setting in s.settings:
        mine = table[[same(v, setting.value) for v in table[s.setting]]]
        by_seed = []
        for seed in seeds:
            hit = mine[mine["train.seed"] == seed] if "train.seed" in mine else mine
            ok = hit[hit["status"] == "FINISHED"]
            value = float(ok[s.metric].iloc[0]) if len(ok) and s.metric in ok else math.nan
            by_seed.append(value if math.isfinite(value) else None)
        rows.append({"label": setting.label, "value": setting.value,
                     "paper": dict(zip(s.paper["columns"], setting.paper)),
                     "sslab": None if None in by_seed else sum(by_seed) / len(by_seed), "by_seed": by_seed})
    spreads = [max(r["by_seed"]) - min(r["by_seed"]) for r in rows if r["sslab"] is not None]
    noise = max(spreads) if len(seeds) > 1 and spreads else None
    claims = [claim(s, rows, better, worse) for better, worse in s.claims]
    out = {"study": s.name, "size": size, "steps": max_steps, "seeds": seeds, "metric": s.metric, "mode": s.mode,
           "stands_for": s.stands_for, "setting": s.setting, "paper": s.paper, "settings": rows, "claims": claims,
           "noise": noise}
    out["summary"] = summary_of(out)
    return out


def claim(s: Study, rows: list[dict], better: str, worse: str) -> dict:
    """One stated direction: the paper's gap (its first column), sslab's gap (positive: as the
    paper says; the mean of the gaps on each seed) and the verdict.

    A seed initialises, orders and masks both settings alike, so the gap is measured on each
    seed: with several, it reproduces only if it holds on every seed and exceeds its spread
    across them (its run-to-run noise)."""
    row = {r["label"]: r for r in rows}
    first = s.paper["columns"][0] if s.paper["columns"] else None
    published = [row[x]["paper"].get(first) for x in (better, worse)]
    paper_gap = None if None in published else round(published[0] - published[1], places(s.paper, first))
    pairs = list(zip(row[better]["by_seed"], row[worse]["by_seed"]))
    gaps = None if any(None in p for p in pairs) else [a - b if s.mode == "max" else b - a for a, b in pairs]
    gap = None if gaps is None else sum(gaps) / len(gaps)
    noise = max(gaps) - min(gaps) if gaps and len(gaps) > 1 else None
    if gap is None:
        verdict = "not measured: a trial failed"
    elif gap <= 0:
        verdict = ("tie" if gap == 0 else "opposite direction") + ": does not reproduce at this size"
    elif noise is not None and (min(gaps) <= 0 or gap <= noise):
        verdict = "same direction, within run-to-run noise: does not reproduce at this size"
    else:
        verdict = "agrees"
    return {"better": better, "worse": worse, "paper_gap": paper_gap, "sslab_gap": gap, "gap_by_seed": gaps,
            "noise": noise, "verdict": verdict}


def summary_of(c: dict) -> str:
    """The closing sentences: how many directions reproduce, which do not, and the noise."""
    agree = [x for x in c["claims"] if x["verdict"] == "agrees"]
    seeds = ", ".join(map(str, c["seeds"]))
    said = [f"{len(agree)} of {len(c['claims'])} directions the paper states reproduce at this size "
            f"(size {c['size']}, {c['steps']:,} steps, seed{'s' if len(c['seeds']) > 1 else ''} {seeds})."]
    failed = [f"{x['better']} > {x['worse']}" for x in c["claims"] if x["verdict"] != "agrees"]
    if failed:
        said.append(f"Does not reproduce at this size: {'; '.join(failed)}.")
    if c["noise"] is None:
        said.append("Run-to-run noise was not estimated (one seed per setting): a small gap may be noise.")
    else:
        said.append(f"Run-to-run noise: each gap is measured on every seed (a seed trains both settings alike) "
                    f"and must hold on each and exceed its spread across them; one setting's own value moves by "
                    f"up to {c['noise']:.4g} between seeds ({len(c['seeds'])} seeds: a rough estimate).")
    return " ".join(said)


# ---------------------------------------------------------------- rendering


def places(paper: dict, column: str | None) -> int:
    """Decimals the paper gives in ``column`` (83.00 beside 83.28 is shown as 83.00)."""
    values = [v for v in paper.get("values", {}).get(column, []) if v is not None]
    return max((len(repr(float(v)).split(".")[1].rstrip("0")) for v in values), default=1)


def fmt(x, signed: bool = False, decimals: int | None = None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if decimals is not None:
        return f"{x:+.{decimals}f}" if signed else f"{x:.{decimals}f}"
    return f"{x:+.4g}" if signed else f"{x:.4g}"


def tables(c: dict) -> tuple[list[str], list[list[str]], list[str], list[list[str]]]:
    """The two tables (headers, rows): one row per setting, one per stated direction."""
    columns, seeds = c["paper"]["columns"], c["seeds"]
    head = ["setting", *([f"paper {k}" for k in columns] or ["paper"]), f"sslab {c['metric']}"]
    head += [f"seed {s}" for s in seeds] if len(seeds) > 1 else []
    body = []
    for r in c["settings"]:
        paper = [fmt(r["paper"].get(k), decimals=places(c["paper"], k)) for k in columns] or ["figure only"]
        per_seed = [fmt(v) for v in r["by_seed"]] if len(seeds) > 1 else []
        body.append([r["label"], *paper, fmt(r["sslab"]), *per_seed])
    first = f"paper gap ({columns[0]})" if columns else "paper gap"
    several = len(seeds) > 1
    claim_head = ["direction the paper states", first, "sslab gap (+: as the paper)",
                  *(["by seed", "spread"] if several else []), "verdict"]
    decimals = places(c["paper"], columns[0]) if columns else None
    claim_rows = [[f"{x['better']} > {x['worse']}", fmt(x["paper_gap"], True, decimals), fmt(x["sslab_gap"], True),
                   *([" ".join(fmt(g, True) for g in x["gap_by_seed"] or []) or "—", fmt(x["noise"])] if several
                     else []), x["verdict"]] for x in c["claims"]]
    return head, body, claim_head, claim_rows


def intro(c: dict) -> list[str]:
    p, better = c["paper"], "lower" if c["mode"] == "min" else "higher"
    return [f"paper: {p['citation']}, {p['where']}: {p['quantity']}. It says: {p['says']}.",
            f"sslab: {c['metric']} ({better} is better) at the last evaluation of each trial (step {c['steps']:,}), "
            "not the best of its curve; every setting run to the end on the same seeds, nothing tuned or picked.",
            f"Why {c['metric']} stands for the paper's quantity: {c['stands_for']}"]


def aligned(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in [head, *rows])


def text_of(c: dict) -> str:
    """The comparison for a terminal."""
    head, body, claim_head, claim_rows = tables(c)
    return "\n\n".join([f"[sslab] study {c['study']} at size {c['size']}: the paper's numbers beside sslab's",
                        "\n".join(intro(c)), aligned(head, body), aligned(claim_head, claim_rows), c["summary"]])


def markdown_of(c: dict) -> str:
    """The comparison as Markdown (``study.md``)."""
    def md(head, rows):
        return "\n".join("| " + " | ".join(line) + " |" for line in [head, ["---"] * len(head), *rows])

    head, body, claim_head, claim_rows = tables(c)
    return "\n\n".join([f"# Study {c['study']}, size {c['size']}", "\n\n".join(intro(c)), md(head, body),
                        md(claim_head, claim_rows), c["summary"]]) + "\n"


def html_of(c: dict) -> str:
    """The comparison as HTML, for the top of the search's report."""
    import html

    def table(head, rows):
        cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in row) + "</tr>" for row in rows)
        return f'<div class="scroll"><table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table></div>'

    head, body, claim_head, claim_rows = tables(c)
    paras = "".join(f"<p>{html.escape(line)}</p>" for line in intro(c))
    return (paras + table(head, body) + "<p></p>" + table(claim_head, claim_rows)
            + f'<p class="verdict">{html.escape(c["summary"])}</p>')
