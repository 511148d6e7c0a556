"""Ray Tune searches: every trial is a pretraining run (a ``TorchTrainer`` inside a Tune trial).

A search directory holds::

    search.yaml        the resolved search (base config, space, metric, scheduler, resources)
    tokenizer/         trained once and shared, so every trial sees the same vocabulary
    trials/<id>/       each trial's run directory (config.yaml, metrics.jsonl, checkpoints, model/)
    tune/              Ray Tune's experiment state: ``--resume`` continues from it
    results.csv        one row per trial, ranked by the search's fixed-protocol metric
    best/              the best finished trial's model/ (with its tokenizer) and trial.json

Trials rank by fixed-protocol metrics (masked-token loss at 15 %, perplexity, probe accuracy),
never by their own training loss, which is not comparable across mask ratios or objectives.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import ray
import yaml

from sslab import capacity, cluster, corpus, owner, prepared, progress, runner, segment
from sslab import config as config_mod
from sslab.errors import RunError, find_sslab_error
from sslab.objectives import adopt, plugins
from sslab.progress import mark
from sslab.protocol import fixed_protocol_names, is_fixed_protocol
from sslab.search_spec import DownstreamSpec, SearchSpec, load_spec

log = logging.getLogger("sslab")
TRIAL_MEMORY = 2**20  # bytes of logical memory a Tune trial reserves: it only drives its run


@dataclass
class SearchResult:
    """A finished search: its directory, the ranked trial table and the best trial."""

    search_dir: Path
    table: object  # pandas.DataFrame, one row per trial, best first
    best: dict | None
    """The best finished trial: ``trial_id``, ``params``, ``metrics``, ``run_dir``, ``model_dir`` (in ``best/``)."""
    report: Path | None = None
    """``report/index.html``: learning curves, knob vs metric, the ranked trials, throughput."""

    @property
    def results_csv(self) -> Path:
        return self.search_dir / "results.csv"


def tune(spec, *, out: str | Path | None = None, resume: bool = False, overrides: list[str] | None = None,
         **fields) -> SearchResult:
    """Run the search ``spec`` (a shipped name like ``"mlm_masking"``, a YAML path, a mapping or a
    :class:`SearchSpec`) into ``out``; ``resume=True`` continues an interrupted one. While it runs
    ``out`` is its own: another search there raises :class:`~sslab.errors.DirectoryInUse`.

    ``overrides`` (``["model.preset=tiny"]``) and keyword ``fields`` (``num_samples=4``, or
    ``**{"train.max_steps": 200}``; ``__`` stands for ``.``) set search keys or the base config.
    """
    extra = [f"{k.replace('__', '.')}={v}" for k, v in fields.items()]
    spec = load_spec(spec, list(overrides or []) + extra)
    check_corpora(spec)
    segment.check(spec.base_config())
    prepared.check_writable(prepared.cache_root(spec.base_config().data))
    check_machine(spec)
    search_dir = directory_of(spec, out)
    # The search directory is this call's until it returns (each trial owns its run directory).
    with owner.hold(search_dir, f"--out {str(search_dir)!r}"):
        prepare_dir(spec, search_dir, resume)
        init_ray(spec)
        concurrent = concurrency(spec)
        base = config_mod.merge(prepared_once(spec, search_dir), {"scaling": spec.scaling()})
        setup = TrialSetup(base=base, params=[d.field for d in spec.domains], search_dir=str(search_dir),
                           metric=spec.metric, pbt=spec.scheduler.name == "pbt", plugins=plugins(),
                           downstream=spec.downstream)
        tuner = build_tuner(spec, setup, search_dir, concurrent, resume)
        grid = tuner.fit()
        table = results_table(grid, spec)
        table.to_csv(search_dir / "results.csv", index=False)
        best = export_best(table, search_dir)
        return SearchResult(search_dir, table, best, write_report(search_dir))


def write_report(search_dir: Path) -> Path | None:
    """The search's HTML report; a search that finished is not failed by its report."""
    from sslab.report import write_report as write

    try:
        return write(search_dir)
    except Exception as e:  # noqa: BLE001 - the results are on disk; say why the page is missing
        log.warning("could not write the report (%s: %s); rerun `sslab report %s`", type(e).__name__, e, search_dir)
        return None


