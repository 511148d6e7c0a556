"""A search-space file: a base config, a space over dotted config fields, the metric to rank by,
a scheduler, a search algorithm and the resources of one trial.

Everything is checked here, before Ray starts: an unknown field, bounds that are empty or that a
config would refuse, or a metric the searched objectives do not report is one error naming it.

    base: {objective: mlm, model: {preset: base}, train: {max_steps: 20000}}
    space:
      objective.mask_ratio: {uniform: [0.1, 0.6]}
      train.lr: {loguniform: [1.0e-4, 1.0e-3]}
    metric: eval_mlm_loss          # a fixed-protocol metric: comparable across mask ratios
    mode: min
    scheduler: {name: asha, grace_period: 2000}
    num_samples: 16
    resources: {workers: 2, cpus_per_worker: 4, gpus_per_worker: 1}
"""
from __future__ import annotations

import copy
import difflib
import itertools
import math
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sslab import config as config_mod
from sslab.config import Config, require
from sslab.errors import ConfigError
from sslab.protocol import is_fixed_protocol

# Domain kind -> number of arguments (None: a non-empty list of values).
DOMAINS = {"uniform": 2, "loguniform": 2, "quniform": 3, "randint": 2, "choice": None, "grid": None}
CONTINUOUS = ("uniform", "loguniform", "quniform")


@dataclass(frozen=True)
class Domain:
    """One searched field: ``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``, ``{quniform: [lo, hi, q]}``,
    ``{randint: [lo, hi]}`` (hi excluded), ``{choice: [a, b, …]}`` or ``{grid: [a, b, …]}`` (every value)."""

    field: str
    kind: str
    args: tuple

    @property
    def corners(self) -> list:
        """The values a config must accept for every sample of this domain to be valid."""
        if self.kind in ("choice", "grid"):
            return list(self.args)
        if self.kind == "randint":
            return [self.args[0], self.args[1] - 1]
        return [self.args[0], self.args[1]]

    def clip(self, value):
        """``value`` brought back inside the bounds (PBT's perturbations may step outside)."""
        if self.kind in CONTINUOUS:
            return min(max(value, self.args[0]), self.args[1])
        if self.kind == "randint":
            return int(min(max(round(value), self.args[0]), self.args[1] - 1))
        return value

    def to_tune(self):
        from ray import tune

        lo, hi, *rest = self.args if self.kind not in ("choice", "grid") else (None, None)
        return {"uniform": lambda: tune.uniform(lo, hi), "loguniform": lambda: tune.loguniform(lo, hi),
                "quniform": lambda: tune.quniform(lo, hi, rest[0]), "randint": lambda: tune.randint(lo, hi),
                "choice": lambda: tune.choice(list(self.args)),
                "grid": lambda: tune.grid_search(list(self.args))}[self.kind]()

    def mutation(self):
        """What PBT's explore draws from: the values of a choice or grid, else the Tune domain."""
        return list(self.args) if self.kind in ("choice", "grid") else self.to_tune()

    def describe(self) -> str:
        return f"{self.kind} {list(self.args)}"


def parse_domain(name: str, spec: Any) -> Domain:
    where = f"space.{name}"
    if not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in DOMAINS):
        raise ConfigError(f"{where}={spec!r} is invalid: expected one of "
                          + ", ".join(f"{{{k}: [...]}}" for k in DOMAINS))
    kind, args = next(iter(spec.items()))
    n = DOMAINS[kind]
    require(isinstance(args, list) and (len(args) == n if n else len(args) >= 1), where, spec,
            f"{kind} with {n} numbers" if n else f"{kind} with a non-empty list of values")
    if n:
        require(all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args), where, spec,
                f"{kind} with numbers")
        lo, hi = args[0], args[1]
        require(lo < hi, where, spec, f"{kind} with low < high")
        if kind == "loguniform":
            require(lo > 0, where, spec, "loguniform with positive bounds")
        if kind == "quniform":
            require(args[2] > 0, where, spec, "quniform with a positive step")
            require(all(math.isclose(b / args[2], round(b / args[2]), abs_tol=1e-9) for b in (lo, hi)), where, spec,
                    "quniform bounds that are multiples of its step")
        if kind == "randint":
            require(all(isinstance(a, int) for a in args), where, spec, "randint with integer bounds")
    return Domain(name, kind, tuple(args))


