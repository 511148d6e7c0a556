"""A Ray cluster of several nodes on this one machine (``ray.cluster_utils.Cluster``): a head
with no CPUs, so that all work lands on two worker nodes, which tests remove and add again.
Storage is a local directory every node shares, as NFS would be on a real cluster."""
from __future__ import annotations

import logging

import pytest
import ray
from ray.cluster_utils import Cluster

from sslab import capacity, cluster

NODE_CPUS = 3  # two training workers, or one worker and Ray Data, fit on one node


class Nodes:
    """The test cluster; ``workers`` are its two CPU nodes."""

    def __init__(self, dashboard_port: int):
        # Idle workers stay warm between runs, as in the local Ray sslab starts.
        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "dashboard_port": dashboard_port, "_system_config": capacity.warm_workers(NODE_CPUS)})
        self.workers = [self.cluster.add_node(num_cpus=NODE_CPUS) for _ in range(2)]
        self.cluster.wait_for_nodes()

    def remove(self, node) -> None:
        self.cluster.remove_node(node)
        self.workers.remove(node)

    def refill(self) -> None:
        """Add nodes back until there are two worker nodes again."""
        while len(self.workers) < 2:
            self.workers.append(self.cluster.add_node(num_cpus=NODE_CPUS))
        self.cluster.wait_for_nodes()


@pytest.fixture(scope="module")
def nodes():
    if ray.is_initialized():  # another module's single-node Ray
        ray.shutdown()
    port = cluster.free_port()
    # Apart from any other Ray on the machine, as sslab's own: the nodes' processes (Ray Train's
    # placement-group cleaner) and this one (watch.train_workers) ask this cluster's State API.
    with cluster.own_state_api(port):
        n = Nodes(port)
        ray.init(address=n.cluster.address, logging_level=logging.WARNING)
        yield n
        ray.shutdown()
        n.cluster.shutdown()
