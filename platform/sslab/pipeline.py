"""The data path after reading: tokenise, pack, (materialise), corrupt per epoch.

Tokenising and packing run once; when ``train.materialize`` is on their output stays in the
object store. The objective's corruption runs after that point, in Ray Data workers, once per
epoch, seeded by (seed, epoch, row id) through :class:`~sslab.objectives.base.RowRandom`: a
new mask each epoch, the same one on a resume, and none shared between rows or workers.
"""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import ray.data
from ray.data.extensions import ArrowTensorArray
from tokenizers import Tokenizer

from sslab.config import Config, EvalConfig
from sslab.objectives.base import Objective, RowRandom, splitmix64

TOKENIZE_BATCH = 1024  # documents per map_batches call; packing leftovers are dropped per batch
CORRUPT_BATCH = 256  # blocks per corruption call


class Tokenize:
    """Callable class for ``map_batches``: the tokenizer loads once per Ray Data actor."""

    def __init__(self, tokenizer_json: str, seq_len: int, cls_id: int, sep_id: int):
        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.seq_len, self.cls_id, self.sep_id = seq_len, cls_id, sep_id

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        encodings = self.tokenizer.encode_batch_fast(list(batch["text"]), add_special_tokens=False)
        return pack([e.ids for e in encodings], self.seq_len, self.cls_id, self.sep_id)


def pack(docs: list[list[int]], seq_len: int, cls_id: int, sep_id: int) -> pa.Table:
    """Concatenate documents (each closed by ``sep_id``) and cut ``[CLS] body [SEP]`` blocks.

    RoBERTa's FULL-SENTENCES packing: no padding, so every position trains. The tail that does
    not fill a block is dropped. Each block gets a ``row_id``, a hash of its tokens, which seeds
    its masks independently of where the block lands.
    """
    body = seq_len - 2
    lengths = np.fromiter((len(d) + 1 for d in docs), dtype=np.int64, count=len(docs))
    flat = np.full(int(lengths.sum()), sep_id, dtype=np.int64)
    ends = np.cumsum(lengths)
    for doc, end in zip(docs, ends):
        flat[end - 1 - len(doc): end - 1] = doc
    n = len(flat) // body
    blocks = np.empty((n, seq_len), dtype=np.int64)
    blocks[:, 0], blocks[:, -1] = cls_id, sep_id
    blocks[:, 1:-1] = flat[: n * body].reshape(n, body)
    # A table, not a dict: Ray converts an empty 2-D array to pickled objects, not a tensor column.
    return pa.table({"input_ids": ArrowTensorArray.from_numpy(blocks.astype(np.int32)),
                     "row_id": pa.array(content_hash(blocks))})


def content_hash(blocks: np.ndarray) -> np.ndarray:
    """A uint64 hash per row of an integer array."""
    h = np.zeros(len(blocks), dtype=np.uint64)
    for col in blocks.astype(np.uint64).T:
        h = splitmix64(h ^ col)
    return h


def tokenize(docs: ray.data.Dataset, tokenizer_json: str, cfg: Config, vocab) -> ray.data.Dataset:
    """Documents → packed blocks of ``train.seq_len`` token ids (with ``row_id``)."""
    return docs.map_batches(
        Tokenize, fn_constructor_kwargs=dict(tokenizer_json=tokenizer_json, seq_len=cfg.train.seq_len,
                                             cls_id=vocab.cls_id, sep_id=vocab.sep_id),
        batch_size=TOKENIZE_BATCH, batch_format="numpy", compute=ray.data.ActorPoolStrategy(min_size=1, max_size=4),
        zero_copy_batch=True)


def corrupt(batch: dict[str, np.ndarray], objective: Objective, seed: int, epoch: int,
            protocol: EvalConfig | None = None) -> dict[str, np.ndarray]:
    """One ``map_batches`` call of the objective's corruption (training or fixed-protocol eval)."""
    rng = RowRandom(seed, epoch, batch["row_id"])
    inputs = {k: v for k, v in batch.items() if k != "row_id"}
    if protocol is None:
        return objective.transform(inputs, rng)
    return objective.eval_transform(inputs, rng, protocol)


def epochs(blocks: ray.data.Dataset, objective: Objective, seed: int, first: int, last: int) -> ray.data.Dataset:
    """Epochs ``first``..``last - 1`` of training data, one after another, each freshly corrupted.

    One dataset that holds every epoch lets Ray Train split it once and each worker read it in
    one pass; the epoch number reaches the corruption through ``fn_kwargs``.
    """
    parts = [blocks.map_batches(corrupt, fn_kwargs=dict(objective=objective, seed=seed, epoch=e),
                                batch_size=CORRUPT_BATCH, batch_format="numpy")
             for e in range(first, last)]
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]


def eval_blocks(blocks: ray.data.Dataset, objective: Objective, protocol: EvalConfig) -> ray.data.Dataset:
    """Validation blocks corrupted once by the fixed protocol, the same in every run, and kept."""
    return blocks.limit(protocol.max_blocks).map_batches(
        corrupt, fn_kwargs=dict(objective=objective, seed=protocol.seed, epoch=0, protocol=protocol),
        batch_size=CORRUPT_BATCH, batch_format="numpy").materialize()


def epochs_needed(num_blocks: int, blocks_per_step: int, steps: int, world_size: int, batch_size: int) -> int:
    """Epochs of ``num_blocks`` that cover ``steps`` steps, with room for the equal split's trim."""
    needed = steps * blocks_per_step + world_size * batch_size
    return max(1, math.ceil(needed / num_blocks))
