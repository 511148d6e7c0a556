"""Study files shipped with sslab (package data): published ablations for ``sslab study``."""
from importlib import resources


def path(name: str):
    """Path of the shipped study ``name`` (with or without ``.yaml``)."""
    return resources.files(__name__) / (name if name.endswith(".yaml") else f"{name}.yaml")
