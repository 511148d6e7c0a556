"""The training stream over prepared shards: a seeded order new each epoch, disjoint equal shares
per worker, and a start midway that reads nothing before it and yields exactly the tail of the
stream a run that never stopped reads (masks, and NSP's cross-row pairing, included)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import ray.data

from sslab import pipeline, prepared, tokenizer
from sslab.objectives.mlm import MLM, MLMConfig
from sslab.objectives.nsp import NSP, NSPConfig
from sslab.prepared import Shard
from sslab.stream import CHUNK, Stream

CLS, SEP = 2, 3


def stream(sizes, shuffle="global", window=100, seed=0) -> Stream:
    return Stream(root="/nowhere", shards=tuple(Shard(f"s{i}", n) for i, n in enumerate(sizes)),
                  shuffle=shuffle, window=window, seed=seed)


def shard_order(s: Stream, epoch: int) -> list[int]:
    return [i for w in s.windows(epoch) for i in w.shards]


# ---------------------------------------------------------------- the order, without Ray


def test_every_epoch_reads_every_shard_once_in_an_order_of_its_own_the_same_in_every_run():
    s = stream([50] * 40)
    orders = [shard_order(s, e) for e in range(4)]
    for order in orders:
        assert sorted(order) == list(range(40))
    assert len({tuple(o) for o in orders}) == 4  # a new order each epoch
    assert orders == [shard_order(stream([50] * 40), e) for e in range(4)]  # and the same on a rerun
    assert shard_order(stream([50] * 40, seed=1), 0) != orders[0]


def test_windows_cover_the_epoch_end_to_end_with_at_least_shuffle_window_rows_but_the_last():
    s = stream([30, 70, 10, 90, 25, 5, 60], window=100)
    for epoch in range(3):
        windows = s.windows(epoch)
        assert [w.index for w in windows] == list(range(len(windows)))
        assert windows[0].start == 0 and sum(w.rows for w in windows) == s.rows
        for w, after in zip(windows, windows[1:]):
            assert after.start == w.start + w.rows and w.rows >= 100
        for w in windows:
            assert sorted(s.row_order(epoch, w)) == list(range(w.rows))


def test_window_keeps_the_corpus_order_of_shards_and_none_also_of_rows():
    assert shard_order(stream([50] * 10, "window"), 3) == list(range(10))
    s = stream([50] * 10, "none")
    assert shard_order(s, 3) == list(range(10)) and all(len(w.shards) == 1 for w in s.windows(3))
    assert s.row_order(3, s.windows(3)[2]).tolist() == list(range(50))
    mixed = stream([50] * 10, "window")
    assert mixed.row_order(0, mixed.windows(0)[0]).tolist() != list(range(100))


def test_a_late_start_reads_only_the_windows_from_the_one_holding_it():
    s = stream([64] * 50, window=256)  # 3,200 rows, 13 windows an epoch; 1,600 rows a worker an epoch
    whole = s.tasks(rank=1, world=2, start=0, stop=6 * 1600)
    assert len(whole) == 6 * len(s.windows(0))
    late = s.tasks(rank=1, world=2, start=4 * 1600 + 700, stop=6 * 1600)  # epoch 4, the worker's row 700
    position = 700 * 2 + 1
    first = late[0]
    assert first["epoch"] == 4 and first["first"] == position
    assert first["start"] <= position < first["start"] + sum(64 for _ in first["files"])
    # The whole stream's tasks from that window on; those of epoch 4 start at the worker's row.
    expected = []
    for t in whole:
        if (t["epoch"], t["index"]) < (4, first["index"]):
            continue
        expected.append({**t, "first": position} if t["epoch"] == 4 else t)
    assert late == expected


# ---------------------------------------------------------------- rows read from shards


@pytest.fixture(scope="module")
def vocab():
    return tokenizer.Vocab(size=100, pad_id=0, mask_id=4, cls_id=CLS, sep_id=SEP, special_ids=(0, 1, 2, 3, 4),
                           continues_word=np.zeros(100, dtype=bool))


def random_docs(n: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [list(rng.integers(10, 100, rng.integers(5, 60))) for _ in range(n)]


@pytest.fixture(scope="module")
def entries(ray_cluster, tmp_path_factory):
    """A packed entry (1,003 rows in shards of 64) and a pair entry, written as ``prepare`` writes them."""
    root = str(tmp_path_factory.mktemp("cache"))
    packed = [pipeline.pack(random_docs(120, s), 32, CLS, SEP) for s in range(20)]
    pairs = [pipeline.segment_pairs([[d[:20], d[20:40], d[40:]] for d in random_docs(200, s)], 24, 0)
             for s in range(5)]
    return {
        "packed": prepared.write(root, "packed", "packed", 32, {"train": ray.data.from_arrow(packed)}, 64),
        "pairs": prepared.write(root, "pairs", "pairs", 51, {"train": ray.data.from_arrow(pairs)}, 64),
    }


def rows(s: Stream, objective, rank: int, world: int, start: int, stop: int,
         rows_per_step: int = 1) -> dict[str, np.ndarray]:
    batches = list(s.dataset(objective, rank, world, start, stop, rows_per_step)
                   .iter_batches(batch_size=None, batch_format="numpy"))
    out = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    return {k: v[:stop - start] for k, v in out.items()}


def test_the_counts_come_from_the_written_shards(entries):
    m = entries["packed"].manifest
    assert m.splits["train"].rows == sum(s.rows for s in m.splits["train"].shards) > 900
    assert m.splits["train"].tokens == m.splits["train"].rows * 32
    assert all(s.rows >= 64 for s in m.splits["train"].shards[:-1])
    pairs = entries["pairs"].manifest.splits["train"]
    table = pa.concat_tables(pa.parquet.read_table(f"{entries['pairs'].uri}/{s.path}") for s in pairs.shards)
    assert pairs.tokens == int(np.sum(table["a_len"].to_numpy()) + np.sum(table["b_len"].to_numpy()))


def originals(batch: dict[str, np.ndarray]) -> np.ndarray:
    """The blocks before masking: MLM's labels hold the original token where it masked."""
    return np.where(batch["labels"] >= 0, batch["labels"], batch["input_ids"])


