"""The Ray cluster a run or a search uses: joined (``run.ray_address``, ``RAY_ADDRESS``) or
started on this machine, and checked before anything is claimed: the workers fit the machine
or the cluster, and every node sees the run directory. The arithmetic of what fits is in
:mod:`sslab.capacity`.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from sslab import capacity, checkpoint
from sslab.config import Config
from sslab.errors import RunError

log = logging.getLogger("sslab")


def init_ray(cfg: Config) -> None:
    """Join ``run.ray_address`` (or ``RAY_ADDRESS``), or start a local Ray sized for the run."""
    s = cfg.scaling
    join_or_start_ray(cfg.run.ray_address, s.num_workers, s.cpus_per_worker,
                      simulated_gpus=s.num_workers * s.gpus_per_worker if s.simulate_gpu else 0)


def starts_local_ray(address: str | None) -> bool:
    """Whether :func:`join_or_start_ray` would start Ray on this machine: Ray is not up and
    neither ``address`` (``run.ray_address``) nor ``RAY_ADDRESS`` names one to join."""
    return not ray.is_initialized() and not (address or os.environ.get("RAY_ADDRESS"))


def check_local_cpus(address: str | None, workers: int, cpus_per_worker: float, asked: str) -> None:
    """Before Ray starts: when sslab would start Ray itself, refuse training workers that need
    more CPUs than this machine has (``asked`` names their keys and values) rather than
    oversubscribe its cores. A cluster to join is judged once joined (:func:`check_resources`)."""
    if not starts_local_ray(address):
        return
    reason = capacity.machine_shortfall(workers, cpus_per_worker)
    if reason:
        raise RunError(f"{asked} {reason} (no RAY_ADDRESS or run.ray_address: sslab starts Ray on this machine)")


def join_or_start_ray(address: str | None, workers: int, cpus_per_worker: float, simulated_gpus: float = 0) -> None:
    """Join the Ray at ``address`` (or ``RAY_ADDRESS``); without one, start a private Ray on this
    machine with all its CPUs (:func:`capacity.machine_cpus`), and one more logical CPU when
    ``workers`` training workers fill them, for Ray Data to corrupt each epoch on the fly beside
    them. Nothing when Ray is already up. Callers refuse more workers than the machine holds
    first, before anything is written (:func:`check_local_cpus`).

    ``address="local"``: without it Ray joins any cluster `ray start` left here, and refuses
    ``num_cpus`` for it. ``simulated_gpus``: GPUs the run needs though the machine has none
    (``scaling.simulate_gpu``); the local Ray declares that many, and at least one per CPU so that
    a later simulated run in the same process fits too, as ``ray start --num-gpus`` would.

    A private Ray stays apart from any other on the machine (:func:`own_state_api`)."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
        return
    needed = math.ceil(capacity.run_cpus(workers, cpus_per_worker))
    gpus = {"num_gpus": max(math.ceil(simulated_gpus), capacity.machine_cpus())} if simulated_gpus else {}
    start_local_ray(max(capacity.machine_cpus(), needed), **gpus)


def start_local_ray(num_cpus: int, **options) -> None:
    """Start a private Ray of ``num_cpus`` logical CPUs on this machine (``options``: more of
    ``ray.init``'s), apart from any other Ray here (:func:`own_state_api`), its idle worker
    processes kept warm (:func:`capacity.warm_workers`)."""
    port = free_port()
    with own_state_api(port):
        ray.init(address="local", num_cpus=num_cpus, logging_level=logging.WARNING, dashboard_port=port,
                 _system_config=capacity.warm_workers(num_cpus), **options)


