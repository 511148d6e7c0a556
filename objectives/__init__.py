"""Self-supervised objectives. The folder is the catalogue: every module here registers one.

Importing this package imports each module, so ``available()`` lists them all.
"""
import importlib
import pkgutil

from sslab.objectives.base import Objective, adopt, available, get, plugins, register
from sslab.rng import RowRandom

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["Objective", "RowRandom", "adopt", "available", "get", "plugins", "register"]
