"""One pretraining run, end to end, as three public stages that ``pretrain`` and a search compose:

- :func:`resolve` turns a YAML path, dict or Config plus ``key=value`` overrides into a typed
  :class:`~sslab.config.Config` (the only place text becomes typed);
- :func:`prepare` finds or writes the corpus's prepared rows in the data cache and returns a
  :class:`Prepared`: tokenizer, vocabulary, objective, evaluation and probe sets, plug-ins;
- :func:`train` trains on a :class:`Prepared` on Ray Train (or in this process), then exports.

Everything that can be checked without Ray (config, paths, the run directory) is checked
before Ray starts, so bad input never claims a resource.
"""
from __future__ import annotations

import contextlib
import functools
import json
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
import ray.train
from ray.data.expressions import col
from ray.train.torch import TorchConfig, TorchTrainer

from sslab import cluster, corpus, evaluation, pipeline, prepared, progress, runs, segment, sts, tracking
from sslab import tokenizer as tokenizers_mod
from sslab.checkpoint import read_state
from sslab.config import Config, build, load, merge, parse_overrides
from sslab.errors import RunError, SslabError, find_sslab_error, first_worker_error
from sslab import objectives
from sslab.objectives import get as get_objective
from sslab.protocol import fixed_protocol
from sslab.train_loop import WorkerHook, WorkerPlan, train_loop_per_worker


@dataclass
class RunResult:
    """What a finished run leaves: its directory, summary and exported model."""

    run_dir: Path
    summary: dict = field(repr=False)
    config: Config = field(repr=False)

    @property
    def model_dir(self) -> Path:
        """Hugging Face directory of the final model and tokenizer."""
        return self.run_dir / "model"

    @property
    def fixed_protocol_metrics(self) -> dict:
        """The final metrics that compare across runs (``eval_*``, ``probe_*``; see :mod:`sslab.protocol`)."""
        return fixed_protocol(self.summary["metrics"])


@dataclass
class RunHooks:
    """How a caller reaches into a run: a Tune trial (see ``sslab.search``) forwards its reports
    through Ray Train callbacks and, for a PBT restart, names the checkpoint to start from and a
    fresh Train run to hold it; tests inject faults into the workers' loop."""

    callbacks: list = field(default_factory=list)
    start_from: str | None = None
    """Checkpoint directory to load weights, optimizer and step from (PBT's exploit)."""
    restart: int = 0
    """Number of this restart within the run directory (0: the run itself)."""
    worker: tuple[WorkerHook, ...] = ()
    """Called inside every training worker's loop (:class:`~sslab.train_loop.WorkerHook`)."""
    on_report: list = field(default_factory=list)
    """For a run trained in process (``scaling.in_process``), where Train callbacks do not run:
    called with each report's metrics and its checkpoint's directory (or None)."""


def pretrain(config: Config | dict | str | Path | None = None, overrides: list[str] | None = None,
             hooks: RunHooks | None = None) -> RunResult:
    """Pretrain one model; ``config`` is a :class:`Config`, a nested dict or a YAML path.

    The three stages in a row, :func:`resolve`, :func:`prepare` (into the run directory) and
    :func:`train`. Rerunning with the same ``run.out`` resumes from that directory's last
    checkpoint; while a run lives its directory is its own, and another one there raises
    :class:`~sslab.errors.DirectoryInUse` before it touches anything (:mod:`sslab.owner`). Bad input fails before Ray starts and before anything is written where it can be
    checked there (config, corpus files, a tokenizer ``model.init_from`` cannot read, the run
    directory); a start that fails later (the cluster can never hold the workers, the corpus is
    empty once cleaned) leaves the run directory as it found it.
    """
    cfg = resolve(config, overrides)
    hooks = hooks or RunHooks()
    started = time.time()
    progress.mark("run.start")
    files = corpus.check(cfg.corpus)
    prepared.check_writable(prepared.cache_root(cfg.data))
    tracking.check(cfg)
    segment.check(cfg)
    tokenizers_mod.check_init_from(cfg.tokenizer, cfg.model.init_from, runs.directory(cfg),
                                   get_objective(cfg.objective.name).extra_tokens(cfg.objective))
    cluster.check_local_cpus(cfg.run.ray_address, cfg.scaling.num_workers, cfg.scaling.cpus_per_worker,
                             cluster.asked(cfg.scaling))
    # quiet: a trial's run keeps Ray's chatter off; owned: the run directory is this call's until it returns.
    with progress.quiet_libraries(cfg.run.quiet), runs.owned(cfg, restart=hooks.restart > 0):
        with opening(cfg, hooks) as run_dir:
            data = prepare_in(cfg, run_dir, files)
        progress.mark("data.ready")
        return fit_and_export(data, run_dir, hooks, started)