# ---------------------------------------------------------------- before Ray


def directory_of(spec: SearchSpec, out) -> Path:
    """The search directory: ``out``, else ``runs/<space name>`` (absolute)."""
    return Path(out or f"runs/{spec.name}").expanduser().resolve()


def prepare_dir(spec: SearchSpec, search_dir: Path, resume: bool) -> None:
    """Write ``search.yaml`` into the (owned) search directory; refuse to mix two searches or to
    resume what is not there."""
    saved = search_dir / "search.yaml"
    text = yaml.safe_dump(spec_dict(spec), sort_keys=False)
    if resume:
        if not (search_dir / "tune").is_dir():
            raise RunError(f"--resume: {search_dir} holds no search to resume")
        if saved.is_file() and saved.read_text() != text:
            raise RunError(f"--resume: {search_dir} holds a different search; resume it unchanged "
                           f"(its search.yaml) or choose another --out")
    elif (search_dir / "tune").exists():
        raise RunError(f"{search_dir} already holds a search: pass --resume to continue it, or choose another --out")
    try:
        saved.write_text(text)
    except OSError as e:
        raise RunError(f"--out {str(search_dir)!r} is not a writable directory ({e.strerror})") from None


def check_corpora(spec: SearchSpec) -> None:
    """Every corpus a trial may read exists and is text, checked before Ray starts."""
    corpus.check(spec.base_config().corpus)
    for d in spec.domains:
        if d.field.startswith("corpus."):
            for value in d.corners:
                corpus.check(spec.base_config({d.field: value}).corpus)


def spec_dict(spec: SearchSpec) -> dict:
    out = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if f.init}
    return config_mod._plain({k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in out.items()})


def check_machine(spec: SearchSpec) -> None:
    """Without a cluster to join, a trial's workers must fit on this machine's CPUs (as a run's must)."""
    r = spec.resources
    cluster.check_local_cpus(spec.base_config().run.ray_address, r.workers, r.cpus_per_worker,
                             f"a trial of resources.workers={r.workers} x resources.cpus_per_worker={r.cpus_per_worker:g}")


def init_ray(spec: SearchSpec) -> None:
    """Join the base's ``run.ray_address`` (or ``RAY_ADDRESS``), or start a local Ray for one trial at least."""
    r = spec.resources
    cluster.join_or_start_ray(spec.base_config().run.ray_address, r.workers, r.cpus_per_worker)


