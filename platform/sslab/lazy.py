"""Heavy modules named at the top of a module and imported where they are first used.

Ray Data's workers unpickle an objective to corrupt batches, and Ray Train's dataset manager and
split coordinators unpickle the datasets that carry it; none of them touches the model side.
Importing torch and transformers cost each of those fresh processes 6.6 s of CPU against 1.3 s
for ``ray.data`` alone (measured on 2 busy cores), at the start of every run. So the objectives,
the data path and the tokenizer module name their model-side modules through :func:`module`, and
only the processes that build or run a model import them.

Unlike ``importlib.util.LazyLoader``, nothing is put in ``sys.modules`` before the import really
happens, so code that checks whether torch is loaded (Ray does) sees the truth.
"""
from __future__ import annotations

import importlib
from types import ModuleType


class Module:
    """A stand-in for the module ``name`` that imports it on the first attribute read."""

    def __init__(self, name: str):
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str):
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}{'' if self._module is None else ' (imported)'}>"


def module(name: str) -> Module:
    """``torch = lazy.module("torch")``: ``torch.tensor(...)`` imports torch the first time it runs."""
    return Module(name)
