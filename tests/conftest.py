"""One local Ray cluster for every test that needs one (unit and integration alike)."""
from __future__ import annotations

import logging

import pytest
import ray


@pytest.fixture(scope="session")
def ray_cluster():
    # More logical CPUs than cores: Ray Data must corrupt batches beside two training workers.
    ray.init(num_cpus=4, logging_level=logging.WARNING)
    yield
    ray.shutdown()