@contextlib.contextmanager
def own_state_api(dashboard_port: int):
    """Point the processes of the Ray started in this block at their own dashboard for Ray's State API.

    Ray Train's placement-group cleaner asks the State API, from a process of the cluster, whether
    a run's controller still lives. Without ``RAY_API_SERVER_ADDRESS`` (or ``RAY_ADDRESS``) the
    State API finds its cluster by looking for GCS processes on the machine, and beside a second
    local Ray it fails with "Found multiple active Ray instances" (ray-project/ray#65443): a
    traceback in the log, and a stopped run's placement group never freed. Every process of the
    Ray inherits the variable from the raylet, which inherits it from this process as it starts;
    this process gets its environment back after."""
    key, before = "RAY_API_SERVER_ADDRESS", os.environ.get("RAY_API_SERVER_ADDRESS")
    os.environ[key] = f"http://127.0.0.1:{dashboard_port}"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def free_port(preferred: int | None = None) -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now: ``preferred`` when it is free, else
    one the kernel picks. sslab's own Ray takes the kernel's: a fixed one (Ray's usual 8265) would
    be free to two commands started together, and the second Ray's dashboard would fail to bind
    it (seen: a traceback, and that Ray's State API gone)."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Ray tests the port it is given
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RunError("no free TCP port on 127.0.0.1 for the local Ray's dashboard")


def use_gpu(cfg: Config) -> bool:
    """``scaling.use_gpu``, or when it is unset whether the cluster has GPUs now (always, simulated)."""
    if cfg.scaling.use_gpu is not None or cfg.scaling.simulate_gpu:
        return cfg.scaling.use_gpu or cfg.scaling.simulate_gpu
    return ray.cluster_resources().get("GPU", 0) > 0


def trains_in_process(cfg: Config, run_dir: Path, holds_cpus: bool = False) -> bool:
    """``scaling.in_process``, or when it is unset: the path that wrote the run's checkpoints
    (a resume), else this process for a 1-worker CPU run whose CPUs it can take: it holds them
    itself (``holds_cpus``: a search's trial task), or the cluster is this one machine with no
    autoscaler (a local Ray). Elsewhere the driver may sit on a head node meant to train nothing."""
    s = cfg.scaling
    if s.in_process is not None:
        return s.in_process
    written = checkpoint.trained_in_process(run_dir)
    if written is not None:
        return written
    if s.num_workers != 1 or use_gpu(cfg):
        return False
    return holds_cpus or this_machine_only()


def this_machine_only() -> bool:
    """Whether the connected Ray cluster is one fixed node, the one this process runs on."""
    kinds = capacity.node_kinds()
    alive = [n for n in ray.nodes() if n.get("Alive")]
    return (kinds is not None and len(kinds) == 1 and len(alive) == 1
            and alive[0]["NodeID"] == ray.get_runtime_context().get_node_id())


def check_resources(cfg: Config) -> None:
    """Fail fast, never hang, when the Ray cluster can never hold the run's workers.

    Each worker's bundle (``scaling.cpus_per_worker`` CPUs, and ``scaling.gpus_per_worker`` GPUs
    when it uses GPUs) must fit on one node, and the nodes together must hold
    ``scaling.num_workers`` of them, placed as ``scaling.placement_strategy`` says, with a CPU
    left for Ray Data. A fixed cluster is judged by its alive nodes, an autoscaling one by the node
    types its autoscaler publishes; an autoscaler that publishes none may add nodes the driver
    cannot see, so nothing is refused and the run logs what it waits for (:mod:`sslab.capacity`).
    """
    s, gpu = cfg.scaling, use_gpu(cfg)
    bundle = {"CPU": s.cpus_per_worker, **({"GPU": s.gpus_per_worker} if gpu else {})}
    strategy = s.placement_strategy
    kinds = capacity.node_kinds()
    if kinds is None:
        log.info("the Ray cluster autoscales: waiting for nodes with room for %d workers of %s (%s)",
                 s.num_workers, capacity.describe(bundle), strategy)
        return
    reason = capacity.shortfall(bundle, s.num_workers, kinds, strategy=strategy)
    if reason:
        what = asked(s)
        if gpu:
            what += (f" x scaling.gpus_per_worker={s.gpus_per_worker:g} "
                     f"(scaling.use_gpu={'true' if s.use_gpu else 'unset: the cluster has GPUs'})")
        if strategy != "PACK":
            what += f" with scaling.placement_strategy={strategy}"
        raise RunError(f"{what} cannot fit on the Ray cluster: {reason}")


def asked(s) -> str:
    """A run's request in its keys: ``scaling.num_workers=2 x scaling.cpus_per_worker=1``."""
    return f"scaling.num_workers={s.num_workers} x scaling.cpus_per_worker={s.cpus_per_worker:g}"


def check_shared_storage(run_dir: Path) -> None:
    """On a multi-node cluster, every node must see ``run.out`` at the same path (NFS, or a
    mounted bucket): workers on any node write its checkpoints and metrics."""
    nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
    if len(nodes) < 2:
        return
    marker = run_dir / f".sslab-shared-{os.getpid()}"
    marker.write_text("")
    try:
        seen = ray.get([sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                        .remote(str(marker)) for n in nodes])
    finally:
        marker.unlink()
    blind = [n["NodeManagerAddress"] for n, ok in zip(nodes, seen) if not ok]
    if blind:
        raise RunError(f"run.out={str(run_dir)!r} is not visible from node(s) {', '.join(blind)}: a multi-node run "
                       f"needs run.out on storage every node mounts at the same path (NFS, or a mounted bucket)")


@ray.remote(num_cpus=0)
def sees(path: str) -> bool:
    return os.path.exists(path)
