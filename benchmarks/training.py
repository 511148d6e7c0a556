"""Training: the loop's overhead against bare PyTorch, and data-parallel scaling on this machine.

Overhead: tokens/s of `sslab pretrain` with one worker (one thread) against a bare PyTorch loop
in one process over the same pre-masked tensors: the same model (the objective's own, with its
own loss), batch, sequence length, steps, gradient clipping, AdamW and one thread. Goal: at
least 0.95.

Scaling: two workers with one thread each against one worker with one thread, the same
per-worker batch. Goal: at least 1.8x. Beside it, the machine's ceiling: a bare two-process torch
`DistributedDataParallel` job (gloo, no Ray) against the bare loop, and where the cores went in
sslab's steady window: to the workers, to every other process (Ray's own among them), or idle.

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


class CpuShares:
    """Where the machine's cores went during a run, from Linux's ``/proc``, sampled every ``every_s``.

    Used as a context manager around a run; :meth:`shares` then splits a window of it into the
    cores used by Ray Train's workers (``ray::RayTrainWorker``), by every other process (Ray's
    own, this script's, the OS's) and left idle. Elsewhere than Linux it records nothing.
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
    def sample(cls) -> tuple[float, float, float, float]:
        """(time, and so far: CPU seconds of the train workers, of the whole machine, idle)."""
        workers = 0
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if b"RayTrainWorker" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                    continue
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:  # gone meanwhile
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            workers += int(fields[11]) + int(fields[12])  # utime, stime
        cpu = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        user, nice, system, idle, iowait, irq, softirq = cpu[:7]  # then steal: the hypervisor's, neither
        return (time.time(), workers / cls.TICK, (user + nice + system + irq + softirq) / cls.TICK,
                (idle + iowait) / cls.TICK)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.sample())
            self._stop.wait(self.every_s)

    def shares(self, t0: float, t1: float) -> dict[str, float] | None:
        """Cores used from ``t0`` to ``t1`` (the samples just inside): by the workers, by every other
        process, idle; ``None`` when the window is too short to hold two samples."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2:
            return None
        (a_t, a_w, a_busy, a_idle), (b_t, b_w, b_busy, b_idle) = inside[0], inside[-1]
        seconds = b_t - a_t
        workers, busy = (b_w - a_w) / seconds, (b_busy - a_busy) / seconds
        return {"workers": workers, "other": busy - workers, "idle": (b_idle - a_idle) / seconds}


def pre_masked(size: dict):
    """The run's config, its objective and the corpus as pre-masked blocks (numpy), built in-process."""
    from sslab import pipeline
    from sslab.config import SyntheticConfig, TokenizerConfig, build
    from sslab.objectives import get
    from sslab.objectives.base import RowRandom
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


def bare_loop(size: dict, rank: int = 0, world: int = 1, port: int = 0) -> float:
    """Plain PyTorch over pre-masked tensors: forward, loss, backward, clip, AdamW, zero_grad.

    With ``world`` > 1 this is one rank of a bare `DistributedDataParallel` job over gloo (the
    ceiling for scaling on this machine); returns the job's tokens/s (this rank's times ``world``).
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
    tokens, start = 0, None
    for i, batch in enumerate(batches[:steps - LOG_EVERY]):  # the steps the sslab figure is read over
        if i == LOG_EVERY:
            tokens, start = 0, time.perf_counter()
        loss, _ = objective.loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += batch["input_ids"].numel() * world
    seconds = time.perf_counter() - start
    if world > 1:
        torch.distributed.destroy_process_group()
    return tokens / seconds


def _ddp_rank(rank: int, size: dict, world: int, port: int, results) -> None:
    results.put((rank, bare_loop(size, rank, world, port)))


def bare_ddp(size: dict, world: int = 2) -> float:
    """Tokens/s of a bare two-process DDP job (rank 0's figure)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    procs = [ctx.Process(target=_ddp_rank, args=(r, size, world, port, results)) for r in range(world)]
    for p in procs:
        p.start()
    got = dict(results.get() for _ in procs)
    for p in procs:
        p.join()
    return got[0]


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

        say(f"{size['preset']} model, seq {size['seq_len']}, batch {size['batch_size']} per worker, {size['steps']} steps")
        got = interleaved({"bare PyTorch": lambda: bare_loop(size), "bare DDP 2 processes": lambda: bare_ddp(size),
                           "sslab 1 worker": sslab_run(1), "sslab 2 workers": sslab_run(2)}, args.reps)
        ddp = ratios(got["bare DDP 2 processes"], got["bare PyTorch"])
        result.notes.append(
            f"the machine's ceiling: bare torch DDP (2 processes, gloo, no Ray) scales "
            f"{statistics.median(ddp):.3g}x over the bare loop (per repetition: {', '.join(f'{x:.3g}' for x in ddp)})")
        for workers, seen in cores.items():
            if seen:
                median = {k: statistics.median(s[k] for s in seen) for k in seen[0]}
                result.notes.append(
                    f"cores in the steady window of sslab with {workers} worker{'s' * (workers > 1)} (median of "
                    f"{len(seen)}, of {os.cpu_count()}): {median['workers'] / workers:.3f} per worker, "
                    f"{median['other']:.3f} every other process (Ray's own, this script's, the OS's), "
                    f"{median['idle']:.3f} idle")
        result.figures += [
            Figure.compare("training overhead: sslab pretrain (1 worker) / bare PyTorch loop", got, "sslab 1 worker",
                           "bare PyTorch", 0.95, "tokens/s"),
            Figure.compare("data-parallel scaling: 2 workers / 1 worker (1 thread each)", got, "sslab 2 workers",
                           "sslab 1 worker", 1.8, "tokens/s"),
        ]
    result.wall_s = wall.seconds
    result.save(args.out)


if __name__ == "__main__":
    main()
