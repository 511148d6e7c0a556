"""The objective plug-in interface, its registry, and the per-row random numbers masks draw on.

An objective splits in two, as fairseq splits a task from its criterion: the data side
(:meth:`Objective.transform`, pure numpy, run in Ray Data workers) corrupts a batch, and the
model side (:meth:`Objective.loss`, run in Ray Train workers) scores the model on it.
"""
from __future__ import annotations

import abc
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np

from sslab.config import EvalConfig, ModelConfig, ObjectiveConfig
from sslab.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from sslab.tokenizer import Vocab

Batch = dict[str, np.ndarray]

# ---------------------------------------------------------------- per-row randomness

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (Steele et al. 2014): a bijective hash of uint64s, vectorised."""
    with np.errstate(over="ignore"):  # wrap-around is the point
        z = np.asarray(x, dtype=np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


class RowRandom:
    """Random numbers that depend only on (seed, epoch, row id, position, stream).

    Counter-based rather than stateful: a row gets the same mask however the dataset is
    batched, split across workers or resumed, a new one every epoch, and rows never share
    a stream. Generating them is a few vectorised integer ops per number.
    """

    def __init__(self, seed: int, epoch: int, row_ids: np.ndarray):
        base = splitmix64(splitmix64(np.uint64(seed)) ^ np.uint64(epoch))
        self.keys = splitmix64(base ^ np.asarray(row_ids, dtype=np.uint64))

    def bits(self, n: int, stream: int = 0) -> np.ndarray:
        """uint64 array of shape (rows, n)."""
        cols = splitmix64(np.arange(n, dtype=np.uint64) + np.uint64(stream << 32))
        return splitmix64(self.keys[:, None] ^ cols[None, :])

    def uniform(self, n: int, stream: int = 0) -> np.ndarray:
        """Floats in [0, 1) of shape (rows, n)."""
        return (self.bits(n, stream) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))

    def integers(self, low: int, high: int, n: int, stream: int = 0) -> np.ndarray:
        """Integers in [low, high) of shape (rows, n)."""
        return low + (self.uniform(n, stream) * (high - low)).astype(np.int64)


# ---------------------------------------------------------------- the interface


class Objective(abc.ABC):
    """A self-supervised objective. Subclasses set the class attributes and implement the rest."""

    name: ClassVar[str]
    """Registry name, used in configs (``objective.name``) and on the command line."""
    unit: ClassVar[Literal["packed", "sentences", "pairs"]]
    """Kind of example it trains on: packed blocks, single sentences, or segment pairs."""
    Config: ClassVar[type[ObjectiveConfig]] = ObjectiveConfig
    """Its hyperparameters, a kw-only dataclass validated on construction."""
    metrics: ClassVar[tuple[str, ...]] = ()
    """Names of the fixed-protocol metrics it reports (comparable across runs)."""
    paper: ClassVar[str] = ""

    def __init__(self, cfg: ObjectiveConfig, vocab: Vocab):
        self.cfg = cfg
        self.vocab = vocab

    @abc.abstractmethod
    def transform(self, batch: Batch, rng: RowRandom) -> Batch:
        """Corrupt a batch for training (numpy, vectorised; runs in Ray Data workers)."""

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

    def encoder(self, model: torch.nn.Module) -> torch.nn.Module | None:
        """The encoder whose mean-pooled states the linear probe reads (None: no probe)."""
        return None

    def export(self, model: torch.nn.Module, out_dir: str) -> None:
        """Save the trained model in Hugging Face format."""
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
    """The objective class registered as ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"objective {name!r} is unknown (available: {', '.join(available())})") from None


def available() -> list[str]:
    """Registered objective names, sorted."""
    return sorted(_REGISTRY)