def concurrency(spec: SearchSpec) -> int:
    """How many trials run at once: what the cluster holds, capped by ``max_concurrent_trials``.

    The Tune trial itself reserves nothing (it only drives its Train run), so Tune cannot see
    this limit; without it every trial would start and most would wait for workers."""
    res, r = ray.cluster_resources(), spec.resources
    per_trial = capacity.run_cpus(r.workers, r.cpus_per_worker)
    fits = int(res.get("CPU", 0) // per_trial)
    gpus = r.gpus_per_worker if r.gpus_per_worker is not None else (1.0 if res.get("GPU", 0) > 0 else 0.0)
    bundle = {"CPU": r.cpus_per_worker, **({"GPU": gpus} if gpus else {})}
    kinds = capacity.node_kinds()
    if kinds is None:  # an autoscaler adds nodes as trials ask: run one at a time at least
        log.info("the Ray cluster autoscales: trials wait for nodes with room for %d workers of %s",
                 r.workers, capacity.describe(bundle))
        return max(1, min(fits, spec.max_concurrent_trials or fits))
    reason = capacity.shortfall(bundle, r.workers, kinds)
    if reason:
        raise RunError(f"a trial of resources.workers={r.workers} x resources.cpus_per_worker={r.cpus_per_worker:g}"
                       + (f" x resources.gpus_per_worker={gpus:g}" if gpus else "") + f" cannot fit on the Ray cluster: {reason}")
    if gpus > 0:
        fits = min(fits, int(res.get("GPU", 0) // (r.workers * gpus)))
    if fits < 1:
        raise RunError(f"a trial needs {r.workers} workers x {r.cpus_per_worker:g} CPUs "
                       f"(+{capacity.SPARE_CPUS:g} for Ray Data)"
                       + (f" and {r.workers * gpus:g} GPUs" if gpus else "")
                       + f" but the Ray cluster has {res.get('CPU', 0):g} CPUs and {res.get('GPU', 0):g} GPUs; "
                         "lower resources.workers or resources.cpus_per_worker")
    return min(fits, spec.max_concurrent_trials or fits)


ROW_FIELDS = ("tokenizer.", "corpus.", "train.seq_len", "objective.name", "model.max_positions")
"""Fields whose value changes a trial's prepared rows (or the tokenizer they are cut with)."""


MAX_PREPARED_VALUES = 16
"""At most this many distinct row-changing values are prepared before the first trial; beyond
that (or for a continuous domain) each trial prepares its own value's rows."""


def prepared_once(spec: SearchSpec, search_dir: Path) -> dict:
    """Prepare the corpus's rows into the data cache before the first trial, once per distinct
    value of the fields that change them, where every trial finds them; returns the base config.

    Every trial would train the same tokenizer from the same sample (training is deterministic)
    and cut the same rows, so both are done once rather than once per trial. Without a searched
    row field the base gets ``tokenizer.path``, the one tokenizer of the whole search. Searching
    one (``train.seq_len``, the tokenizer, the corpus) over ``choice`` or ``grid`` values prepares
    each combination of them (up to :data:`MAX_PREPARED_VALUES`), the tokenizers kept in the data
    cache; a continuous domain leaves each trial to prepare its own value (two that do so at
    once do not collide: :mod:`sslab.prepared`)."""
    row_domains = [d for d in spec.domains if d.field.startswith(ROW_FIELDS)]
    values = row_values(row_domains)
    if values is None:
        fields = ", ".join(f"{d.field} ({d.describe()})" for d in row_domains)
        log.info("each trial prepares the rows of its own %s: too many values to prepare before the first", fields)
        return spec.base
    listings = {}  # the corpus listed once per corpus searched, not once per value
    for params in values:
        cfg = spec.base_config(params)
        if row_domains:
            progress.say(f"search: the rows of {', '.join(f'{k}={v}' for k, v in params.items())}", cfg.run.quiet)
        source = repr(cfg.corpus)
        if source not in listings:
            listings[source] = corpus.check(cfg.corpus)
        with progress.quiet_libraries(True):
            data = runner.prepare_listed(cfg, listings[source])
    if row_domains or spec.base_config().tokenizer.path:
        return spec.base
    data.tokenizer.save_pretrained(str(search_dir / "tokenizer"))  # with the objective's own tokens
    return config_mod.merge(spec.base, {"tokenizer": {"path": str(search_dir / "tokenizer")}})


def row_values(domains: list) -> list[dict] | None:
    """Every combination of the searched row fields' values (one empty one when none is
    searched), or None when a domain is continuous or the combinations are too many."""
    if any(d.kind not in ("choice", "grid") for d in domains):
        return None
    combos = list(itertools.product(*(d.args for d in domains)))
    if len(combos) > MAX_PREPARED_VALUES:
        return None
    return [dict(zip([d.field for d in domains], combo)) for combo in combos]


# ---------------------------------------------------------------- one trial


@dataclass
class TrialSetup:
    """What every trial needs from the driver (picklable)."""

    base: dict
    params: list[str]
    search_dir: str
    metric: str
    pbt: bool
    plugins: tuple = ()
    """Objectives the driver's script registered (see ``sslab.objectives.plugins``)."""
    downstream: DownstreamSpec | None = None

    def config(self, params: dict, run_dir: Path) -> config_mod.Config:
        adopt(self.plugins)
        tree = config_mod.merge(self.base, {"run": {"out": str(run_dir), "quiet": True}})
        for key in self.params:
            config_mod.set_dotted(tree, key, params[key])
        if self.pbt:  # PBT exploits at reports: each must carry a checkpoint
            train = tree.setdefault("train", {})
            train["checkpoint_every"] = config_mod.build(tree).train.eval_every
        return config_mod.build(tree)


def run_trial(params: dict, setup: TrialSetup) -> None:
    """Tune's trainable: one pretraining run whose fixed-protocol reports go to Tune as they come."""
    from ray import tune as ray_tune
    from ray.util.queue import Empty, Queue
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from sslab.runner import RunHooks

    mark("trial.start")
    run_dir = Path(setup.search_dir) / "trials" / ray_tune.get_context().get_trial_id()
    cfg = setup.config(params, run_dir)
    mark("trial.config")
    cfg.scaling.in_process = cluster.trains_in_process(cfg, run_dir, holds_cpus=True)  # its task holds them
    start = ray_tune.get_checkpoint()  # PBT: the state it chose for this trial
    restart = 1 + len(list(run_dir.glob("restart_*"))) if start is not None else 0
    queue = Queue(actor_options={"num_cpus": 0})
    forward = ForwardReports(queue)
    hooks = RunHooks(callbacks=[forward], on_report=[forward.put], start_from=start.path if start else None,
                     restart=restart)
    # The run leaves the trial's placement group, which Tune would capture its Ray Data tasks
    # into: it schedules like a standalone run, and dies with the trial when Tune stops it. A run
    # trained in process (scaling.in_process) trains in this task, which then holds its worker's CPUs.
    run = drive_run.options(scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None),
                            num_cpus=cfg.scaling.cpus_per_worker if cfg.scaling.in_process else 0)
    done = run.remote(cfg, hooks, setup.plugins)
    while True:
        finished = bool(ray.wait([done], timeout=0)[0])
        try:
            metrics, ckpt = queue.get(timeout=1.0)
        except Empty:
            if finished:
                break
            continue
        if metrics.get("step", 0) >= cfg.train.max_steps and any(is_fixed_protocol(k) for k in metrics):
            ray.wait([done])  # the last result ends the trial: let the run export its model first
            if setup.downstream:
                metrics = {**metrics, **downstream_scores(done, setup.downstream, run_dir, cfg.train.seq_len)}
        if setup.metric in metrics:  # a report without evaluation (a checkpoint only) is not a result
            checkpoint = ray_tune.Checkpoint.from_directory(ckpt) if setup.pbt and ckpt else None
            try:
                ray_tune.report(tune_result(metrics, setup.metric), checkpoint=checkpoint)
            except SystemExit:  # Tune stopped this trial (ASHA's rung, PBT's exploit): end its run now, not
                ray.cancel(done, force=True)  # when Ray reaps the trial's actor (its workers train on until then)
                raise
    try:
        ray.get(done)
    except Exception as e:
        raise (find_sslab_error(e) or e) from None


def downstream_scores(done, downstream: DownstreamSpec, run_dir: Path, seq_len: int) -> dict:
    """The finished trial's ``downstream_*`` metrics (its model is exported once the run returns)."""
    try:
        ray.get(done)
    except Exception as e:
        raise (find_sslab_error(e) or e) from None
    return downstream.score(run_dir / "model", seq_len)


def tune_result(metrics: dict, metric: str) -> dict:
    """The numbers of a report, ranking metric first (Tune's progress table shows the first few)."""
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    first = [metric, *(k for k in fixed_protocol_names(numbers) if k != metric), "step", "tokens"]
    return {**{k: numbers[k] for k in first if k in numbers}, **numbers}


@ray.remote(num_cpus=0, max_retries=0)
def drive_run(cfg, hooks, outside_objectives) -> dict:
    from sslab.runner import pretrain

    adopt(outside_objectives)
    return pretrain(cfg, hooks=hooks).summary


def _forward_base():
    from ray.train.v2.api.callback import UserCallback

    return UserCallback


class ForwardReports(_forward_base()):
    """A Ray Train callback (run in Train's controller) that hands every report to the trial; a
    run trained in process calls :meth:`put` itself (``RunHooks.on_report``)."""

    def __init__(self, queue):
        self.queue = queue

    def after_report(self, run_context, metrics, checkpoint):
        self.put(dict(metrics[0]), checkpoint.path if checkpoint else None)

    def put(self, metrics: dict, checkpoint: str | None) -> None:
        try:
            self.queue.put((metrics, checkpoint))
        except ray.exceptions.RayActorError:
            pass  # the trial is gone (stopped by the scheduler): this run is being stopped too


# ---------------------------------------------------------------- Tune


def scheduler_of(spec: SearchSpec):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    s, max_steps = spec.scheduler, spec.max_steps
    if s.name == "asha":
        explain_rungs(asha_rungs(s.grace_period, s.reduction_factor, max_steps), spec.base_config().train.eval_every,
                      max_steps)
        return ASHAScheduler(time_attr="step", max_t=max_steps, grace_period=min(s.grace_period, max_steps),
                             reduction_factor=s.reduction_factor)
    if s.name == "pbt":
        domains = spec.mutable()
        return PopulationBasedTraining(
            time_attr="step", perturbation_interval=s.perturbation_interval,
            hyperparam_mutations={d.field: d.mutation() for d in domains},
            quantile_fraction=s.quantile_fraction, resample_probability=s.resample_probability,
            custom_explore_fn=Clip(domains), synch=s.synch)
    return FIFOScheduler()


def asha_rungs(grace_period: int, reduction_factor: float, max_steps: int) -> list[int]:
    """The steps at which ASHA may stop a trial: grace_period x reduction_factor^k, up to max_steps."""
    rungs, step = [], min(grace_period, max_steps)
    while step <= max_steps * (1 + 1e-9):
        rungs.append(round(step))
        step *= reduction_factor
    return rungs


def explain_rungs(rungs: list[int], eval_every: int, max_steps: int) -> None:
    """Say where ASHA's rungs waste steps. Ray's ASHA decides as each trial reaches a rung, so the
    first arrivals always go on: a long stretch after the last rung, trained by every trial let
    through, costs more than the rungs save. And it judges a trial at its first result at or past a
    rung, which is the next evaluation: a rung between evaluations is decided late."""
    if rungs[-1] < max_steps:
        log.info("ASHA rungs at steps %s: every trial that passes %d trains %d more steps (%.0f %% of "
                 "max_steps); a grace_period of max_steps / reduction_factor^k puts the last rung at %d",
                 rungs, rungs[-1], max_steps - rungs[-1], 100 * (max_steps - rungs[-1]) / max_steps, max_steps)
    judged = [min(-(-rung // eval_every) * eval_every, max_steps) for rung in rungs]
    if judged != rungs:
        log.info("ASHA judges a trial at its first evaluation at or past each rung: with train.eval_every=%d, "
                 "rungs %s are decided at steps %s; an eval_every that divides every rung decides them on time",
                 eval_every, rungs, judged)


@dataclass
class Clip:
    """PBT's explore multiplies by 0.8 or 1.2; keep the result a value the config accepts."""

    domains: list

    def __call__(self, config: dict) -> dict:
        for d in self.domains:
            config[d.field] = d.clip(config[d.field])
        return config


def search_alg_of(spec: SearchSpec, concurrent: int):
    from ray.tune.search import BasicVariantGenerator

    if spec.search.name == "optuna":
        try:
            from ray.tune.search.optuna import OptunaSearch
            import optuna  # noqa: F401  (OptunaSearch imports it lazily)
        except ImportError:
            raise RunError("search.name='optuna' needs Optuna: pip install 'sslab[optuna]'") from None
        from ray.tune.search import ConcurrencyLimiter

        return ConcurrencyLimiter(OptunaSearch(seed=spec.search.seed), max_concurrent=concurrent)
    return BasicVariantGenerator(random_state=spec.search.seed, max_concurrent=concurrent)


def build_tuner(spec: SearchSpec, setup: TrialSetup, search_dir: Path, concurrent: int, resume: bool):
    from ray import tune as ray_tune

    # A trial only drives its run, which reserves its own workers, so it holds no CPU: a token of
    # memory (Tune needs some resource), and max_concurrent_trials keeps the cluster from overbooking.
    resources = ray_tune.PlacementGroupFactory([{"memory": TRIAL_MEMORY}])
    trainable = ray_tune.with_resources(ray_tune.with_parameters(run_trial, setup=setup), resources)
    if resume:
        return ray_tune.Tuner.restore(str(search_dir / "tune"), trainable, resume_unfinished=True,
                                      resume_errored=False, restart_errored=False)
    return ray_tune.Tuner(
        trainable,
        param_space={d.field: d.to_tune() for d in spec.domains},
        tune_config=ray_tune.TuneConfig(metric=spec.metric, mode=spec.mode, num_samples=spec.num_samples,
                                        scheduler=scheduler_of(spec), search_alg=search_alg_of(spec, concurrent),
                                        # The next trial reuses a finished one's process and
                                        # its imports (about 3 s a trial on 2 cores); each trial
                                        # makes its own queue, run task and hooks.
                                        reuse_actors=True,
                                        trial_dirname_creator=trial_dirname),
        # A trial stops at its last step before any scheduler sees it: PBT must not exploit a finished trial.
        # sslab's own progress line (search_progress) stands for Tune's tables: verbose=0.
        run_config=ray_tune.RunConfig(name="tune", storage_path=str(search_dir), verbose=0,
                                      stop={"step": spec.max_steps}, callbacks=progress_of(spec),
                                      failure_config=ray_tune.FailureConfig(max_failures=0)),
    )


def progress_of(spec: SearchSpec) -> list:
    """The live progress line (silent with ``run.quiet``)."""
    from sslab.search_progress import SearchProgress

    return [SearchProgress(spec.name, spec.metric, spec.mode, spec.max_steps, spec.scheduler.name == "asha",
                           quiet=spec.base_config().run.quiet)]


def trial_dirname(trial) -> str:
    """Tune's directory of a trial is named by its id, like its run directory in ``trials/``."""
    return trial.trial_id


# ---------------------------------------------------------------- results


def results_table(grid, spec: SearchSpec):
    """One row per trial, best first: params, status, fixed-protocol metrics, steps, tokens, wall time."""
    import pandas as pd

    rows = []
    for result in grid:
        m = result.metrics or {}
        row = {"trial_id": Path(result.path).name, **{d.field: result.config.get(d.field) for d in spec.domains}}
        row["status"] = status_of(result, spec.max_steps)
        row.update({k: m[k] for k in fixed_protocol_names(m)})
        row.update(step=m.get("step"), tokens=m.get("tokens"), wall_s=round(m.get("time_total_s", 0.0), 1),
                   error=error_line(result.error) if result.error else "")
        rows.append(row)
    table = pd.DataFrame(rows)
    if spec.metric in table:
        table = table.sort_values(spec.metric, ascending=spec.mode == "min", na_position="last", kind="stable")
    return table.reset_index(drop=True)


def status_of(result, max_steps: int) -> str:
    if result.error:
        return "ERROR"
    step = (result.metrics or {}).get("step") or 0
    return "FINISHED" if step >= max_steps else "STOPPED"


def error_line(error: BaseException) -> str:
    ours = find_sslab_error(error)
    if ours is not None:
        return str(ours)
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def export_best(table, search_dir: Path) -> dict | None:
    """Copy the best finished trial's model/ (and tokenizer) into ``best/``."""
    for row in table.to_dict("records"):
        run_dir = search_dir / "trials" / str(row["trial_id"])
        if row["status"] != "FINISHED" or not (run_dir / "model").is_dir():
            continue
        best = search_dir / "best"
        shutil.rmtree(best, ignore_errors=True)
        shutil.copytree(run_dir / "model", best / "model")
        info = {"trial_id": row["trial_id"], "run_dir": str(run_dir), "model_dir": str(best / "model"),
                "params": {k: row[k] for k in table.columns if "." in k},
                "metrics": {k: row[k] for k in fixed_protocol_names(table.columns)}}
        (best / "trial.json").write_text(json.dumps(info, indent=2, default=str))
        return info
    return None