@dataclass(kw_only=True)
class SchedulerSpec:
    """How trials are stopped early or evolved; times are optimizer steps."""

    name: Literal["fifo", "asha", "pbt"] = "fifo"
    """``fifo``: every trial runs to the end; ``asha``: stop weak trials at rungs; ``pbt``: population-based training."""
    grace_period: int = 100
    """ASHA: steps every trial runs before it may be stopped. Rungs fall at grace_period x reduction_factor^k;
    max_steps / reduction_factor^k puts the last one at the end of training."""
    reduction_factor: float = 3.0
    """ASHA: at each rung only the best 1/reduction_factor go on."""
    perturbation_interval: int = 100
    """PBT: steps between exploit/explore decisions (checkpoints are aligned to it)."""
    quantile_fraction: float = 0.25
    """PBT: the bottom fraction copies the weights and optimizer of the top fraction."""
    resample_probability: float = 0.25
    """PBT: chance that explore resamples a field instead of scaling it by 0.8 or 1.2."""
    mutations: list[str] | None = None
    """PBT: the searched fields explore perturbs (default: every one that is not a grid)."""
    synch: bool = True
    """PBT: decide at each interval only once every trial has reached it (trials pause and restart from
    their checkpoints); works however few trials fit at once. ``false``: decide as each trial reports."""

    def __post_init__(self):
        require(self.grace_period >= 1, "scheduler.grace_period", self.grace_period, "an integer >= 1")
        require(self.reduction_factor > 1, "scheduler.reduction_factor", self.reduction_factor, "a number > 1")
        require(self.perturbation_interval >= 1, "scheduler.perturbation_interval", self.perturbation_interval,
                "an integer >= 1")
        require(0 < self.quantile_fraction <= 0.5, "scheduler.quantile_fraction", self.quantile_fraction,
                "a number in (0, 0.5]")
        require(0 <= self.resample_probability <= 1, "scheduler.resample_probability", self.resample_probability,
                "a number in [0, 1]")


@dataclass(kw_only=True)
class SearchAlgSpec:
    """How points of the space are chosen."""

    name: Literal["random", "grid", "optuna"] = "random"
    """``random`` (grid fields are crossed, the rest sampled), ``grid`` (every field must be a grid),
    or ``optuna`` (TPE; needs ``pip install 'sslab[optuna]'``)."""
    seed: int | None = 0
    """Seed of the sampler: the same seed proposes the same trials."""


@dataclass(kw_only=True)
class ResourcesSpec:
    """What one trial's Ray Train run reserves."""

    workers: int = 1
    """Data-parallel workers per trial."""
    cpus_per_worker: float = 1.0
    """CPUs per worker (its torch threads on CPU)."""
    gpus_per_worker: float | None = None
    """GPUs per worker; ``None``: one when the cluster has GPUs, else none. Fractions pack trials on a GPU."""

    def __post_init__(self):
        require(self.workers >= 1, "resources.workers", self.workers, "an integer >= 1")
        require(self.cpus_per_worker > 0, "resources.cpus_per_worker", self.cpus_per_worker, "a positive number")
        if self.gpus_per_worker is not None:
            require(self.gpus_per_worker >= 0, "resources.gpus_per_worker", self.gpus_per_worker, "a number >= 0")


DOWNSTREAM_METRICS = ("downstream_probe_acc", "downstream_probe_macro_f1")
DOWNSTREAM_FINETUNED = ("downstream_finetune_acc", "downstream_finetune_macro_f1")


@dataclass(kw_only=True)
class DownstreamSpec:
    """Score every finished trial's model on a labelled file (``sslab eval``), so that a search
    can rank by what the model does downstream: ``metric: downstream_probe_macro_f1``."""

    data: str
    """Labelled ``.jsonl``, ``.csv`` or ``.parquet``; read on the node that runs the trial."""
    text_field: str = "text"
    label_field: str = "label"
    finetune: bool = False
    """Also fine-tune the whole model (``downstream_finetune_*``); the linear probe always runs."""
    epochs: int = 3
    """Fine-tuning epochs."""

    def __post_init__(self):
        from sslab import downstream

        self.data = str(Path(self.data).expanduser().resolve())
        downstream.load_labelled(self.data, self.text_field, self.label_field)  # a bad file fails here, before Ray
        require(self.epochs >= 1, "downstream.epochs", self.epochs, "an integer >= 1")

    def metrics(self) -> tuple[str, ...]:
        return DOWNSTREAM_METRICS + (DOWNSTREAM_FINETUNED if self.finetune else ())

    def score(self, model_dir: Path, max_length: int) -> dict[str, float]:
        """The ``downstream_*`` metrics of the model in ``model_dir``."""
        from sslab import downstream

        result = downstream.classify(model_dir, self.data, text_field=self.text_field, label_field=self.label_field,
                                     finetune=self.finetune, epochs=self.epochs, max_length=max_length)
        return {f"downstream_{k}": v for k, v in result.items() if isinstance(v, float)}


