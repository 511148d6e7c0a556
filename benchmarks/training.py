"""Training: the loop's overhead against bare PyTorch, and data-parallel scaling on this machine.

Overhead: tokens per core-second of `sslab pretrain` with one worker (one thread) against a bare
PyTorch loop over the same pre-masked tensors: the same model (the objective's own, with its own
loss), batch, sequence length, steps, gradient clipping, AdamW and one thread. Goal: at least
0.95. Each side is charged every core it used, read from Linux's /proc over its timed window:
- sslab: every process of the run, all their threads: this script (Ray's driver, where
  `sslab.pretrain` runs) and every process it started: Ray's own (GCS, raylet, dashboard and its
  agents, log monitor) and their workers: the Ray Train worker (its training step, and the
  threads in it where Ray Data prefetches and collates its batches), Ray Data's tasks (masking)
  and its split coordinator, Ray Train's controller. Left out: the thread that reads /proc, and
  every process not started by this script (another user's, the OS's).
- bare loop: its own process (spawned for it, no Ray in it), all its threads
  (`time.process_time`).
The wall-clock ratio (tokens/s) is kept as a note.

Scaling: tokens/s of two workers with one thread each against one worker with one thread, the
same per-worker batch. Goal: at least 1.8x. Beside it, the machine's ceiling: a bare two-process
torch `DistributedDataParallel` job (gloo, no Ray) against the bare loop, and where the cores went
in sslab's steady window: to the workers, to the rest of the run, to processes outside it, or idle.

Throughput is steady state: from the end of the first logged window (`train.log_every` steps) to
the last one before the final evaluation, read from `metrics.jsonl`'s `wall_time` and `tokens`,
so Ray's start-up and the evaluation are left out and logging is counted. The bare loop is timed
over the same steps.

    python benchmarks/training.py [--size smoke|full] [--reps 3]
"""
from __future__ import annotations

import json
import math
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import Figure, Result, Timer, interleaved, parse_args, ratios, say, scratch  # noqa: E402

LOG_EVERY = 10
SIZES = {
    # cpu_sample_s: how often /proc is read; at smoke size often enough that its short steady window holds samples.
    "smoke": dict(preset="tiny", seq_len=32, batch_size=4, steps=3 * LOG_EVERY, docs=300, cpu_sample_s=0.05),
    "full": dict(preset="mini", seq_len=128, batch_size=16, steps=7 * LOG_EVERY, docs=4000, cpu_sample_s=1.0),
}


def run_config(size: dict, workers: int, out: str) -> dict:
    steps = size["steps"]
    return {
        "objective": {"name": "mlm"},
        "corpus": {"source": "synthetic", "synthetic": {"num_docs": size["docs"]}},
        "tokenizer": {"vocab_size": 8000, "sample_docs": 2000},
        "model": {"preset": size["preset"]},
        "train": {"seq_len": size["seq_len"], "batch_size": size["batch_size"], "max_steps": steps,
                  "warmup_steps": LOG_EVERY, "log_every": LOG_EVERY, "eval_every": steps, "checkpoint_every": steps},
        "eval": {"max_blocks": 8, "probe_docs": 0},
        "scaling": {"num_workers": workers, "cpus_per_worker": 1},
        "track": {"tensorboard": True},
        "run": {"out": out, "quiet": True},
    }