def test_workers_share_each_epoch_in_disjoint_equal_parts_in_a_new_order_each_epoch(entries, vocab):
    s = entries["packed"].stream(prepared.DataConfig(shuffle_window=200), seed=3)
    world = 3
    per = s.rows_per_worker(world)
    mlm = MLM(MLMConfig(), vocab)
    streams = [rows(s, mlm, r, world, 0, 2 * per) for r in range(world)]
    written = {bytes(np.asarray(r["input_ids"], dtype=np.int64)) for r in entries["packed"].read("train").to_pylist()}
    epochs = []
    for epoch in range(2):
        parts = [{bytes(b) for b in originals(st)[epoch * per:(epoch + 1) * per].astype(np.int64)} for st in streams]
        assert sum(len(p) for p in parts) == len(set().union(*parts)) == world * per  # disjoint, no repeats
        assert set().union(*parts) <= written
        epochs.append([originals(st)[epoch * per:(epoch + 1) * per] for st in streams])
    assert not np.array_equal(epochs[0][0], epochs[1][0])  # another order in the next epoch
    again = rows(s, mlm, 1, world, 0, 2 * per)
    assert all(np.array_equal(again[k], streams[1][k]) for k in again)  # and the same order, masks, on a rerun


@pytest.mark.parametrize("kind", ["packed", "pairs"])
def test_a_stream_started_midway_is_exactly_the_tail_of_the_whole_stream(entries, vocab, kind):
    objective = MLM(MLMConfig(), vocab) if kind == "packed" else NSP(NSPConfig(), vocab)
    s = entries[kind].stream(prepared.DataConfig(shuffle_window=300), seed=7)
    world = 2
    per = s.rows_per_worker(world)
    stop = 2 * per + 50
    for rank in range(world):
        whole = rows(s, objective, rank, world, 0, stop)
        for start in (CHUNK + 17, per + 5, 2 * per):  # mid-window, just past an epoch, at one
            tail = rows(s, objective, rank, world, start, stop)
            for key in whole:
                assert np.array_equal(tail[key], whole[key][start:]), (kind, rank, start, key)


