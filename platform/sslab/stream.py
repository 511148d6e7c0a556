"""Training rows streamed from prepared shards: a seeded order, new each epoch, each worker its own
rows, and a start at any position without reading what comes before it.

An epoch's order (:meth:`Stream.windows`) is a permutation of the shards (``data.shuffle=global``)
cut into windows of at least ``data.shuffle_window`` rows, each window's rows permuted in turn
(MosaicML Streaming's shard-and-block shuffle, `py1b`); ``window`` keeps the shards in corpus
order and mixes only within a window; ``none`` reads the corpus as it is. Both permutations are
drawn from (seed, epoch, window), so they are the same in every run and on every resume.

Row ``p`` of an epoch's order goes to worker ``p % world``; the last ``N % world`` positions sit
out that epoch (a different set each epoch), so each worker trains on ``N // world`` rows per
epoch. A worker's stream is therefore a pure function of its position in it: a resume at step
``s`` starts at row ``s * batch_size * grad_accum`` of its own stream, which names an epoch, a
window and a row within it. The windows before it are never read, so the restart costs the
same at step 10 and at step 10,000 (DESIGN.md: "Resume in O(1)").

Each window is read, permuted, filtered to the worker's rows and corrupted in one Ray Data task,
in chunks of :data:`CHUNK` rows whose boundaries do not depend on where the stream started: an
objective that looks across a batch (NSP pairs a row with another row's segment) draws the same
corruption on a resume as in the uninterrupted run.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray.data

from sslab import pipeline
from sslab.objectives.base import Objective
from sslab.prepared import Shard, filesystem

READERS = 1
"""Windows a worker reads at once. Each holds a window in memory (``data.shuffle_window`` rows) and
runs ahead of training as far as Ray Data's buffers let it: with more, a short run on a small
corpus (one window an epoch) corrupted several epochs it never trained on, on the training
worker's cores (measured: the simulated-GPU tests took 327 s with 4, 230 s with 1). MLM's masking
ran at 3.05 M tokens/s per data CPU (RESULTS.md, data (b), measured before the prepared shards),
beyond the 456,000 tokens/s BERT-base trained at on an H200."""
CHUNK = pipeline.CORRUPT_BATCH
"""Rows corrupted per call; a resumed stream cuts its chunks where the uninterrupted one did."""
ORDER_STREAM = 0x5EED_0DE5
"""Keeps the order's random stream apart from any other drawn from the same seed."""


@dataclass(frozen=True)
class Window:
    """Consecutive rows of an epoch's order: the rows of ``shards``, permuted."""

    index: int
    shards: tuple[int, ...]
    start: int
    """Position of its first row in the epoch's order."""
    rows: int


