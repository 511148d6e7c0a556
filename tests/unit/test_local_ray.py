"""Starting a private local Ray: another Ray on the same machine is named before it can stall a
search (Ray Train's clean-up after a stopped trial cannot tell two local Rays apart)."""
from __future__ import annotations

import logging

import ray
from ray._private import services

from sslab import runner


def start_with(monkeypatch, running: set[str]) -> list[dict]:
    """Call ``start_local_ray(3)`` with Ray reporting ``running`` GCS addresses; return ray.init's calls."""
    def find():
        return running
    find.cache_clear = lambda: None
    monkeypatch.setattr(services, "find_gcs_addresses", find)
    calls = []
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    runner.start_local_ray(3)
    return calls


def test_another_local_ray_is_named_with_what_to_do(monkeypatch, caplog):
    with caplog.at_level("WARNING", logger="sslab"):
        calls = start_with(monkeypatch, {"10.0.0.5:6379"})
    assert calls == [{"address": "local", "num_cpus": 3, "logging_level": logging.WARNING}]
    message = caplog.records[-1].getMessage()
    assert "10.0.0.5:6379" in message and "may stall" in message and "RAY_ADDRESS" in message, message


def test_a_machine_without_another_ray_starts_quietly(monkeypatch, caplog):
    with caplog.at_level("WARNING", logger="sslab"):
        calls = start_with(monkeypatch, set())
    assert calls and not caplog.records
