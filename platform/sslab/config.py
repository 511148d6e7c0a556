"""The run configuration: typed, kw-only dataclasses are the only schema.

YAML files and ``a.b=value`` overrides are merged into one nested dict, then built into
:class:`Config` by :func:`build`, which refuses unknown keys and wrong types by name. Each
section validates its own values in ``__post_init__``. Everything here runs before Ray starts,
so a bad config never claims a resource.
"""
from __future__ import annotations

import dataclasses
import logging
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from sslab import sentences
from sslab.errors import ConfigError

log = logging.getLogger("sslab")
_warned: set[str] = set()


def warn(message: str) -> None:
    """Log a config warning once per process: a search builds its base config many times."""
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def require(ok: bool, name: str, value: Any, expected: str) -> None:
    """Raise a :class:`ConfigError` naming ``name`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{name}={value!r} is invalid: expected {expected}")


def require_fraction(name: str, value: float, *, low_open: bool = True, high_open: bool = True) -> None:
    lo = 0.0 < value if low_open else 0.0 <= value
    hi = value < 1.0 if high_open else value <= 1.0
    require(lo and hi, name, value, f"a number in {'(' if low_open else '['}0, 1{')' if high_open else ']'}")


@dataclass(kw_only=True)
class SyntheticConfig:
    """The built-in synthetic corpus (used when ``corpus.source`` is ``synthetic``)."""

    num_docs: int = 4000
    """Number of documents to generate."""
    num_topics: int = 8
    """Number of topics; each document has one, which is its probe label."""
    sentences_per_doc: int = 6
    """Sentences in each document."""
    seed: int = 0
    """Seed of the generator: the same seed gives the same corpus, byte for byte."""
    language: Literal["en", "zh"] = "en"
    """``en``: English-like pseudo-words; ``zh``: Chinese text of 2-4 character words, sentences
    closed by ``。`` (some ``！``, ``？``), no spaces. Both have topics, entities and discourse order."""

    def __post_init__(self):
        require(self.num_docs >= 10, "corpus.synthetic.num_docs", self.num_docs, "an integer >= 10")
        require(2 <= self.num_topics <= 64, "corpus.synthetic.num_topics", self.num_topics, "an integer in [2, 64]")
        require(self.sentences_per_doc >= 2, "corpus.synthetic.sentences_per_doc", self.sentences_per_doc, "an integer >= 2")


@dataclass(kw_only=True)
class CorpusConfig:
    """Where the text comes from and how it is split into documents."""

    source: str = "synthetic"
    """``synthetic``, a file, a directory, a glob, or a URI Ray Data reads (s3://, gs://)."""
    format: Literal["auto", "text", "jsonl", "parquet"] = "auto"
    """File format; ``auto`` picks by extension (.jsonl/.json, .parquet, anything else is text)."""
    text_field: str = "text"
    """JSONL field or Parquet column holding the text."""
    label_field: str | None = None
    """Optional JSONL field or Parquet column holding a label for the linear probe."""
    doc_split: Literal["line", "paragraph"] = "line"
    """Plain text: one document per line, or per blank-line separated paragraph."""
    min_chars: int = 1
    """Documents shorter than this after whitespace cleanup are dropped."""
    val_fraction: float = 0.05
    """Share of documents held out for validation, chosen by a hash of their content."""
    sentence_split: str = "auto"
    """Where sentences end, for the units built from sentences (sop, nsp, simcse): ``auto``
    (Latin and CJK), ``latin`` (after ``.!?`` and a space), ``cjk`` (after ``。！？；…`` and their
    full-width forms, spaces or not), or a regular expression whose every match ends a sentence
    (see :mod:`sslab.sentences`)."""
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def __post_init__(self):
        require(bool(self.source), "corpus.source", self.source, "a path, glob, URI or 'synthetic'")
        require(self.min_chars >= 1, "corpus.min_chars", self.min_chars, "an integer >= 1")
        require_fraction("corpus.val_fraction", self.val_fraction)
        why = sentences.check_rule(self.sentence_split) if isinstance(self.sentence_split, str) else "not text"
        require(why is None, "corpus.sentence_split", self.sentence_split,
                f"{', '.join(sentences.RULES)} or a regular expression; {why}")


@dataclass(kw_only=True)
class TokenizerConfig:
    """The tokenizer: trained on the corpus, or loaded from a local directory."""

    kind: Literal["wordpiece", "bpe", "unigram"] = "wordpiece"
    """``wordpiece`` (BERT-style, lowercased), ``bpe`` (byte-level, GPT/RoBERTa-style) or ``unigram``
    (SentencePiece-style, as T5, ALBERT and XLM-R: NFKC, not lowercased, ``▁`` opens each word).
    Unset in a config, the objective's own (``Objective.tokenizer_kind``): ``unigram`` for
    ``span``, as T5 was trained, ``wordpiece`` for the others."""
    vocab_size: int = 8000
    """Vocabulary size to train, special tokens (and ``unigram``'s byte pieces) included."""
    sample_docs: int = 20000
    """Documents streamed from the corpus to train it."""
    path: str | None = None
    """Load a fast tokenizer from this local directory instead of training one."""
    word_segmenter: str | None = None
    """Cut documents into words for ``objective.whole_word`` (Chinese: BERT-wwm, MacBERT):
    ``jieba`` (``pip install 'sslab[zh]'``) or the import path ``package.module:function`` of any
    ``text -> list[str]`` callable (LTP, pkuseg …). It runs once, as the corpus is prepared, and
    packed blocks keep its word boundaries; unset, words are the tokenizer's (``##``, ``Ġ``)."""
    byte_fallback: bool = True
    """``unigram``: spell a character that has no piece in its UTF-8 bytes (256 ``<0xNN>`` pieces,
    counted in ``vocab_size``) rather than ``<unk>``, as SentencePiece's ``byte_fallback``; unseen
    characters, a new script, emoji then keep their meaning. (``bpe`` is byte-level, so never needs
    it; ``wordpiece`` has ``[UNK]``.)"""
    character_coverage: float = 1.0
    """``unigram``: the share of the sample's text (counted in characters) that the characters
    given a piece cover, as SentencePiece's ``character_coverage``: the rarest beyond it get none, so are
    spelled in bytes (``<unk>`` without ``byte_fallback``) and leave their vocabulary slots to
    longer pieces. 1.0 keeps every character seen; SentencePiece uses 0.9995 for Chinese and Japanese."""

    def __post_init__(self):
        if self.word_segmenter is not None:
            from sslab import segment

            require(segment.is_valid_name(self.word_segmenter), "tokenizer.word_segmenter", self.word_segmenter,
                    segment.describe())
        require(self.vocab_size >= 100, "tokenizer.vocab_size", self.vocab_size, "an integer >= 100")
        require(self.sample_docs >= 1, "tokenizer.sample_docs", self.sample_docs, "an integer >= 1")
        if self.path is not None and "://" not in self.path:
            require(Path(self.path).is_dir(), "tokenizer.path", self.path, "an existing local directory")
        require(0 < self.character_coverage <= 1, "tokenizer.character_coverage", self.character_coverage,
                "a number in (0, 1]")
        require(self.kind == "unigram" or self.character_coverage == 1, "tokenizer.character_coverage",
                self.character_coverage, "1 unless tokenizer.kind=unigram (wordpiece and bpe keep every character)")
        if self.kind == "unigram" and self.byte_fallback and self.path is None:
            require(self.vocab_size >= 400, "tokenizer.vocab_size", self.vocab_size,
                    "an integer >= 400 with tokenizer.kind=unigram and tokenizer.byte_fallback=true "
                    "(its 256 byte pieces count in it)")


@dataclass(kw_only=True)
class ModelConfig:
    """The network: a preset built from config, or a local Hugging Face directory."""

    preset: Literal["tiny", "mini", "small", "base", "large"] = "tiny"
    """Size preset (see ``sslab.models.PRESETS``)."""
    arch: Literal["modernbert", "bert", "roberta"] = "modernbert"
    """Encoder family: ``modernbert`` (Warner et al. 2024: rotary positions, pre-norm, GeGLU),
    ``bert`` or ``roberta`` (learned absolute positions, post-norm)."""
    max_positions: int = 512
    """Maximum sequence length the position embeddings cover."""
    dropout: float | None = None
    """Hidden and attention dropout; ``None``: the family's own (0 for ModernBERT, 0.1 otherwise)."""
    init_from: str | None = None
    """Continue pretraining from this local Hugging Face model directory."""

    def __post_init__(self):
        require(self.max_positions >= 8, "model.max_positions", self.max_positions, "an integer >= 8")
        if self.dropout is not None:
            require(0.0 <= self.dropout < 1.0, "model.dropout", self.dropout, "a number in [0, 1)")
        if self.init_from is not None:
            require(Path(self.init_from).is_dir(), "model.init_from", self.init_from, "an existing local directory")


@dataclass(kw_only=True)
class TrainConfig:
    """The optimisation: batch, schedule, length, logging and checkpoint cadence."""

    seq_len: int = 128
    """Tokens per packed block, special tokens included."""
    batch_size: int = 32
    """Micro-batch per worker, in blocks."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    lr: float = 5e-4
    """Peak learning rate of AdamW."""
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 30
    """Linear warmup from 0 to ``lr``. One not below ``max_steps`` (``--max-steps 20`` with this
    default) never reaches ``lr``: the config warns, naming both."""
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    """Decay after warmup, down to ``min_lr_ratio * lr`` at ``max_steps``."""
    min_lr_ratio: float = 0.0
    max_steps: int = 300
    """Optimizer steps to train for."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this; 0 disables clipping."""
    log_every: int = 10
    """Print the progress line and append to ``metrics.jsonl`` every this many steps (rank 0)."""
    eval_every: int = 100
    """Run the fixed-protocol evaluation and report to Ray (Tune) every this many steps (and at the end)."""
    checkpoint_every: int = 100
    """Save a checkpoint every this many steps (and at the end)."""
    keep_checkpoints: int = 2
    """How many of the latest checkpoints to keep."""
    max_nonfinite: int = 5
    """Fail the run after this many consecutive steps with a non-finite loss or gradient."""
    prefetch_batches: int = 2
    """Batches each worker prefetches from Ray Data."""
    compile: bool = False
    """``torch.compile`` the model (TorchInductor): faster steps on a GPU after a first slow one."""
    seed: int = 0
    """Seeds model init, dropout and every mask (>= 0)."""

    def __post_init__(self):
        for name in ("seq_len", "batch_size", "grad_accum", "max_steps", "log_every",
                     "eval_every", "checkpoint_every", "keep_checkpoints", "max_nonfinite"):
            require(getattr(self, name) >= 1, f"train.{name}", getattr(self, name), "an integer >= 1")
        require(self.seq_len >= 8, "train.seq_len", self.seq_len, "an integer >= 8")
        require(self.lr > 0, "train.lr", self.lr, "a positive number")
        require(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, "a number >= 0")
        require(all(0 <= b < 1 for b in self.betas), "train.betas", self.betas, "two numbers in [0, 1)")
        require(self.warmup_steps >= 0, "train.warmup_steps", self.warmup_steps, "an integer >= 0")
        if self.warmup_steps >= self.max_steps:
            self._warn_warmup_too_long()
        require(0 <= self.min_lr_ratio <= 1, "train.min_lr_ratio", self.min_lr_ratio, "a number in [0, 1]")
        require(self.grad_clip >= 0, "train.grad_clip", self.grad_clip, "a number >= 0")
        require(self.prefetch_batches >= 0, "train.prefetch_batches", self.prefetch_batches, "an integer >= 0")
        require(self.seed >= 0, "train.seed", self.seed, "an integer >= 0")

    def _warn_warmup_too_long(self) -> None:
        """A run no longer than its warmup (a smoke run's ``--max-steps 20``) trains below ``lr`` and
        never decays. Refusing it would break every quick run that lowers only ``max_steps``, and
        changing the warmup would make a searched warmup a lie (every trial the same schedule
        under different values): say so, and train what was asked."""
        peak = self.max_steps / (self.warmup_steps + 1)  # lr_factor at the last step
        warn(f"train.warmup_steps={self.warmup_steps} is not below train.max_steps={self.max_steps}: the learning "
             f"rate warms up for the whole run, reaches {peak:.0%} of train.lr at its last step and never decays; "
             f"set train.warmup_steps below train.max_steps (a tenth, the defaults' share: "
             f"train.warmup_steps={self.max_steps // 10})")


SHUFFLES = ("global", "window", "none")


@dataclass(kw_only=True)
class DataConfig:
    """The prepared data (a corpus tokenised and packed once, into Parquet shards in a cache that
    every run and trial finds by itself) and the order training reads it in."""

    cache_dir: str | None = None
    """Where prepared corpora and the tokenizers trained for them live, keyed by content: any
    storage Ray Data writes (a local path, NFS, ``s3://…``; a multi-node cluster needs one every
    node reaches). ``None``: ``$SSLAB_CACHE_DIR``, else ``~/.cache/sslab``."""
    shuffle: Literal["global", "window", "none"] = "global"
    """Training order, new each epoch and reproducible from (``train.seed``, epoch). ``global``:
    the shards in a random order, and rows mixed within windows of ``shuffle_window`` rows (a
    corpus of up to ``shuffle_window`` rows is shuffled exactly). ``window``: rows mixed within
    windows of consecutive shards, the corpus's coarse order kept (curricula). ``none``: corpus order."""
    shuffle_window: int = 65536
    """Rows mixed together (each worker holds one window of ~ ``shuffle_window x seq_len x 4``
    bytes while it reads)."""
    shard_rows: int = 2048
    """Rows per prepared shard (Parquet file): the unit the global shuffle reorders."""

    def __post_init__(self):
        require(self.cache_dir is None or bool(self.cache_dir), "data.cache_dir", self.cache_dir, "a directory or URI")
        require(self.shuffle_window >= 1, "data.shuffle_window", self.shuffle_window, "an integer >= 1")
        require(self.shard_rows >= 1, "data.shard_rows", self.shard_rows, "an integer >= 1")


@dataclass(kw_only=True)
class EvalConfig:
    """The fixed-protocol evaluation, identical for every run so that runs compare."""

    mask_ratio: float = 0.15
    """Masking ratio of the masked-token evaluation, whatever the training ratio."""
    mean_span: float = 3.0
    """Mean corrupted-span length of the span-corruption and infilling evaluations."""
    seed: int = 1234
    """Seed of the evaluation masks."""
    max_blocks: int = 512
    """Validation blocks scored per evaluation (all workers together)."""
    probe_docs: int = 1000
    """Labelled validation documents for the linear probe (0 disables it)."""
    sts_data: str | None = None
    """Graded sentence pairs for ``eval_sts_spearman`` (objectives that train sentence vectors:
    simcse and its mixtures): a ``.tsv`` (STS-B's own), ``.csv``, ``.jsonl`` or ``.parquet`` file
    with columns ``sentence1``, ``sentence2`` and ``score``. Checked here and kept as an absolute
    path. Unset: the synthetic corpus's own pairs, and no STS score on another corpus."""
    sts_pairs: int = 400
    """Pairs scored at each evaluation: the synthetic pairs made, or at most this many of
    ``sts_data``'s (a sample fixed by ``eval.seed``); 0 disables the STS score."""

    def __post_init__(self):
        require_fraction("eval.mask_ratio", self.mask_ratio)
        require(self.mean_span >= 1, "eval.mean_span", self.mean_span, "a number >= 1")
        require(self.max_blocks >= 1, "eval.max_blocks", self.max_blocks, "an integer >= 1")
        require(self.probe_docs >= 0, "eval.probe_docs", self.probe_docs, "an integer >= 0")
        require(self.seed >= 0, "eval.seed", self.seed, "an integer >= 0")
        require(self.sts_pairs >= 0, "eval.sts_pairs", self.sts_pairs, "an integer >= 0")
        if self.sts_data is not None:
            from sslab import sts  # late: pandas, for a run that names a file

            # Absolute: a Ray worker or a trial in another directory reads the same file.
            self.sts_data = str(Path(self.sts_data).expanduser().resolve())
            sts.read_pairs(self.sts_data, "eval.sts_data")  # a bad file fails here, before Ray


PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


@dataclass(kw_only=True)
class ScalingConfig:
    """How many Ray Train workers, on what."""

    num_workers: int = 1
    """Data-parallel training workers."""
    use_gpu: bool | None = None
    """``None``: use GPUs when the cluster has them; ``true``/``false`` to force."""
    cpus_per_worker: float = 1.0
    """CPUs reserved by each worker (also its torch thread count on CPU)."""
    gpus_per_worker: float = 1.0
    """GPUs reserved by each worker when it uses GPUs; a fraction packs several runs on one GPU."""
    max_failures: int = 0
    """Restarts of the worker group from the last checkpoint before the run fails."""
    placement_strategy: str = "PACK"
    """How workers spread over nodes: ``PACK`` (fewest nodes), ``SPREAD`` (as many nodes as
    possible), ``STRICT_PACK`` (one node) or ``STRICT_SPREAD`` (one node each)."""
    peak_flops: float | None = None
    """Peak dense bf16 FLOP/s of one worker's device, for the ``mfu`` metric; unset: looked up
    for A100, H100 and H200 (other GPUs, and CPUs, report no MFU unless it is set)."""
    simulate_gpu: bool = False
    """Take the GPU code path with the CPU standing in for the GPU: Ray reserves GPUs for the
    workers, which train in bf16 autocast with fused AdamW and report MFU against
    ``scaling.peak_flops``. A dry run of a GPU job on a machine without one; a local Ray that
    sslab starts declares the GPUs, a joined cluster must have them (``ray start --num-gpus``)."""
    in_process: bool | None = None
    """Train a 1-worker CPU run in the calling process (Ray Train's local mode) instead of a
    worker group: the same training function, checkpoints and resume, without the ~20 s of
    Train's controller and worker processes. ``max_failures`` retries in the same process.
    ``None``: in process for a 1-worker CPU run on a one-machine Ray and for a search's 1-worker
    CPU trials (whose task holds the worker's CPUs), a worker group otherwise; a resumed run
    keeps the path that wrote its checkpoints."""

    def __post_init__(self):
        require(self.num_workers >= 1, "scaling.num_workers", self.num_workers, "an integer >= 1")
        require(self.cpus_per_worker > 0, "scaling.cpus_per_worker", self.cpus_per_worker, "a positive number")
        require(self.gpus_per_worker > 0, "scaling.gpus_per_worker", self.gpus_per_worker, "a positive number")
        require(self.max_failures >= -1, "scaling.max_failures", self.max_failures, "an integer >= -1 (-1: retry forever)")
        require(self.placement_strategy in PLACEMENT_STRATEGIES, "scaling.placement_strategy", self.placement_strategy,
                f"one of {', '.join(PLACEMENT_STRATEGIES)}")
        require(self.peak_flops is None or self.peak_flops > 0, "scaling.peak_flops", self.peak_flops,
                "a positive number of FLOP/s (989e12 for an H100)")
        require(not self.in_process or (self.num_workers == 1 and not self.simulate_gpu and not self.use_gpu),
                "scaling.in_process", self.in_process,
                "false unless scaling.num_workers=1 on CPU (no scaling.use_gpu, no scaling.simulate_gpu)")
        require(not (self.simulate_gpu and self.use_gpu is False), "scaling.use_gpu", self.use_gpu,
                "unset or true with scaling.simulate_gpu=true (a simulated GPU run reserves GPUs)")


@dataclass(kw_only=True)
class RunConfig:
    """Where the run lives and which Ray cluster runs it."""

    out: str = "runs/default"
    """Run directory. Rerunning with the same directory resumes from its last checkpoint."""
    ray_address: str | None = None
    """Ray cluster to join (``auto``, ``ray://…``); ``None`` starts or reuses a local one."""
    quiet: bool = False
    """Print only the final summary."""

    def __post_init__(self):
        require(bool(self.out), "run.out", self.out, "a directory path")


WANDB_MODES = ("online", "offline")


@dataclass(kw_only=True)
class TrackConfig:
    """Experiment tracking (rank 0 only); a resume continues the same tracked run."""

    tensorboard: bool = True
    """TensorBoard event files in ``<run>/tensorboard`` (``tensorboard --logdir runs/``)."""
    mlflow_uri: str | None = None
    """MLflow tracking URI, e.g. ``file:./mlruns`` or ``http://mlflow:5000`` (needs ``sslab[mlflow]``)."""
    mlflow_experiment: str = "sslab"
    """MLflow experiment the runs go to (created when missing)."""
    wandb_project: str | None = None
    """Weights & Biases project (needs ``sslab[wandb]`` and ``WANDB_API_KEY`` unless offline)."""
    wandb_mode: str = "online"
    """``online``, or ``offline``: write under ``<run>/wandb`` for a later ``wandb sync``."""

    def __post_init__(self):
        require(self.wandb_mode in WANDB_MODES, "track.wandb_mode", self.wandb_mode, "online or offline")
        require(bool(self.mlflow_experiment), "track.mlflow_experiment", self.mlflow_experiment, "a name")


@dataclass(kw_only=True)
class ObjectiveConfig:
    """Base of every objective's ``Config``; ``name`` picks the objective from the registry."""

    name: str = "mlm"
    """Registered objective name (see ``sslab objectives``)."""


@dataclass(kw_only=True)
class Config:
    """A complete, validated pretraining run."""

    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    run: RunConfig = field(default_factory=RunConfig)
    track: TrackConfig = field(default_factory=TrackConfig)

    def __post_init__(self):
        require(self.train.seq_len <= self.model.max_positions, "train.seq_len", self.train.seq_len,
                f"at most model.max_positions={self.model.max_positions}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(_plain(self.to_dict()), sort_keys=False)


# ---------------------------------------------------------------- building from dicts

# A section given by a name alone (`corpus: synthetic`, `objective: mlm`, and in a search
# `scheduler: asha`, `search: random`) stands for the mapping of its one main key.
SHORTHANDS = {"corpus": "source", "objective": "name", "scheduler": "name", "search": "name"}


def expand(key: str, value: Any) -> Any:
    """The mapping the shorthand section ``key: value`` stands for (``corpus: x`` is
    ``{"source": x}``); any other value as it is."""
    if isinstance(value, str) and key in SHORTHANDS:
        return {SHORTHANDS[key]: value}
    return value


def build(data: dict | None = None) -> Config:
    """Build a validated :class:`Config` from a nested dict (unknown keys are errors)."""
    data = {k: expand(k, v) for k, v in (data or {}).items()}
    objective = data.pop("objective", None) or {}
    if not isinstance(objective, dict):
        raise ConfigError(f"objective must be a name or a mapping, got {objective!r}")
    cfg = _build_dataclass(Config, _with_tokenizer_kind(data, objective), "")
    cfg.objective = _build_objective(objective)
    return cfg


def _with_tokenizer_kind(data: dict, objective: dict) -> dict:
    """``data`` with the objective's own ``tokenizer.kind`` (``Objective.tokenizer_kind``) where it
    sets none: a kind the user names always wins."""
    from sslab import objectives  # late: objectives import this module

    tokenizer = data.get("tokenizer", {})
    if not isinstance(tokenizer, dict) or "kind" in tokenizer:
        return data
    kind = objectives.get(objective.get("name", ObjectiveConfig().name)).tokenizer_kind
    return {**data, "tokenizer": {**tokenizer, "kind": kind}}


def _build_objective(data: dict) -> ObjectiveConfig:
    from sslab import objectives  # late: objectives import this module

    name = data.get("name", ObjectiveConfig().name)
    cls = objectives.get(name)
    return _build_dataclass(cls.Config, data, "objective")


def _build_dataclass(cls: type, data: Any, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - fields)
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"unknown config key '{key}' (known keys here: {', '.join(sorted(fields))})")
    kwargs = {k: _coerce(hints[k], v, f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # a dataclass without defaults for some field
        raise ConfigError(f"{prefix or 'config'}: {e}") from None


def _coerce(tp: Any, value: Any, name: str) -> Any:
    if isinstance(value, Override):  # command-line text: its meaning depends on the field's type
        value = str(value) if _takes_text(tp, value) else _parse_scalar(value)
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, name)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, name)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if origin is Literal:
        choices = typing.get_args(tp)
        require(value in choices, name, value, "one of " + ", ".join(map(str, choices)))
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        require(isinstance(value, (list, tuple)) and len(value) == len(args), name, value, f"a list of {len(args)}")
        return tuple(_coerce(a, v, f"{name}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp is bool:
        require(isinstance(value, bool), name, value, "true or false")
        return value
    if tp is int:
        require(isinstance(value, int) and not isinstance(value, bool), name, value, "an integer")
        return value
    if tp is float:
        require(isinstance(value, (int, float)) and not isinstance(value, bool), name, value, "a number")
        return float(value)
    if tp is str:
        require(isinstance(value, str), name, value, "a string")
        return value
    return value


# ---------------------------------------------------------------- files and overrides


class Override(str):
    """The raw text of a ``key=value`` override, parsed only once the field's type is known."""


def _takes_text(tp: Any, raw: str) -> bool:
    """Whether raw text should stay text for a field of type ``tp`` (``run.out=2024`` is a path)."""
    if tp is str:
        return True
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else ()
    return str in args and raw.strip() not in ("null", "~", "None", "")


def parse_overrides(items: list[str]) -> dict:
    """Turn ``["train.lr=1e-3", "corpus=synthetic"]`` into a nested dict.

    Values are parsed by the type of the field they set: as YAML scalars for numbers, bools and
    lists (``1e-3`` is a float, ``true`` a bool, ``null`` None), as plain text for strings.
    """
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        set_dotted(out, key.strip(), Override(raw))
    return out


def _parse_scalar(raw: str) -> Any:
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    # YAML 1.1 reads "1e-3" as a string; users mean a number.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def set_dotted(tree: dict, key: str, value: Any) -> None:
    """Set ``tree["a"]["b"] = value`` for ``key="a.b"``, creating levels as needed."""
    *parents, leaf = key.split(".")
    node = tree
    for p in parents:
        child = expand(p, node.get(p))
        if not isinstance(child, dict):
            child = {}
        node[p] = child
        node = child
    node[leaf] = value


def merge(base: dict, extra: dict) -> dict:
    """Deep-merge ``extra`` into a copy of ``base``."""
    out = dict(base)
    for k, v in extra.items():
        current = expand(k, out.get(k))
        out[k] = merge(current, v) if isinstance(v, dict) and isinstance(current, dict) else v
    return out


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
    return data


def load(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> Config:
    """Load a config: defaults, then the YAML file at ``path``, then ``overrides``."""
    data = read_yaml(path) if path else {}
    if isinstance(overrides, dict):
        data = merge(data, overrides)
    elif overrides:
        data = merge(data, parse_overrides(list(overrides)))
    return build(data)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