@dataclass(frozen=True)
class Stream:
    """The training split of a prepared entry and the order to read it in (typed, picklable:
    it travels to the workers in their plan)."""

    root: str
    """The entry's directory or URI; shard paths are relative to it."""
    shards: tuple[Shard, ...]
    shuffle: str
    window: int
    seed: int
    opened: tuple[pafs.FileSystem, str] | None = field(default=None, compare=False, repr=False)
    """The filesystem holding ``root`` and its path there, opened by the driver (None: opened
    where read). An S3 one carries the driver's endpoint and keys to the workers, whose
    environment may lack them."""

    def open(self) -> tuple[pafs.FileSystem, str]:
        """The filesystem holding the shards and the entry's path there."""
        return self.opened or filesystem(self.root)

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)

    def rows_per_worker(self, world: int) -> int:
        """Rows each of ``world`` workers trains on per epoch."""
        return self.rows // world

    def windows(self, epoch: int) -> list[Window]:
        """Epoch ``epoch``'s order, as windows."""
        rng = np.random.default_rng([self.seed, epoch, ORDER_STREAM])
        order = rng.permutation(len(self.shards)) if self.shuffle == "global" else np.arange(len(self.shards))
        out, group, rows, start = [], [], 0, 0
        limit = 1 if self.shuffle == "none" else self.window
        for i in order.tolist():
            group.append(i)
            rows += self.shards[i].rows
            if rows >= limit:
                out.append(Window(len(out), tuple(group), start, rows))
                start, group, rows = start + rows, [], 0
        if group:
            out.append(Window(len(out), tuple(group), start, rows))
        return out

    def row_order(self, epoch: int, window: Window) -> np.ndarray:
        """The order of ``window``'s rows (indices into its shards' rows, read in order)."""
        if self.shuffle == "none":
            return np.arange(window.rows)
        return np.random.default_rng([self.seed, epoch, ORDER_STREAM, window.index + 1]).permutation(window.rows)

    def tasks(self, rank: int, world: int, start: int, stop: int) -> list[dict]:
        """The windows that hold rows ``start``..``stop - 1`` of worker ``rank``'s stream (counted
        across epochs), in order, each with the position its reading starts at: one read task each."""
        per_worker = self.rows_per_worker(world)
        if per_worker == 0:
            raise ValueError(f"{self.rows} training rows cannot feed {world} workers")
        tasks = []
        for epoch in range(start // per_worker, -(-stop // per_worker)):
            # Where this worker's rows start in the epoch's order: at its first, or at the resume point.
            first = (start - epoch * per_worker) * world + rank if epoch == start // per_worker else rank
            last = (stop - epoch * per_worker) * world  # past this worker's last row
            for w in self.windows(epoch):
                if w.start + w.rows <= first:
                    continue  # before the resume point: never read
                if w.start >= last:
                    break
                tasks.append({"epoch": epoch, "index": w.index, "start": w.start, "first": first,
                              "files": [self.shards[i].path for i in w.shards]})
        return tasks

    def dataset(self, objective: Objective, rank: int, world: int, start: int, stop: int,
                rows_per_step: int = 1) -> ray.data.Dataset:
        """Rows ``start``..``stop - 1`` of worker ``rank``'s stream (counted across epochs), read
        from the shards and corrupted by ``objective``, as a Ray Dataset. It may run past ``stop``
        to the end of the window that holds it. Each row is corrupted knowing the share of
        training done at the step that trains on it (``rows_per_step`` rows a step, ``stop``
        the last step's end): a mask-rate schedule's input."""
        tasks = self.tasks(rank, world, start, stop)
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        items = ray.data.from_items(tasks, override_num_blocks=len(tasks))
        return items.map_batches(
            read_window, batch_size=1, batch_format="pyarrow", compute=ray.data.TaskPoolStrategy(size=READERS),
            fn_kwargs=dict(stream=self, objective=objective, rank=rank, world=world,
                           limit=self.rows_per_worker(world) * world, steps=(rows_per_step, stop)))


def read_window(task: pa.Table, stream: Stream, objective: Objective, rank: int, world: int, limit: int,
                steps: tuple[int, int] = (1, 0)):
    """One window's rows for worker ``rank``: read, permuted, kept from the task's ``first``
    position, corrupted (a Ray Data task; yields batches of at most :data:`CHUNK` rows).
    ``steps``: rows a step and the stream's end, for each row's share of training done."""
    t = task.to_pylist()[0]
    fs, root = stream.open()
    table = pa.concat_tables([pq.read_table(f"{root}/{path}", filesystem=fs) for path in t["files"]])
    window = Window(t["index"], (), t["start"], table.num_rows)
    positions = window.start + np.arange(table.num_rows)
    mine = (positions % world == rank) & (positions < limit)
    rows = stream.row_order(t["epoch"], window)[mine]
    kept_from = int(np.searchsorted(positions[mine], t["first"]))
    progress = done_share(t["epoch"] * (limit // world) + positions[mine] // world, *steps)
    for lo in range(kept_from - kept_from % CHUNK, len(rows), CHUNK):
        chunk = pipeline.to_numpy(table.take(rows[lo:lo + CHUNK]))
        out = pipeline.corrupt(chunk, objective, stream.seed, t["epoch"], progress=progress[lo:lo + CHUNK])
        skip = max(0, kept_from - lo)
        if skip < len(chunk["row_id"]):  # an empty batch would reach Ray as pickled objects
            yield {k: v[skip:] for k, v in out.items()} if skip else out


def done_share(index: np.ndarray, rows_per_step: int, stop: int) -> np.ndarray:
    """Per row of a worker's stream (its ``index`` there), the share of training done at the step
    that trains on it: ``step / max_steps``, the same on every worker and on a resume."""
    step = index // rows_per_step
    return step * rows_per_step / max(stop, 1)