EVAL_SETS = {
    "probe_acc": (lambda c: c.eval.probe_docs > 0 and bool(c.corpus.source == "synthetic" or c.corpus.label_field),
                  "eval.probe_docs > 0 and a labelled corpus (corpus.label_field)"),
    "eval_sts_spearman": (lambda c: c.eval.sts_pairs > 0 and bool(c.corpus.source == "synthetic" or c.eval.sts_data),
                          "eval.sts_pairs > 0 and graded sentence pairs (eval.sts_data, or the synthetic corpus)"),
}
"""Metrics scored on an evaluation set of their own: whether a trial of a config reports it, and
what it needs to."""


@dataclass(kw_only=True)
class SearchSpec:
    """A whole search: what to train, what to vary, how to rank and schedule, on what."""

    name: str = "search"
    """Name of the search (the file's stem)."""
    description: str = ""
    base: dict = field(default_factory=dict)
    """The base config of every trial, as in ``sslab pretrain --config``."""
    space: dict = field(default_factory=dict)
    """Dotted config field -> domain."""
    metric: str = ""
    """Fixed-protocol metric trials are ranked by (``eval_*``, such as ``eval_sts_spearman``, or ``probe_acc``)."""
    mode: Literal["min", "max"] = "min"
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    search: SearchAlgSpec = field(default_factory=SearchAlgSpec)
    num_samples: int = 8
    """Trials to run (with grid fields: samples per grid point)."""
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    max_concurrent_trials: int | None = None
    """At most this many trials at once; ``None``: as many as the cluster's CPUs (or GPUs) hold."""
    downstream: DownstreamSpec | None = None
    """Score each finished trial downstream (see :class:`DownstreamSpec`)."""

    domains: list[Domain] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self):
        require(isinstance(self.space, dict) and bool(self.space), "space", self.space,
                "a mapping of at least one config field to a domain")
        require(is_int(self.num_samples) and self.num_samples >= 1, "num_samples", self.num_samples, "an integer >= 1")
        if self.max_concurrent_trials is not None:
            require(is_int(self.max_concurrent_trials) and self.max_concurrent_trials >= 1, "max_concurrent_trials",
                  self.max_concurrent_trials, "an integer >= 1")
        self.domains = [parse_domain(k, v) for k, v in self.space.items()]
        self.base_config()  # the base itself must be a valid run
        for d in self.domains:
            self.check_domain(d)
        self.check_combinations()
        self.check_metric()
        self.check_algorithm()

    # ------------------------------------------------------------ configs

    def base_config(self, params: dict | None = None) -> Config:
        """The config of a trial with ``params`` (dotted field -> value) set over the base."""
        tree = copy.deepcopy(self.base)
        for key, value in (params or {}).items():
            config_mod.set_dotted(tree, key, value)
        return config_mod.build(config_mod.merge(tree, {"scaling": self.scaling()}))

    def scaling(self) -> dict:
        """The ``scaling`` section every trial gets from ``resources``."""
        r = self.resources
        out = {"num_workers": r.workers, "cpus_per_worker": r.cpus_per_worker}
        if r.gpus_per_worker is not None:
            out.update(use_gpu=r.gpus_per_worker > 0, gpus_per_worker=r.gpus_per_worker or 1.0)
        return out

    def check_domain(self, d: Domain) -> None:
        fields = known_fields(self.base, d.field)
        if d.field not in fields:
            near = difflib.get_close_matches(d.field, fields, n=1) or \
                [f for f in fields if f.split(".")[-1] == d.field.split(".")[-1]]
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise ConfigError(f"space.{d.field}: unknown config field{hint}")
        if d.kind in CONTINUOUS and d.field in int_fields(self.base):
            raise ConfigError(f"space.{d.field}: {d.describe()} samples fractions but {d.field} is an integer; "
                              "use randint or choice")
        for value in d.corners:
            try:
                self.base_config({d.field: value})
            except ConfigError as e:
                raise ConfigError(f"space.{d.field}: {d.describe()} reaches a value the config refuses: {e}") from None

    def check_combinations(self, limit: int = 1024) -> None:
        """Fields that constrain each other (``train.seq_len`` and ``model.max_positions``, an
        objective and its knobs): every combination of their corners must make a valid trial."""
        corners = [d.corners for d in self.domains]
        if len(self.domains) < 2 or math.prod(len(c) for c in corners) > limit:
            return
        for values in itertools.product(*corners):
            params = dict(zip((d.field for d in self.domains), values))
            try:
                self.base_config(params)
            except ConfigError as e:
                shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
                raise ConfigError(f"space: the trial {shown} has a config the run would refuse: {e}") from None

    def objectives(self) -> list[str]:
        """Every objective a trial of this search may train."""
        named = next((d for d in self.domains if d.field == "objective.name"), None)
        return [str(v) for v in named.corners] if named else [self.base_config().objective.name]

    def check_metric(self) -> None:
        from sslab.objectives import get

        require(bool(self.metric), "metric", self.metric, "the name of a fixed-protocol metric")
        if self.metric.startswith("downstream_"):
            self.check_downstream_metric()
            return
        why = "" if is_fixed_protocol(self.metric) else \
            " (training losses are not comparable across trials: rank by a fixed-protocol metric)"
        for name in self.objectives():
            reported = get(name).metrics
            if self.metric not in reported:
                raise ConfigError(f"metric={self.metric!r} is not reported by objective {name!r}{why}; "
                                  f"it reports {', '.join(reported)}")
            baseline_of = get(name).baselines.get(self.metric)
            require(baseline_of is None, "metric", self.metric,
                    f"a metric a trial can change: {self.metric} is the trivial baseline of {baseline_of} "
                    f"(objective {name!r}), the same for every trial; rank by {baseline_of}")
        if self.metric in EVAL_SETS:
            reported, needs = EVAL_SETS[self.metric]
            require(reported(self.base_config()), "metric", self.metric,
                    f"a metric trials report: {self.metric} needs {needs}")

    def check_downstream_metric(self) -> None:
        if self.downstream is None:
            raise ConfigError(f"metric={self.metric!r} needs a downstream section (data: a labelled file) "
                              "that scores every finished trial")
        require(self.metric in self.downstream.metrics(), "metric", self.metric,
                f"one of {', '.join(self.downstream.metrics())} (downstream.finetune: true adds the finetune_ ones)")
        require(self.scheduler.name == "fifo", "scheduler.name", self.scheduler.name,
                f"fifo: metric={self.metric!r} is known only when a trial has finished, so no scheduler can stop "
                "trials early by it")

    def check_algorithm(self) -> None:
        grids = [d.field for d in self.domains if d.kind == "grid"]
        if self.search.name == "grid":
            others = [d.field for d in self.domains if d.kind != "grid"]
            require(not others, "search.name", "grid", f"every space field a grid, but {others[0]} is not"
                  if others else "")
        if self.search.name == "optuna" and grids:
            raise ConfigError(f"search.name='optuna' cannot cross grid fields ({grids[0]}); use choice instead")
        if self.scheduler.name == "pbt":
            fields = [d.field for d in self.domains]
            for name in self.scheduler.mutations or []:
                require(name in fields, "scheduler.mutations", name, f"a searched field ({', '.join(fields)})")
            if not self.mutable():
                raise ConfigError("scheduler.name='pbt' needs a field to perturb: add a field that is not a grid "
                                  "to space, or list a grid field in scheduler.mutations")

    def mutable(self) -> list[Domain]:
        """The domains PBT's explore step perturbs."""
        if self.scheduler.mutations:
            return [d for d in self.domains if d.field in self.scheduler.mutations]
        return [d for d in self.domains if d.kind != "grid"]

    @property
    def max_steps(self) -> int:
        return self.base_config().train.max_steps


