"""Joining a Ray or starting a private local one: an address (``run.ray_address``, else
``RAY_ADDRESS``) is joined; without one a local Ray of this machine's CPUs starts (one more for
Ray Data when the workers fill them), workers that need more CPUs than the machine has are
refused before it starts, and a local Ray's processes find their own cluster while another runs
on the same machine (Ray Train's clean-up after a stopped trial looks it up)."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest
import ray
from ray._private import utils as ray_utils

from sslab import capacity, runner
from sslab.errors import RunError


@pytest.fixture
def ray_init(monkeypatch) -> list[dict]:
    """ray.init's calls, with Ray down and no ``RAY_ADDRESS``."""
    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return calls


@pytest.fixture
def cores(monkeypatch) -> int:
    """A machine of 4 CPUs."""
    monkeypatch.setattr(capacity, "machine_cpus", lambda: 4)
    return 4


def local(num_cpus: int) -> dict:
    return {"address": "local", "num_cpus": num_cpus, "logging_level": logging.WARNING,
            "_system_config": capacity.warm_workers(num_cpus)}


# A Ray started elsewhere on this machine first (as a notebook or another terminal's run would),
# then sslab's: inside sslab's Ray the State API, as Ray Train's placement-group cleaner calls it
# (no address), must find sslab's cluster, not guess between the two and refuse.
TWO_RAYS = textwrap.dedent("""
    import json, os, subprocess, sys
    import ray
    from ray.util.state import list_actors
    from sslab import runner

    other = subprocess.Popen([sys.executable, "-c", "import ray, sys; ray.init(address='local', num_cpus=1, include_dashboard=False); "
                              "print(ray.get_runtime_context().gcs_address, flush=True); sys.stdin.read()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    other_gcs = other.stdout.readline().strip()
    runner.start_local_ray(1)

    @ray.remote(num_cpus=0)
    class Marker:
        def actors(self):
            return [a.class_name for a in list_actors(filters=[("state", "=", "ALIVE")])]

    marker = Marker.remote()
    print(json.dumps({"other": other_gcs, "ours": ray.get_runtime_context().gcs_address,
                      "seen": ray.get(marker.actors.remote()), "driver_env": os.environ.get("RAY_ADDRESS")}))
    ray.shutdown()
    other.stdin.close()
    other.wait(60)
""")


def test_a_local_rays_processes_find_their_own_cluster_beside_another():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", TWO_RAYS], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["other"] and found["other"] != found["ours"], found
    assert "Marker" in found["seen"], found  # the State API inside sslab's Ray answered for sslab's Ray
    assert found["driver_env"] is None  # the driver's own environment is left as it was


def test_a_local_ray_starts_with_the_machines_cpus(ray_init, cores):
    runner.join_or_start_ray(None, 2, 1)
    assert ray_init == [local(4)]


def test_workers_that_fill_the_cores_get_one_more_cpu_for_ray_data(ray_init, cores):
    runner.check_local_cpus(None, 4, 1, "asked")  # as `--workers 2` fills 2 cores
    runner.join_or_start_ray(None, 4, 1)
    runner.check_local_cpus(None, 2, 2, "asked")
    runner.join_or_start_ray(None, 2, 2)
    assert ray_init == [local(5), local(5)]


@pytest.mark.parametrize("workers, cpus_per_worker, needed", [(64, 1, "64"), (1, 64, "64"), (3, 1.5, "4.5")])
def test_more_cpus_than_the_machine_has_are_refused_before_ray_starts(ray_init, cores, workers, cpus_per_worker,
                                                                      needed):
    with pytest.raises(RunError) as refused:
        runner.check_local_cpus(None, workers, cpus_per_worker, "scaling.num_workers=W x scaling.cpus_per_worker=C")
    assert str(refused.value) == (f"scaling.num_workers=W x scaling.cpus_per_worker=C needs {needed} CPUs but this "
                                  "machine has 4 (no RAY_ADDRESS or run.ray_address: sslab starts Ray on this machine)")
    assert ray_init == []


def test_a_cluster_to_join_is_judged_once_joined_not_by_this_machine(monkeypatch, ray_init, cores):
    runner.check_local_cpus("ray://head:10001", 64, 1, "asked")  # run.ray_address
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.9:6379")
    runner.check_local_cpus(None, 64, 1, "asked")
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # a Ray this process started or joined
    runner.check_local_cpus(None, 64, 1, "asked")
    assert ray_init == []


def test_this_machines_cpus_are_the_ones_ray_would_count(monkeypatch):
    assert capacity.machine_cpus() == ray_utils.get_num_cpus()
    monkeypatch.setattr(ray_utils, "_get_docker_cpus", lambda: 1.5)  # a container's CPU quota
    assert capacity.machine_cpus() == 1


def test_an_address_is_joined_and_beats_ray_address(monkeypatch, ray_init):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.9:6379")
    runner.join_or_start_ray("ray://head:10001", 2, 1)
    runner.join_or_start_ray(None, 2, 1)
    assert ray_init == [{"address": "ray://head:10001"}, {"address": "10.0.0.9:6379"}]


def test_a_running_ray_is_kept(monkeypatch, ray_init):
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    runner.join_or_start_ray("ray://head:10001", 2, 1)
    assert ray_init == []
