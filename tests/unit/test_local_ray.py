"""Joining a Ray or starting a private local one: an address (``run.ray_address``, else
``RAY_ADDRESS``) is joined; without one a local Ray of this machine's CPUs starts (one more for
Ray Data when the workers fill them), workers that need more CPUs than the machine has are
refused before it starts, and the Ray it starts stays apart from any other on the machine: its
processes find their own cluster's State API (Ray Train's clean-up after a stopped run cannot
tell two local Rays apart by itself)."""
from __future__ import annotations

import logging
import os

import pytest
import ray
from ray._private import utils as ray_utils

from sslab import capacity, cluster
from sslab.errors import RunError


@pytest.fixture
def ray_init(monkeypatch) -> list[dict]:
    """ray.init's calls, with Ray down and no ``RAY_ADDRESS``; each with the ``RAY_API_SERVER_ADDRESS``
    the Ray it starts would inherit (under ``"env"``), and a dashboard port of 8300."""
    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(
        {**kwargs, **({"env": os.environ.get("RAY_API_SERVER_ADDRESS")} if kwargs["address"] == "local" else {})}))
    monkeypatch.setattr(cluster, "free_port", lambda: 8300)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    return calls


@pytest.fixture
def cores(monkeypatch) -> int:
    """A machine of 4 CPUs."""
    monkeypatch.setattr(capacity, "machine_cpus", lambda: 4)
    return 4


def local(num_cpus: int) -> dict:
    return {"address": "local", "num_cpus": num_cpus, "logging_level": logging.WARNING, "dashboard_port": 8300,
            "_system_config": capacity.warm_workers(num_cpus), "env": "http://127.0.0.1:8300"}


def test_a_private_ray_finds_its_own_state_api_and_this_process_keeps_its_environment(ray_init, cores):
    cluster.join_or_start_ray(None, 2, 1)
    assert ray_init == [local(4)]  # its processes inherit the address of its own dashboard
    assert "RAY_API_SERVER_ADDRESS" not in os.environ


def test_the_dashboard_gets_rays_usual_port_when_it_is_free_and_another_when_it_is_taken():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        port = cluster.free_port(preferred=busy)
        assert port != busy
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free
    assert cluster.free_port(preferred=port) == port


def test_workers_that_fill_the_cores_get_one_more_cpu_for_ray_data(ray_init, cores):
    cluster.check_local_cpus(None, 4, 1, "asked")  # as `--workers 2` fills 2 cores
    cluster.join_or_start_ray(None, 4, 1)
    cluster.check_local_cpus(None, 2, 2, "asked")
    cluster.join_or_start_ray(None, 2, 2)
    assert ray_init == [local(5), local(5)]


@pytest.mark.parametrize("workers, cpus_per_worker, needed", [(64, 1, "64"), (1, 64, "64"), (3, 1.5, "4.5")])
def test_more_cpus_than_the_machine_has_are_refused_before_ray_starts(ray_init, cores, workers, cpus_per_worker,
                                                                      needed):
    with pytest.raises(RunError) as refused:
        cluster.check_local_cpus(None, workers, cpus_per_worker, "scaling.num_workers=W x scaling.cpus_per_worker=C")
    assert str(refused.value) == (f"scaling.num_workers=W x scaling.cpus_per_worker=C needs {needed} CPUs but this "
                                  "machine has 4 (no RAY_ADDRESS or run.ray_address: sslab starts Ray on this machine)")
    assert ray_init == []


def test_a_cluster_to_join_is_judged_once_joined_not_by_this_machine(monkeypatch, ray_init, cores):
    cluster.check_local_cpus("ray://head:10001", 64, 1, "asked")  # run.ray_address
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.9:6379")
    cluster.check_local_cpus(None, 64, 1, "asked")
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # a Ray this process started or joined
    cluster.check_local_cpus(None, 64, 1, "asked")
    assert ray_init == []


def test_this_machines_cpus_are_the_ones_ray_would_count(monkeypatch):
    assert capacity.machine_cpus() == ray_utils.get_num_cpus()
    monkeypatch.setattr(ray_utils, "_get_docker_cpus", lambda: 1.5)  # a container's CPU quota
    assert capacity.machine_cpus() == 1


def test_an_address_is_joined_and_beats_ray_address(monkeypatch, ray_init):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.9:6379")
    cluster.join_or_start_ray("ray://head:10001", 2, 1)
    cluster.join_or_start_ray(None, 2, 1)
    assert ray_init == [{"address": "ray://head:10001"}, {"address": "10.0.0.9:6379"}]


def test_a_running_ray_is_kept(monkeypatch, ray_init):
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    cluster.join_or_start_ray("ray://head:10001", 2, 1)
    assert ray_init == []