@contextlib.contextmanager
def opening(cfg: Config, hooks: RunHooks):
    """The run directory checked and opened (:func:`sslab.runs.starting`: a start that fails
    inside leaves it as it was), Ray joined or started and able to hold the workers, and the path
    the run trains on decided (``scaling.in_process``: ``cfg`` is the run's own copy)."""
    with runs.starting(cfg, replace=hooks.restart > 0) as run_dir:
        cluster.init_ray(cfg)
        cluster.check_resources(cfg)
        cluster.check_shared_storage(run_dir)
        cfg.scaling.in_process = cluster.trains_in_process(cfg, run_dir)
        progress.mark("run.ray")
        yield run_dir


# ------------------------------------------------------------------ the stages: resolve, prepare, train


def resolve(config: Config | dict | str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Stage 1: a validated :class:`Config` from a Config, a nested dict or a YAML path (None: the
    defaults), plus ``key=value`` overrides. The one place where text becomes typed: string
    shorthands (``corpus: x``, ``objective: x``) are expanded here and nowhere after."""
    if isinstance(config, Config):
        config = config.to_dict()
    if isinstance(config, dict):
        return build(merge(config, parse_overrides(overrides or [])))
    return load(config, overrides)


@dataclass
class Prepared:
    """Stage 2: everything a run trains from, found in the data cache or written there once.

    The corpus's tokenizer and vocabulary, the objective over them, the prepared rows (counts
    from their manifest, never from a pass), the fixed evaluation, probe and STS sets and the
    objectives registered outside sslab. What :func:`train` takes; what ``sslab prepare`` prints."""

    config: Config = field(repr=False)
    tokenizer: object = field(repr=False)
    objective: object = field(repr=False)
    entry: prepared.Entry
    hit: bool
    """The entry was in the cache already: nothing was tokenised."""
    tokenizer_dir: Path | None
    """Where the data cache keeps the tokenizer trained for this corpus (None when the config
    names its own tokenizer, or the cache cannot hold one)."""
    plugins: tuple = ()
    """Objectives registered outside sslab (:func:`sslab.objectives.plugins`)."""
    wall_s: float = 0.0

    @property
    def vocab(self):
        return self.objective.vocab

    @functools.cached_property
    def val_blocks(self) -> ray.data.Dataset:
        """The fixed evaluation set: up to ``eval.max_blocks`` validation rows, corrupted once
        (read from the entry when training first asks: ``sslab prepare`` never does)."""
        return pipeline.eval_blocks(self.entry.read("val", self.config.eval.max_blocks), self.objective,
                                    self.config.eval)

    @functools.cached_property
    def probe(self) -> dict | None:
        """The linear probe's labelled blocks, or None (``eval.probe_docs=0``), made when first asked."""
        return load_probe(self.config, self.entry, self.tokenizer)

    @functools.cached_property
    def sts(self) -> sts.StsSet | None:
        """The graded sentence pairs ``eval_sts_spearman`` scores, made when first asked; None for
        an objective that trains no sentence vectors, or without pairs (:func:`sslab.sts.of_run`)."""
        return sts.of_run(self.config, self.tokenizer) if self.objective.sentence_pooling() else None

    @property
    def key(self) -> str:
        return self.entry.manifest.key

    @property
    def splits(self) -> dict:
        """Per split: ``rows``, ``tokens`` and ``shards``, from the manifest."""
        return {name: {"rows": s.rows, "tokens": s.tokens, "shards": len(s.shards)}
                for name, s in self.entry.manifest.splits.items()}

    @property
    def train_rows(self) -> int:
        return self.entry.manifest.splits["train"].rows

    @property
    def val_rows(self) -> int:
        """Rows of the evaluation set (the validation split, up to ``eval.max_blocks``)."""
        return min(self.entry.manifest.splits["val"].rows, self.config.eval.max_blocks)