def known_fields(base: dict, key: str) -> list[str]:
    """Every dotted field a config may set, the objective's own (of the base's objective) included."""
    from sslab.objectives import get

    cfg = config_mod.build(copy.deepcopy(base))
    out = []

    def walk(obj, prefix):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            name = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(value):
                walk(value, name + ".")
            else:
                out.append(name)

    walk(cfg, "")
    if key.startswith("objective."):  # another objective's knob, when objective.name is searched too
        from sslab.objectives import available

        for name in available():
            out += [f"objective.{f.name}" for f in dataclasses.fields(get(name).Config)]
    return sorted(set(out))


SPEC_KEYS = {f.name for f in dataclasses.fields(SearchSpec) if f.init}


def build_spec(data: dict, name: str = "search") -> SearchSpec:
    """A validated :class:`SearchSpec` from a mapping (unknown keys are errors)."""
    data = dict(data)
    data.setdefault("name", name)
    unknown = sorted(set(data) - SPEC_KEYS)
    if unknown:
        raise ConfigError(f"unknown search key '{unknown[0]}' (known: {', '.join(sorted(SPEC_KEYS))})")
    sections = {"scheduler": SchedulerSpec, "search": SearchAlgSpec, "resources": ResourcesSpec,
                "downstream": DownstreamSpec}
    if data.get("downstream") is None:  # its default: no downstream scoring
        data.pop("downstream", None)
    for key, cls in sections.items():
        if key in data:
            data[key] = config_mod._build_dataclass(cls, config_mod.expand(key, data[key]), key)
    for key in ("num_samples", "max_concurrent_trials"):
        if isinstance(data.get(key), config_mod.Override):
            data[key] = config_mod._parse_scalar(data[key])
    for key in ("metric", "mode", "name", "description"):
        if key in data:
            data[key] = str(data[key])
    require(data.get("mode", "min") in ("min", "max"), "mode", data.get("mode"), "min or max")
    require(isinstance(data.get("base", {}), dict), "base", data.get("base"), "a mapping (a run config)")
    return SearchSpec(**data)


