"""Search-space YAML files shipped with sslab (package data)."""
from importlib import resources


def path(name: str):
    """Path of the shipped search space ``name`` (with or without ``.yaml``)."""
    return resources.files(__name__) / (name if name.endswith(".yaml") else f"{name}.yaml")