def prepare(config: Config | dict | str | Path | None = None, overrides: list[str] | None = None) -> Prepared:
    """Stage 2 alone: tokenise and pack a corpus into the objective's rows once, in the data
    cache, where every later ``pretrain`` and every trial of ``tune`` with the same corpus,
    tokenizer, unit and ``train.seq_len`` finds it; a second call finds it and tokenises nothing.
    Joins (or starts) Ray as ``pretrain`` does."""
    cfg = resolve(config, overrides)
    return prepare_listed(cfg, corpus.check(cfg.corpus))


def prepare_listed(cfg: Config, files: corpus.CorpusFiles | None) -> Prepared:
    """:func:`prepare` of a resolved config whose corpus :func:`sslab.corpus.check` has listed
    and checked already (``files``: its listing)."""
    started = time.time()
    prepared.check_writable(prepared.cache_root(cfg.data))
    segment.check(cfg)
    with progress.quiet_libraries(cfg.run.quiet), tempfile.TemporaryDirectory() as scratch:
        cluster.init_ray(cfg)
        p = prepare_in(cfg, Path(scratch), files)
    p.wall_s = round(time.time() - started, 2)
    return p


def prepare_in(cfg: Config, workdir: Path, files: corpus.CorpusFiles | None) -> Prepared:
    """:func:`prepare` on a running Ray, its tokenizer saved into ``workdir`` (a run's directory,
    where a resume finds it), the corpus read from its listing ``files``. Raises sslab's own
    error where a Ray Data worker raised it."""
    try:
        return _prepare(cfg, workdir, files)
    except Exception as e:  # a CorpusError raised in a Ray Data worker arrives wrapped
        raise (find_sslab_error(e) or e) from None


def _prepare(cfg: Config, workdir: Path, files: corpus.CorpusFiles | None) -> Prepared:
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # same rows in the same order on every rerun
    quiet = cfg.run.quiet
    # Ray Data's own bars (rows/s and an ETA per operator) on a terminal; sslab's lines elsewhere.
    ctx.enable_progress_bars = not quiet and sys.stderr.isatty()
    ctx.print_on_execution_start = False
    root = prepared.cache_root(cfg.data)
    fingerprint = corpus.fingerprint(cfg.corpus, files)
    docs = corpus.read_documents(cfg.corpus, files)  # lazy: read only where something below needs the text
    train_docs, val_docs = corpus.split(docs, cfg.corpus.val_fraction)
    tok_dir = prepared.tokenizer_dir(root, prepared.tokenizer_key(fingerprint, cfg.tokenizer, cfg.model.max_positions,
                                                                  cfg.train.seed))
    tok = tokenizers_mod.corpus_tokenizer(cfg, train_docs, workdir, quiet, tok_dir)
    if cfg.tokenizer.path or cfg.model.init_from:
        tok_dir = None
    progress.mark("data.tokenizer")
    objective_cls = get_objective(cfg.objective.name)
    extra = objective_cls.extra_tokens(cfg.objective)  # T5's sentinels
    tokenizers_mod.add_tokens(tok, extra, workdir)
    vocab = tokenizers_mod.vocab_of(tok, extra)
    objective = objective_cls(cfg.objective, vocab)
    objective.check_seq_len(cfg.train.seq_len, cfg.eval)
    tok_json = tok.backend_tokenizer.to_str()
    key = prepared.data_key(fingerprint, tok_json, cfg.train.seq_len, objective.unit, objective.eval_unit,
                            word_segmenter=pipeline.segmenter_of(cfg),
                            sentence_split=cfg.corpus.sentence_split)
    entry = prepared.find(root, key)
    if entry is None:
        splits = {"train": pipeline.tokenize(train_docs, tok_json, cfg, vocab, objective.unit),
                  "val": pipeline.tokenize(val_docs, tok_json, cfg, vocab, objective.eval_unit or objective.unit)}
        # The probe's documents, kept with the rows (a corpus that cannot hold labels is not read for them).
        labelled = val_docs.filter(expr=col("label").is_not_null()) if corpus.has_labels(cfg.corpus) else None
        entry = prepared.write(root, key, objective.unit, cfg.train.seq_len, splits, cfg.data.shard_rows, quiet,
                               probe=labelled, val_fraction=cfg.corpus.val_fraction)
    else:
        progress.say(f"prepared data: found {entry.uri} ({entry.manifest.splits['train'].rows:,} training rows of "
                     f"{objective.unit}); nothing to tokenise", quiet)
    progress.mark("data.prepared")
    check_rows(cfg, entry, objective.unit, docs)
    return Prepared(cfg, tok, objective, entry, not entry.tokenised, tok_dir, objectives.plugins())


