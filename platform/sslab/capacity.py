"""Whether a Ray cluster can ever hold a run's workers, so that a run that cannot start says so.

Ray Train reserves one bundle per worker (``{"CPU": cpus_per_worker, "GPU": gpus_per_worker}``),
each on a single node, and waits for them without limit; Ray Data needs a CPU beside them to
corrupt every epoch. A request the cluster can never satisfy would hang, so :func:`shortfall`
compares it with what the cluster can hold at most, which :func:`node_kinds` reads:

- A fixed cluster (no autoscaler; its monitor runs read-only and names each node ``node_<id>``)
  holds what its alive nodes hold (``ray.nodes()``): their totals, not what is free now, since
  another job's workers finish.
- An autoscaler that publishes its node types in the GCS (the cluster config Ray Train V2's own
  pre-check and Ray Data's autoscaler read) can start each type up to its ``max_count``.
- An autoscaler that does not publish them (Ray 2.60's ``ray up`` and KubeRay autoscalers) may
  start nodes the driver cannot see in advance: judging by the current nodes would refuse runs
  it can serve, so nothing is refused and the run says what it waits for.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import ray

SPARE_CPUS = 1.0  # what Ray Data needs beside the training workers


def run_cpus(workers: int, cpus_per_worker: float) -> float:
    """CPUs one run needs: its training workers' and Ray Data's beside them."""
    return workers * cpus_per_worker + SPARE_CPUS


def machine_cpus() -> int:
    """The CPUs a Ray started on this machine would count: its cores, or fewer where a container's
    CPU quota or cpuset limits this process (Ray's own rule, ``ray._private.utils.get_num_cpus``)."""
    try:
        from ray._private.utils import get_num_cpus  # private: without it, count the cores

        return max(1, int(get_num_cpus(override_docker_cpu_warning=True)))
    except Exception:
        return os.cpu_count() or 1


def warm_workers(num_cpus: int) -> dict:
    """Ray system config that keeps idle worker processes warm for the next task (``ray.init(_system_config=…)``).

    Ray kills an idle worker after a second once the node runs more worker processes than
    ``num_workers_soft_limit`` (by default, its CPU count), and it counts the processes held by
    actors too. A Ray Train run holds about seven (its controller, workers, dataset manager and
    split coordinators), so with the default every Ray Data task of the next pass (sampling,
    counting, each epoch's stream) started a fresh Python that spent ~8 s importing torch and
    transformers for sslab's objectives: on 2 cores, half of a tiny run's wall time. Room for the
    actors of a few concurrent runs beside one task worker per CPU keeps them warm. Each idle
    worker that has imported sslab's objectives holds ~0.5 GB (measured), and Ray starts no
    worker for being allowed to: only those a pass needed stay."""
    return {"num_workers_soft_limit": num_cpus + 24}


def machine_shortfall(workers: int, cpus_per_worker: float) -> str | None:
    """Why ``workers`` training workers of ``cpus_per_worker`` CPUs cannot run on this machine
    alone, or None if they can. Ray Data's CPU may be the one more logical CPU the local Ray
    starts with: it corrupts batches while the workers wait on I/O and reports."""
    needed, cores = workers * cpus_per_worker, machine_cpus()
    if needed <= cores + 1e-9:
        return None
    return f"needs {needed:g} CPUs but this machine has {cores}"


@dataclass(frozen=True)
class NodeKind:
    """Nodes of one shape: the resources each has, and how many there can be (``math.inf``: no limit)."""

    resources: dict
    count: float = 1


def describe(resources: dict) -> str:
    """``{"CPU": 4, "GPU": 1}`` as ``4 CPUs and 1 GPU``."""
    return " and ".join(f"{v:g} {k}" + ("" if v == 1 else "s") for k, v in resources.items())


def per_node(resources: dict, bundle: dict) -> int:
    """How many ``bundle``s one node with ``resources`` holds."""
    return min(int(resources.get(k, 0) / v + 1e-9) for k, v in bundle.items() if v > 0)


def shortfall(bundle: dict, workers: int, kinds: list[NodeKind], spare_cpus: float = SPARE_CPUS,
              strategy: str = "PACK") -> str | None:
    """Why ``workers`` bundles placed by ``strategy`` (Ray's placement strategies) and ``spare_cpus``
    more CPUs can never fit on ``kinds``, or None if they can."""
    kinds = [k for k in kinds if k.count > 0]
    fits = [per_node(k.resources, bundle) for k in kinds]
    if not any(fits):
        most = {r: max((k.resources.get(r, 0) for k in kinds), default=0) for r in bundle}
        return f"no node has {describe(bundle)} for one worker (the most any node has: {describe(most)})"
    if strategy == "STRICT_PACK":  # every worker on one node
        room = max(fits)
    elif strategy == "STRICT_SPREAD":  # every worker on a node of its own
        room = sum(k.count * min(n, 1) for k, n in zip(kinds, fits))
    else:
        room = sum(k.count * n for k, n in zip(kinds, fits))
    cpus = sum(k.count * k.resources.get("CPU", 0) for k in kinds)
    if not math.isinf(cpus):
        room = min(room, math.floor((cpus - spare_cpus) / bundle["CPU"] + 1e-9))
    if room >= workers:
        return None
    total = {r: sum(k.count * k.resources.get(r, 0) for k in kinds) for r in bundle}
    return (f"its {sum(k.count for k in kinds):g} node(s) with {describe(total)} in all hold at most "
            f"{max(room, 0):g} such workers{'' if strategy == 'PACK' else ' placed ' + strategy} "
            f"beside {describe({'CPU': spare_cpus})} for Ray Data")


def node_kinds() -> list[NodeKind] | None:
    """What the connected cluster can hold at most; None when an autoscaler may add nodes of kinds
    the driver cannot see (see the module's docstring)."""
    published = published_node_types()
    if published:
        return published
    if autoscaler_running():
        return None
    return [NodeKind(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def published_node_types() -> list[NodeKind]:
    """The node types an autoscaler published in the GCS, each up to its ``max_count``."""
    try:
        from ray._private.state import state  # what Ray Train V2 reads for the same check

        config = state.get_cluster_config()
    except Exception:  # a private API: without it, judge by the nodes
        return []
    groups = config.node_group_configs if config else []
    return [NodeKind(dict(g.resources), math.inf if g.max_count == -1 else g.max_count) for g in groups]


def autoscaler_running() -> bool:
    """Whether an autoscaler manages the cluster: its monitor's report names node types from a
    cluster config, where a fixed cluster's read-only monitor names each node ``node_<id>``."""
    try:
        from ray.autoscaler.v2.utils import is_autoscaler_v2

        if is_autoscaler_v2():
            from ray.autoscaler.v2.sdk import get_cluster_status

            status = get_cluster_status(ray.get_runtime_context().gcs_address)
            types = {n.node_id: n.ray_node_type_name for n in status.active_nodes + status.idle_nodes}
        else:
            from ray._private.ray_constants import DEBUG_AUTOSCALING_STATUS
            from ray.experimental.internal_kv import _internal_kv_get

            raw = _internal_kv_get(DEBUG_AUTOSCALING_STATUS)
            types = json.loads(raw)["autoscaler_report"]["node_type_mapping"] if raw else {}
    except Exception:  # private APIs: without them, judge by the nodes
        return False
    return any(kind != f"node_{node}" for node, kind in (types or {}).items())
