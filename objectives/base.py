"""The objective plug-in interface and its registry.

An objective splits in two, as fairseq splits a task from its criterion: the data side
(:meth:`Objective.transform`, pure numpy, run in Ray Data workers) corrupts a batch, and the
model side (:meth:`Objective.loss`, run in Ray Train workers) scores the model on it.
The processes of the data side never build a model, so an objective module names torch and
transformers through :mod:`sslab.lazy` and they import neither (a fresh one saves ~5 s of a core).
"""
from __future__ import annotations

import abc
import sys
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np

from sslab.config import EvalConfig, ModelConfig, ObjectiveConfig
from sslab.errors import ConfigError
from sslab.rng import RowRandom

if TYPE_CHECKING:
    import torch

    from sslab.tokenizer import Vocab

Batch = dict[str, np.ndarray]
IGNORE = -100  # label of positions that are not scored (PyTorch's cross-entropy default)
Unit = Literal["packed", "sentences", "pairs"]

def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


# ---------------------------------------------------------------- segments


def encoder_decoder_tokens(batch: dict[str, torch.Tensor]) -> float:
    """:meth:`Objective.model_tokens` of an encoder-decoder: the encoder reads the inputs and the
    decoder the targets, and each holds about half the parameters."""
    return (batch["input_ids"].numel() + batch["labels"].numel()) / 2