def check_rows(cfg: Config, entry: prepared.Entry, unit: str, docs) -> None:
    """Refuse a prepared corpus too small to train on: no training row, or fewer training or
    evaluation rows than workers (``docs``: the corpus, read only to say it is empty)."""
    splits = entry.manifest.splits
    num_train, num_val = splits["train"].rows, min(splits["val"].rows, cfg.eval.max_blocks)
    if num_train == 0:
        corpus.count_documents(docs, cfg.corpus.source)  # raises when the corpus itself is empty
        raise RunError(f"corpus {cfg.corpus.source!r} is too small: {too_small(unit, cfg.train.seq_len)}")
    if num_train < cfg.scaling.num_workers:
        raise RunError(f"the training split holds {num_train} {unit} rows, fewer than the "
                       f"{cfg.scaling.num_workers} workers; add text or lower train.seq_len")
    if num_val < cfg.scaling.num_workers:
        raise RunError(f"the validation split holds {num_val} {unit} rows for evaluation, fewer than the "
                       f"{cfg.scaling.num_workers} workers; raise corpus.val_fraction or lower train.seq_len")


def too_small(unit: str, seq_len: int) -> str:
    if unit == "packed":
        return f"no block of train.seq_len={seq_len} tokens; add text or lower train.seq_len"
    if unit == "pairs":
        return ("no document has two segments to pair; sop and nsp need documents of several sentences "
                "(see corpus.doc_split)")
    return "no sentence to train on; add text"


def load_probe(cfg: Config, entry: prepared.Entry, tok) -> dict | None:
    """The linear probe's labelled blocks, from the documents kept with the prepared rows (never
    a pass over the corpus: one without labels would be read to its end)."""
    if cfg.eval.probe_docs == 0:
        return None
    texts, labels = entry.probe_documents(cfg.eval.probe_docs)
    return evaluation.probe_set(texts, labels, tok, cfg.train.seq_len)


def train(data: Prepared, hooks: RunHooks | None = None) -> RunResult:
    """Stage 3: train on ``data`` in its config's run directory (``run.out``: opened, or resumed
    from its last checkpoint, as :func:`pretrain` does, and its own until this returns), on a Ray
    Train worker group or in this process, then export the model and write ``summary.json``."""
    hooks, started = hooks or RunHooks(), time.time()
    cfg = data.config
    tracking.check(cfg)
    with progress.quiet_libraries(cfg.run.quiet), runs.owned(cfg, restart=hooks.restart > 0):
        with opening(cfg, hooks) as run_dir:
            if not (run_dir / "tokenizer").is_dir():  # where a resume finds the run's tokenizer
                data.tokenizer.save_pretrained(str(run_dir / "tokenizer"))
        return fit_and_export(data, run_dir, hooks, started)


def fit_and_export(data: Prepared, run_dir: Path, hooks: RunHooks, started: float) -> RunResult:
    result = fit(data, run_dir, hooks)
    progress.mark("run.fitted")
    summary = finish(data, run_dir, result, time.time() - started)
    progress.mark("run.exported")
    return RunResult(run_dir=run_dir, summary=summary, config=data.config)