def steady_window(run_dir: Path) -> tuple[float, float, float]:
    """Tokens/s between the first logged step and the last one before the final evaluation, and
    that window's bounds (``time.time()``)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    first, last = rows[0], rows[-2]
    t0, t1 = first["wall_time"], last["wall_time"]
    return (last["tokens"] - first["tokens"]) / (t1 - t0), t0, t1


class Sample(NamedTuple):
    """One reading of /proc."""

    time: float
    run: dict[int, float]
    """CPU seconds so far of each process of the run (pid: user + system; this script's less the
    sampling thread's own)."""
    workers: frozenset[int]
    """Which of them are Ray Train workers."""
    busy: float
    """CPU seconds so far of the whole machine, busy."""
    idle: float
    """CPU seconds so far of the whole machine, idle (and waiting on I/O; steal time is neither)."""


class CpuShares:
    """Where the machine's cores went during a run, from Linux's ``/proc``, sampled every ``every_s``.

    The run is this process and every process descended from it: a local Ray started here runs all
    its processes (GCS, raylet, dashboard, Ray Train's workers and controller, Ray Data's tasks)
    below it; another Ray on the machine does not count. Used as a context manager around a run;
    :meth:`shares` then splits a window of it into the cores used by Ray Train's workers, by the
    rest of the run, by processes outside it, and left idle. Elsewhere than Linux it records nothing.
    """

    TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __init__(self, every_s: float = 1.0):
        self.every_s, self.samples = every_s, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "CpuShares":
        if Path("/proc/stat").exists():
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    @classmethod
    def sample(cls, leave_out_thread: int | None = None) -> Sample:
        """Read /proc now; ``leave_out_thread``: a thread of this process whose CPU is not the run's."""
        parent, cpu = {}, {}
        for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
            try:
                parent[pid], cpu[pid] = cls._stat(f"/proc/{pid}/stat")
            except OSError:  # gone meanwhile
                continue
        run = {pid: cpu[pid] for pid in descendants(os.getpid(), parent)}
        if leave_out_thread is not None:
            run[os.getpid()] -= cls._stat(f"/proc/self/task/{leave_out_thread}/stat")[1]
        workers = frozenset(pid for pid in run if is_train_worker(pid))
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        user, nice, system, idle, iowait, irq, softirq = fields[:7]  # then steal: the hypervisor's, neither
        return Sample(time.time(), run, workers, (user + nice + system + irq + softirq) / cls.TICK,
                      (idle + iowait) / cls.TICK)

    @classmethod
    def _stat(cls, path: str) -> tuple[int, float]:
        """(parent pid, CPU seconds so far) of a process or thread."""
        text = Path(path).read_text()
        fields = text[text.rindex(")") + 2:].split()
        return int(fields[1]), (int(fields[11]) + int(fields[12])) / cls.TICK  # ppid; utime + stime

    def _run(self) -> None:
        me = threading.get_native_id()
        while not self._stop.is_set():
            self.samples.append(self.sample(leave_out_thread=me))
            self._stop.wait(self.every_s)

    def shares(self, t0: float, t1: float) -> dict[str, float] | None:
        """Cores used from ``t0`` to ``t1`` (the samples just inside): by Ray Train's workers
        (``workers``), by the rest of the run (``rest``), by both (``run``), by every process outside
        the run (``outside``), and left ``idle``; ``None`` when the window holds fewer than two samples.

        A process counts from the first sample (or its start, if later) to the last sample that saw it.
        """
        inside = [s for s in self.samples if t0 <= s.time <= t1]
        if len(inside) < 2:
            return None
        first, last = inside[0], inside[-1]
        seconds = last.time - first.time
        latest, workers = {}, set()
        for s in inside:
            latest.update(s.run)
            workers |= s.workers
        used = {pid: cpu - first.run.get(pid, 0.0) for pid, cpu in latest.items()}
        on_workers = sum(cpu for pid, cpu in used.items() if pid in workers) / seconds
        on_run = sum(used.values()) / seconds
        return {"workers": on_workers, "rest": on_run - on_workers, "run": on_run,
                "outside": (last.busy - first.busy) / seconds - on_run, "idle": (last.idle - first.idle) / seconds}


def descendants(root: int, parent: dict[int, int]) -> set[int]:
    """``root`` and every process below it, from a pid -> parent pid map."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += children.get(pid, [])
    return found


def is_train_worker(pid: int) -> bool:
    try:
        return b"RayTrainWorker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def pre_masked(size: dict):
    """The run's config, its objective and the corpus as pre-masked blocks (numpy), built in-process."""
    from sslab import pipeline
    from sslab.config import SyntheticConfig, TokenizerConfig, build
    from sslab.objectives import get
    from sslab.rng import RowRandom
    from sslab.synthetic import generate
    from sslab.tokenizer import train_tokenizer, vocab_of

    cfg = build(run_config(size, 1, "unused"))
    texts = generate(SyntheticConfig(num_docs=size["docs"]), 0, size["docs"])["text"]
    tok = train_tokenizer(TokenizerConfig(sample_docs=2000), texts[:2000], cfg.model.max_positions)
    vocab = vocab_of(tok)
    objective = get("mlm")(cfg.objective, vocab)
    table = pipeline.Tokenize(tok.backend_tokenizer.to_str(), cfg.train.seq_len, vocab.cls_id, vocab.sep_id)(
        {"text": np.array(texts, dtype=object)})
    blocks = np.stack(table.column("input_ids").to_numpy(zero_copy_only=False))
    masked = objective.transform({"input_ids": blocks}, RowRandom(0, 0, table.column("row_id").to_numpy()))
    return cfg, objective, masked


def bare_loop(size: dict, rank: int = 0, world: int = 1, port: int = 0) -> tuple[float, float]:
    """Plain PyTorch over pre-masked tensors: forward, loss, backward, clip, AdamW, zero_grad.

    With ``world`` > 1 this is one rank of a bare `DistributedDataParallel` job over gloo (the
    ceiling for scaling on this machine). Returns the job's tokens/s (this rank's times ``world``)
    and the cores this process used meanwhile (every thread of it).
    """
    torch.set_num_threads(1)
    cfg, objective, masked = pre_masked(size)
    n, bs, steps = len(masked["input_ids"]), size["batch_size"], size["steps"]
    starts = [((i * world + rank) * bs) % max(1, n - bs) for i in range(steps)]
    batches = [{k: torch.from_numpy(v[s:s + bs]) for k, v in masked.items()} for s in starts]
    torch.manual_seed(0)
    model = objective.build_model(cfg.model)
    model.train()
    if world > 1:
        torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                             world_size=world)
        model = torch.nn.parallel.DistributedDataParallel(model, gradient_as_bucket_view=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    tokens, start, cpu = 0, None, None
    for i, batch in enumerate(batches[:steps - LOG_EVERY]):  # the steps the sslab figure is read over
        if i == LOG_EVERY:
            tokens, start, cpu = 0, time.perf_counter(), time.process_time()
        loss, _ = objective.loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += batch["input_ids"].numel() * world
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    if world > 1:
        torch.distributed.destroy_process_group()
    return tokens / seconds, cpu / seconds


def _bare_rank(rank: int, size: dict, world: int, port: int, results) -> None:
    results.put((rank, bare_loop(size, rank, world, port)))


def bare(size: dict, world: int = 1) -> tuple[float, float]:
    """The bare loop in ``world`` fresh processes (no Ray in them): rank 0's (tokens/s of the job,
    cores rank 0's process used)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    procs = [ctx.Process(target=_bare_rank, args=(r, size, world, port, results)) for r in range(world)]
    for p in procs:
        p.start()
    got = dict(results.get() for _ in procs)
    for p in procs:
        p.join()
    return got[0]


OVERHEAD = "training overhead: sslab pretrain (1 worker) / bare PyTorch loop, tokens per core-second"
OVERHEAD_NOTE = ("cores counted over each side's timed window, from /proc: sslab, every process of the run, all "
                 "threads (the driver, Ray's own processes, the Ray Train worker with its Ray Data prefetch and "
                 "collate threads, Ray Data's tasks and split coordinator, Ray Train's controller); bare loop, "
                 "its own process, all threads")


def cores_note(workers: int, seen: list[dict[str, float]]) -> str:
    median = {k: statistics.median(s[k] for s in seen) for k in seen[0]}
    return (f"cores in the steady window of sslab with {workers} worker{'s' * (workers > 1)} (median of {len(seen)}, "
            f"of {os.cpu_count()}): {median['workers'] / workers:.3f} per worker, {median['rest']:.3f} the rest of "
            f"the run (driver, Ray's own processes, Ray Data's tasks, Train's controller), {median['outside']:.3f} "
            f"processes outside the run, {median['idle']:.3f} idle")


def per_core(tokens_per_s: list[float], cores: list[float]) -> list[float]:
    return [t / c for t, c in zip(tokens_per_s, cores)]


def main() -> None:
    args = parse_args(__doc__)
    size = SIZES[args.size]
    torch.set_num_threads(1)
    import ray

    import sslab
    from sslab import capacity

    # Two one-CPU workers and Ray Data's CPUs, as `sslab pretrain` sizes a local Ray for them
    # (with its dashboard, as a user's run has: Ray Train's placement-group cleaner queries it).
    ray.init(address="local", num_cpus=math.ceil(capacity.run_cpus(workers=2, cpus_per_worker=1)),
             logging_level="WARNING")
    result = Result(__file__, "Training: loop overhead against bare PyTorch; data-parallel scaling", args.size,
                    args.reps, params={**size, "objective": "mlm", "threads_per_worker": 1, "log_every": LOG_EVERY})
    with scratch("train") as tmp, Timer() as wall:
        counter = iter(range(10**6))
        cores: dict[int, list[dict[str, float]]] = {1: [], 2: []}
        bare_cores: list[float] = []

        def sslab_run(workers: int):
            def measure() -> float:
                out = Path(tmp) / f"w{workers}_{next(counter)}"
                with CpuShares(size["cpu_sample_s"]) as cpu:
                    sslab.pretrain(run_config(size, workers, str(out)))
                tokens_per_s, t0, t1 = steady_window(out)
                if (shares := cpu.shares(t0, t1)) is not None:
                    cores[workers].append(shares)
                return tokens_per_s
            return measure

        def bare_one() -> float:
            tokens_per_s, used = bare(size)
            bare_cores.append(used)
            return tokens_per_s

        say(f"{size['preset']} model, seq {size['seq_len']}, batch {size['batch_size']} per worker, {size['steps']} steps")
        got = interleaved({"bare PyTorch": bare_one, "bare DDP 2 processes": lambda: bare(size, world=2)[0],
                           "sslab 1 worker": sslab_run(1), "sslab 2 workers": sslab_run(2)}, args.reps)
        ddp = ratios(got["bare DDP 2 processes"], got["bare PyTorch"])
        wall_clock = ratios(got["sslab 1 worker"], got["bare PyTorch"])
        result.notes += [
            f"the machine's ceiling: bare torch DDP (2 processes, gloo, no Ray) scales "
            f"{statistics.median(ddp):.3g}x over the bare loop (per repetition: {', '.join(f'{x:.3g}' for x in ddp)})",
            f"wall clock, sslab 1 worker / bare loop (tokens/s): {statistics.median(wall_clock):.3g} (per repetition: "
            f"{', '.join(f'{x:.3g}' for x in wall_clock)}); the bare loop's process used "
            f"{statistics.median(bare_cores):.3f} cores"]
        result.notes += [cores_note(workers, seen) for workers, seen in cores.items() if seen]
        if len(cores[1]) == args.reps:
            ours = per_core(got["sslab 1 worker"], [c["run"] for c in cores[1]])
            theirs = per_core(got["bare PyTorch"], bare_cores)
            result.figures.append(Figure(OVERHEAD, ratios(ours, theirs), 0.95, ours, theirs, "tokens/core-s",
                                         "sslab 1 worker", "bare PyTorch", note=OVERHEAD_NOTE))
        else:
            result.notes.append("tokens per core-second not measured: no /proc here, or a steady window too short "
                                "to hold two samples of it (lower cpu_sample_s)")
        result.figures.append(Figure.compare("data-parallel scaling: 2 workers / 1 worker (1 thread each)", got,
                                             "sslab 2 workers", "sslab 1 worker", 1.8, "tokens/s"))
    result.wall_s = wall.seconds
    result.save(args.out)


if __name__ == "__main__":
    main()