def frame(vocab: Vocab, seq_len: int, *segments: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``[CLS] s1 [SEP] s2 [SEP] …`` as (rows, seq_len) int64 ids, right-padded with the pad id.

    Each segment is ``(ids, lengths)``: padded ids of shape (rows, width) and the real length
    of each row.
    """
    return framed(seq_len, segments, vocab.cls_id, vocab.sep_id, vocab.pad_id).astype(np.int64)


def frame_words(seq_len: int, *segments: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The segmenter's word marks (:data:`sslab.segment.COLUMN`) of the rows :func:`frame` builds
    from segments of the same lengths: each segment's marks in place, False at the special tokens
    and the padding."""
    return framed(seq_len, segments, False, False, False).astype(bool)


def framed(seq_len: int, segments, first, sep, pad) -> np.ndarray:
    """``first s1 sep s2 sep …`` per row, right-padded with ``pad`` to ``seq_len``. Vectorised: a
    stable sort moves every row's real values to its front."""
    n = len(segments[0][0])
    one = np.ones((n, 1), dtype=bool)
    parts, real = [np.full((n, 1), first)], [one]
    for ids, lengths in segments:
        parts += [ids, np.full((n, 1), sep)]
        real += [np.arange(ids.shape[1])[None, :] < np.asarray(lengths)[:, None], one]
    values, real = np.concatenate(parts, axis=1), np.concatenate(real, axis=1)
    order = np.argsort(~real, axis=1, kind="stable")
    values = np.where(np.take_along_axis(real, order, axis=1), np.take_along_axis(values, order, axis=1), pad)
    if values.shape[1] < seq_len:
        values = np.pad(values, ((0, 0), (0, seq_len - values.shape[1])), constant_values=pad)
    return values[:, :seq_len]


# ---------------------------------------------------------------- the interface


class Objective(abc.ABC):
    """A self-supervised objective. Subclasses set the class attributes and implement the rest."""

    name: ClassVar[str]
    """Registry name, used in configs (``objective.name``) and on the command line."""
    unit: ClassVar[Unit]
    """Kind of example it trains on: packed blocks, single sentences, or segment pairs."""
    units: ClassVar[tuple[Unit, ...]] = ()
    """Further units it can work on inside a mixture (MLM masks pairs and sentences too)."""
    eval_unit: ClassVar[str | None] = None
    """Unit of the validation rows when it differs (SimCSE retrieves a document's other half)."""
    backbone: ClassVar[str]
    """The model family it trains (``encoder``, ``decoder``, ``electra``, ``t5``, ``bart``);
    only objectives with the same backbone can be mixed."""
    masks_words: ClassVar[bool] = False
    """Masks words (mlm, electra's generator): its rows carry ``tokenizer.word_segmenter``'s word
    boundaries, :data:`sslab.segment.COLUMN`, when one is set."""
    tokenizer_kind: ClassVar[str] = "wordpiece"
    """The ``tokenizer.kind`` a run of it trains when its config names none."""
    aux_weight: ClassVar[float] = 1.0
    """Default weight of its loss when it is not the first part of a mixture."""
    Config: ClassVar[type[ObjectiveConfig]] = ObjectiveConfig
    """Its hyperparameters, a kw-only dataclass validated on construction."""
    metrics: ClassVar[tuple[str, ...]] = ()
    """Names of the fixed-protocol metrics it reports (comparable across runs)."""
    baselines: ClassVar[dict[str, str]] = {}
    """Its trivial baselines: each reported baseline's name -> the metric it is a baseline for
    (``eval_unigram_loss`` -> ``eval_mlm_loss``). A model that has learned beats them; reports
    draw them as reference lines on that metric, and no search may rank by one."""
    paper: ClassVar[str] = ""

    def __init__(self, cfg: ObjectiveConfig, vocab: Vocab):
        self.cfg = cfg
        self.vocab = vocab

    @classmethod
    def extra_tokens(cls, cfg: ObjectiveConfig) -> list[str]:
        """Special tokens the objective adds to the tokenizer (T5's sentinels); none by default."""
        return []

    def check_seq_len(self, seq_len: int, protocol: EvalConfig | None = None) -> None:
        """Raise a ConfigError when blocks of ``seq_len`` tokens cannot work (T5: too many spans)."""

    @abc.abstractmethod
    def transform(self, batch: Batch, rng: RowRandom) -> Batch:
        """Corrupt a batch for training (numpy, vectorised; runs in Ray Data workers)."""

    def mask_epoch(self, epoch: int) -> int:
        """The epoch whose randomness corrupts a training row in epoch ``epoch``: itself (a new
        corruption every epoch) unless the objective repeats them (mlm's ``static_masks``)."""
        return epoch

    @abc.abstractmethod
    def eval_transform(self, batch: Batch, rng: RowRandom, protocol: EvalConfig) -> Batch:
        """Corrupt a validation batch by the fixed protocol, whatever this run's knobs are."""

    @abc.abstractmethod
    def build_model(self, model_cfg: ModelConfig) -> torch.nn.Module:
        """A ``transformers`` model built from config, or loaded from ``model_cfg.init_from``."""

    @abc.abstractmethod
    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """The training loss and a dict of detached scalar tensors to log."""

    @abc.abstractmethod
    def eval_sums(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Additive statistics of one validation batch (summed over batches and workers)."""

    @abc.abstractmethod
    def eval_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """The fixed-protocol metrics from the summed statistics."""

    def model_tokens(self, batch: dict[str, torch.Tensor]) -> float:
        """Token positions the model reads for one training batch, the count its FLOPs scale
        with (MFU): ``input_ids`` once, by default."""
        return batch["input_ids"].numel()

    def encoder(self, model: torch.nn.Module) -> torch.nn.Module | None:
        """The encoder whose mean-pooled states the linear probe reads (None: no probe)."""
        return None

    def sentence_pooling(self) -> str | None:
        """How it pools the sentence vectors it trains (``mean`` or ``cls``: SimCSE's
        ``objective.pooling``), which ``eval_sts_spearman`` scores as trained; None: it trains
        none, and reports no STS score."""
        return None

    def export(self, model: torch.nn.Module, out_dir: str, seq_len: int | None = None) -> None:
        """Save the trained model in Hugging Face format. ``seq_len``: the longest input the run
        trained on (an encoder's sentence-transformers files cut inputs there)."""
        model.save_pretrained(out_dir)


# ---------------------------------------------------------------- the registry

_REGISTRY: dict[str, type[Objective]] = {}


def register(cls: type[Objective]) -> type[Objective]:
    """Class decorator adding an objective to the registry."""
    if not (isinstance(cls, type) and issubclass(cls, Objective)):
        raise TypeError(f"@register expects a subclass of Objective, got {cls!r}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"objective {cls.__name__} must set a non-empty class attribute 'name'")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"objective name {name!r} is already registered by {_REGISTRY[name].__qualname__}")
    if not (isinstance(cls.Config, type) and issubclass(cls.Config, ObjectiveConfig)):
        raise TypeError(f"objective {name!r}: Config must subclass sslab.config.ObjectiveConfig")
    _REGISTRY[name] = cls
    return cls


def get(name: str) -> type[Objective]:
    """The objective class registered as ``name``, or the mixture ``a+b`` of registered ones."""
    if "+" in name:
        from sslab.objectives.mixture import compose  # late: mixture builds on this module

        return compose(name)
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"objective {name!r} is unknown (available: {', '.join(available())})") from None


def plugins() -> tuple[type[Objective], ...]:
    """Objectives registered from outside sslab (a script, a user's module). Ray processes do not
    import them: pass these along and :func:`adopt` them there; they travel by value."""
    import ray.cloudpickle

    found = tuple(cls for cls in _REGISTRY.values() if not cls.__module__.startswith("sslab."))
    for cls in found:
        if cls.__module__ != "__main__":  # cloudpickle sends __main__'s classes by value already
            ray.cloudpickle.register_pickle_by_value(sys.modules[cls.__module__])
    return found


def adopt(classes) -> None:
    """Register :func:`plugins` of the driver in this (Ray worker) process."""
    for cls in classes:
        known = _REGISTRY.get(cls.name)
        if known is None or known.__qualname__ != cls.__qualname__:  # the same class unpickled twice is fine
            register(cls)


def available() -> list[str]:
    """Registered objective names, sorted."""
    return sorted(_REGISTRY)