def fit(data: Prepared, run_dir: Path, hooks: RunHooks):
    """Build the workers' plan and run the ``TorchTrainer``; sslab errors surface unwrapped."""
    cfg = data.config
    t, s = cfg.train, cfg.scaling
    gpu = cluster.use_gpu(cfg)
    # A restart is a new Train run inside the run directory: Train would otherwise resume the
    # run's own latest checkpoint rather than the one PBT chose.
    storage, name = (run_dir, f"restart_{hooks.restart}") if hooks.restart else (run_dir.parent, run_dir.name)
    plan = WorkerPlan(config=cfg, vocab=data.vocab, probe=data.probe, sts=data.sts,
                      blocks_per_step=t.batch_size * t.grad_accum * s.num_workers,
                      train=data.entry.stream(cfg.data, t.seed), run_dir=str(run_dir),
                      start_from=hooks.start_from, plugins=data.plugins, hooks=tuple(hooks.worker))
    datasets = {"val": data.val_blocks}  # each worker reads its training rows itself, from plan.train
    if s.in_process:
        return fit_in_process(plan, datasets, storage / name, cfg, hooks)
    trainer = TorchTrainer(
        train_loop_per_worker,
        # Ray picks NCCL for workers with GPUs; simulated ones are CPUs, which NCCL cannot drive.
        torch_config=TorchConfig(backend="gloo") if s.simulate_gpu else None,
        train_loop_config={"plan": plan},
        scaling_config=ray.train.ScalingConfig(
            num_workers=s.num_workers, use_gpu=gpu, placement_strategy=s.placement_strategy,
            resources_per_worker={"CPU": s.cpus_per_worker, **({"GPU": s.gpus_per_worker} if gpu else {})}),
        run_config=ray.train.RunConfig(
            name=name, storage_path=str(storage), callbacks=hooks.callbacks,
            failure_config=ray.train.FailureConfig(max_failures=s.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=t.keep_checkpoints),
            logging_config=ray.train.LoggingConfig(log_level="WARNING")),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(
            execution_options=ray.data.ExecutionOptions(preserve_order=True)),
    )
    main_thread = threading.current_thread() is threading.main_thread()
    ctrl_c = signal.getsignal(signal.SIGINT) if main_thread else None
    try:
        return trainer.fit()
    except Exception as e:  # Ray wraps worker errors; show ours as they were raised
        ours = find_sslab_error(e)
        if ours is not None:
            raise ours from None
        raise RunError(f"training failed: {first_worker_error(e)} "
                       f"(rerun the same command to resume from the last checkpoint in {run_dir})") from e
    finally:
        if main_thread:
            # Ray Train's Ctrl-C handler holds the finished run's controller, and with it the
            # run's dataset actors (four processes, ~1.5 GB), until another run replaces it.
            signal.signal(signal.SIGINT, ctrl_c)


def fit_in_process(plan: WorkerPlan, datasets: dict, checkpoints: Path, cfg: Config, hooks: RunHooks):
    """``fit`` for ``scaling.in_process``: the same training function in this process
    (:mod:`sslab.in_process`), its checkpoints in ``checkpoints`` (the run directory, or a PBT
    restart's own directory in it, as for a worker group)."""
    from sslab import in_process

    checkpoints.mkdir(parents=True, exist_ok=True)
    try:
        return in_process.fit(plan, datasets, checkpoints, cfg.train.keep_checkpoints, cfg.scaling.max_failures,
                              on_report=hooks.on_report)
    except SslabError:
        raise
    except Exception as e:
        raise RunError(f"training failed: {type(e).__name__}: {e} "
                       f"(rerun the same command to resume from the last checkpoint in {plan.run_dir})") from e


def finish(data: Prepared, run_dir: Path, result, wall_s: float) -> dict:
    """Export the final model in Hugging Face format and write ``summary.json``."""
    cfg = data.config
    if result.checkpoint is None:
        raise RunError(f"training ended without a checkpoint in {run_dir}")
    with result.checkpoint.as_directory() as d:
        state = read_state(d)
    model = data.objective.build_model(cfg.model)
    model.load_state_dict(state["model"])
    data.objective.export(model, str(run_dir / "model"), seq_len=cfg.train.seq_len)
    data.tokenizer.save_pretrained(str(run_dir / "model"))
    metrics = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}
    summary = {
        "objective": cfg.objective.name, "steps": state["counters"]["step"], "tokens": state["counters"]["tokens"],
        "wall_s": round(wall_s, 2), "tokens_per_s": metrics.get("tokens_per_s"),
        "num_workers": cfg.scaling.num_workers, "device": result.metrics.get("device"), "train_blocks": data.train_rows,
        "val_blocks": data.val_rows, "parameters": sum(p.numel() for p in model.parameters()),
        "metrics": metrics, "checkpoint": result.checkpoint.path, "model_dir": str(run_dir / "model"),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