def test_a_mask_rate_schedule_masks_each_row_at_its_steps_ratio_and_a_midway_start_masks_alike(entries, vocab):
    # 0.6 at the first step to 0.05 at the last, over 2.4 epochs of 2 workers, 8 rows a step.
    mlm = MLM(MLMConfig(mask_ratio=0.6, mask_schedule="linear", mask_ratio_end=0.05), vocab)
    s = entries["packed"].stream(prepared.DataConfig(shuffle_window=300), seed=5)
    world, per_step = 2, 8
    steps = int(2.4 * s.rows_per_worker(world)) // per_step
    stop = steps * per_step
    whole = rows(s, mlm, 1, world, 0, stop, per_step)
    maskable = ~np.isin(originals(whole), vocab.special_ids)
    step_of_row = np.arange(stop) // per_step
    for part in np.array_split(np.arange(steps), 5):  # the realised ratio of each fifth of the steps
        at = np.isin(step_of_row, part)
        realised = (whole["labels"][at] >= 0).sum() / maskable[at].sum()
        assert abs(realised - (0.6 - 0.55 * part.mean() / steps)) < 0.03, (part[0], realised)
    start = (steps // 2 + 1) * per_step  # a resume at a step past an epoch's end
    tail = rows(s, mlm, 1, world, start, stop, per_step)
    assert all(np.array_equal(tail[k], whole[k][start:]) for k in whole)


def test_without_a_shuffle_the_rows_come_in_corpus_order(entries, vocab):
    s = entries["packed"].stream(prepared.DataConfig(shuffle="none"), seed=0)
    got = originals(rows(s, MLM(MLMConfig(), vocab), 0, 1, 0, s.rows))
    written = np.stack([r["input_ids"] for r in entries["packed"].read("train").to_pylist()])
    assert np.array_equal(got, written)


def test_two_preparations_of_one_key_at_once_leave_one_whole_entry_even_without_a_lock(ray_cluster, tmp_path):
    """Object storage has no lock (a local cache's second preparation waits for the first:
    tests/unit/test_owner.py), so both write: each its shards under its own attempt directory, and
    the manifest that lands last names one attempt's shards, all of them whole."""
    from concurrent.futures import ThreadPoolExecutor

    packed = [pipeline.pack(random_docs(120, s), 32, CLS, SEP) for s in range(6)]
    rows = sum(t.num_rows for t in packed)
    with ThreadPoolExecutor(2) as pool:
        entries = list(pool.map(lambda _: prepared.write_entry(str(tmp_path), "k", "packed", 32,
                                                               {"train": ray.data.from_arrow(packed)}, 64,
                                                               True, None, None), range(2)))
    found = prepared.find(str(tmp_path), "k")
    assert found.manifest in [e.manifest for e in entries]
    assert len({s.path.split("/")[0] for s in found.manifest.splits["train"].shards}) == 1  # one attempt's shards
    assert found.read("train").num_rows == rows == found.manifest.splits["train"].rows
    assert len(list((tmp_path / "data" / "k").glob("attempt-*"))) == 2


def test_two_preparations_of_one_key_at_once_on_a_local_cache_tokenise_once(ray_cluster, tmp_path):
    """The second waits for the first's entry (its lock), finds it and writes nothing: one attempt
    directory, and only the first says it tokenised (``Prepared.hit`` is the other's)."""
    from concurrent.futures import ThreadPoolExecutor

    packed = [pipeline.pack(random_docs(120, s), 32, CLS, SEP) for s in range(6)]
    with ThreadPoolExecutor(2) as pool:
        entries = list(pool.map(lambda _: prepared.write(str(tmp_path), "k", "packed", 32,
                                                         {"train": ray.data.from_arrow(packed)}, 64), range(2)))
    assert sorted(e.tokenised for e in entries) == [False, True]
    assert entries[0].manifest == entries[1].manifest
    assert len(list((tmp_path / "data" / "k").glob("attempt-*"))) == 1
