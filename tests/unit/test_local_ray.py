"""Joining a Ray or starting a private local one: an address (``run.ray_address``, else
``RAY_ADDRESS``) is joined; without one a local Ray starts, sized for the run, and another Ray
on the same machine is named before it can stall a search (Ray Train's clean-up after a stopped
trial cannot tell two local Rays apart)."""
from __future__ import annotations

import logging
import os

import pytest
import ray
from ray._private import services

from sslab import runner


@pytest.fixture
def ray_init(monkeypatch) -> list[dict]:
    """ray.init's calls, with Ray down, no ``RAY_ADDRESS`` and no other Ray on this machine."""
    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    running_here(monkeypatch, set())
    return calls


def running_here(monkeypatch, addresses: set[str]) -> None:
    def find():
        return addresses
    find.cache_clear = lambda: None
    monkeypatch.setattr(services, "find_gcs_addresses", find)


def local(num_cpus: int) -> dict:
    return {"address": "local", "num_cpus": max(os.cpu_count() or 1, num_cpus), "logging_level": logging.WARNING}


def test_another_local_ray_is_named_with_what_to_do(monkeypatch, caplog, ray_init):
    running_here(monkeypatch, {"10.0.0.5:6379"})
    with caplog.at_level("WARNING", logger="sslab"):
        runner.join_or_start_ray(None, 2, 1)
    assert ray_init == [local(3)]
    message = caplog.records[-1].getMessage()
    assert "10.0.0.5:6379" in message and "may stall" in message and "RAY_ADDRESS" in message, message


def test_a_machine_without_another_ray_starts_quietly(caplog, ray_init):
    with caplog.at_level("WARNING", logger="sslab"):
        runner.join_or_start_ray(None, 2, 1)
    assert ray_init == [local(3)] and not caplog.records


def test_a_local_ray_holds_the_run_even_beyond_this_machines_cores(ray_init):
    runner.join_or_start_ray(None, 333, 3)
    assert ray_init == [local(1000)] and ray_init[0]["num_cpus"] == 1000


def test_an_address_is_joined_and_beats_ray_address(monkeypatch, ray_init):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.9:6379")
    runner.join_or_start_ray("ray://head:10001", 2, 1)
    runner.join_or_start_ray(None, 2, 1)
    assert ray_init == [{"address": "ray://head:10001"}, {"address": "10.0.0.9:6379"}]


def test_a_running_ray_is_kept(monkeypatch, ray_init):
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    runner.join_or_start_ray("ray://head:10001", 2, 1)
    assert ray_init == []