def shipped_spaces() -> list[Path]:
    """The search-space files shipped in ``sslab.search_spaces``."""
    from sslab import search_spaces

    return sorted(Path(str(search_spaces.path("x"))).parent.glob("*.yaml"))


def resolve_path(spec: str | Path) -> Path:
    """A search-space file: a path, or the name of a shipped one (``mlm_masking``)."""
    path = Path(spec)
    if path.is_file():
        return path
    for shipped in shipped_spaces():
        if shipped.stem == str(spec).removesuffix(".yaml"):
            return shipped
    names = ", ".join(p.stem for p in shipped_spaces())
    raise ConfigError(f"search space {str(spec)!r} is neither a file nor a shipped space ({names})")


def load_spec(spec, overrides: list[str] | dict | None = None) -> SearchSpec:
    """Load a search from a :class:`SearchSpec`, a mapping or a YAML path/shipped name, then apply
    ``key=value`` overrides: search keys (``num_samples=4``, ``scheduler.grace_period=50``) set the
    search, any other key the base config of every trial (``model.preset=tiny``)."""
    if isinstance(spec, SearchSpec):
        data, name = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if f.init}, spec.name
        data = {k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v) for k, v in data.items()}
    elif isinstance(spec, dict):
        data, name = copy.deepcopy(spec), spec.get("name", "search")
    else:
        path = resolve_path(spec)
        data, name = config_mod.read_yaml(path), path.stem
    tree = config_mod.parse_overrides(list(overrides)) if isinstance(overrides, (list, tuple)) else (overrides or {})
    require(isinstance(data.get("base", {}), dict), "base", data.get("base"), "a mapping (a run config)")
    for key, value in tree.items():
        if key in SPEC_KEYS - {"base", "space"}:
            current = config_mod.expand(key, data.get(key) or {})
            data[key] = config_mod.merge(current, value) if isinstance(value, dict) else value
        else:
            data["base"] = config_mod.merge(data.get("base") or {}, {key: value})
    if "base" in data:
        data["base"] = typed(data["base"])
    return build_spec(data, name)


def typed(base: dict) -> dict:
    """``base`` with command-line text (``train.max_steps=200``) replaced by the field's typed value."""
    cfg = config_mod.build(copy.deepcopy(base))

    def walk(node, obj):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, getattr(obj, key))
            elif isinstance(value, config_mod.Override):
                node[key] = getattr(obj, key)
                if isinstance(node[key], tuple):
                    node[key] = list(node[key])

    tree = copy.deepcopy(base)
    for section in ("corpus", "objective"):  # `corpus: synthetic` shorthand, now with more keys
        if isinstance(tree.get(section), config_mod.Override):
            tree[section] = str(tree[section])
    walk(tree, cfg)
    if cfg.eval.sts_data:  # absolute, as the config holds it: a trial reads it in another directory
        tree.setdefault("eval", {})["sts_data"] = cfg.eval.sts_data
    return tree



def is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def int_fields(base: dict) -> set[str]:
    """The dotted fields of the base config (and every objective's) that hold integers."""
    import typing

    from sslab.objectives import available, get

    out = set()

    def walk(cls, prefix):
        for f in dataclasses.fields(cls):
            tp = typing.get_type_hints(cls)[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, f"{prefix}{f.name}.")
            elif tp is int or tp == (int | None):
                out.add(f"{prefix}{f.name}")

    walk(Config, "")
    for name in available():
        walk(get(name).Config, "objective.")
    return out
