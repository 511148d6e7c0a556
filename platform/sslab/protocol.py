"""Which metrics rank runs and trials: the fixed-protocol ones.

A fixed-protocol metric is measured the same way whatever the run trained with: masked-token
loss at 15 % on the fixed validation blocks (``eval_*``), a linear probe on frozen features
(``probe_*``), a fine-tuned downstream task (``downstream_*``). Only these compare across mask
ratios and objectives; a run's own training loss does not. Every part of sslab that ranks,
shows or tracks metrics asks this module which ones they are.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

PREFIXES = ("eval_", "probe_", "downstream_")


def is_fixed_protocol(key) -> bool:
    """Whether the metric ``key`` is measured by a fixed protocol (comparable across runs)."""
    return str(key).startswith(PREFIXES)


def fixed_protocol(metrics: Mapping) -> dict:
    """The fixed-protocol entries of ``metrics``, in their order."""
    return {k: v for k, v in metrics.items() if is_fixed_protocol(k)}


def fixed_protocol_names(keys: Iterable) -> list[str]:
    """The fixed-protocol names among ``keys`` (columns, metric names), sorted."""
    return sorted(str(k) for k in keys if is_fixed_protocol(k))
