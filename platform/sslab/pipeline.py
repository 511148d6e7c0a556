"""The data path after reading: tokenise and pack into an objective's rows, corrupt them.

Tokenising and packing run once per corpus, in ``sslab prepare`` (or a run's first preparation),
whose rows land in the data cache (:mod:`sslab.prepared`). The objective's corruption runs as
training reads them (:mod:`sslab.stream`), in Ray Data workers, once per epoch, seeded by
(seed, epoch, row id) through :class:`~sslab.rng.RowRandom`: a new mask each epoch, the same
one on a resume, and none shared between rows or workers.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import pyarrow as pa
import ray.data
from ray.data.block import BlockAccessor
from ray.data.collate_fn import NumpyBatchCollateFn
from ray.data.extensions import ArrowTensorArray
from tokenizers import Tokenizer

from sslab import lazy, segment
from sslab.config import Config, EvalConfig
from sslab.objectives.base import Objective, get
from sslab.rng import RowRandom, splitmix64
from sslab.sentences import split_sentences

# Only the training workers' collate needs torch; Ray Data's processes run this module without it.
torch = lazy.module("torch")

TOKENIZE_BATCH = 1024  # documents per map_batches call; packing leftovers are dropped per batch
CORRUPT_BATCH = 256  # blocks per corruption call


class Tokenize:
    """Documents to rows of an objective's unit; built once per Ray worker process (``tokenize_batch``).

    ``unit`` picks what a row is: a packed block (``packed``), a segment and the segment after
    it in the same document (``pairs``), a sentence and the next one (``sentences``, where a
    last sentence has no partner), or a document's first and second half (``halves``).
    ``sentence_split`` is the rule that finds the sentences (``corpus.sentence_split``,
    :func:`sslab.sentences.split_sentences`). With ``word_segmenter``, rows also carry its word
    marks: packed blocks one column, pair and sentence rows one per segment.
    """

    def __init__(self, tokenizer_json: str, seq_len: int, cls_id: int, sep_id: int, pad_id: int = 0,
                 unit: str = "packed", word_segmenter: str | None = None, sentence_split: str = "auto"):
        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.seq_len, self.cls_id, self.sep_id, self.pad_id, self.unit = seq_len, cls_id, sep_id, pad_id, unit
        self.segment = segment.load(word_segmenter) if word_segmenter else None
        self.sentence_split = sentence_split

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        texts = list(batch["text"])
        if self.unit == "packed" and self.segment:  # offsets (not encode_batch_fast) map tokens to words
            encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
            return pack([e.ids for e in encodings], self.seq_len, self.cls_id, self.sep_id,
                        segment.mark_words(self.segment, texts, encodings))
        if self.unit == "packed":
            encodings = self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
            return pack([e.ids for e in encodings], self.seq_len, self.cls_id, self.sep_id)
        sentences = [split_sentences(t, self.sentence_split) for t in texts]
        flat_texts = [s for doc in sentences for s in doc]
        marks = None
        if self.segment:
            flat = self.tokenizer.encode_batch(flat_texts, add_special_tokens=False)
            marks = [m.tolist() for m in segment.mark_words(self.segment, flat_texts, flat)]
        else:
            flat = self.tokenizer.encode_batch_fast(flat_texts, add_special_tokens=False)
        ends = np.cumsum([len(doc) for doc in sentences])
        docs = [[e.ids for e in flat[end - len(doc): end]] for doc, end in zip(sentences, ends)]
        words = None if marks is None else [marks[end - len(doc): end] for doc, end in zip(sentences, ends)]
        seg_len = segment_length(self.unit, self.seq_len)
        if self.unit == "halves":  # each document's first and second half: retrieval pairs
            docs = halves(docs)
            words = None if words is None else halves(words)
        return segment_pairs(docs, seg_len, self.pad_id, last_alone=self.unit == "sentences", continues=words)


def halves(docs: list[list[list]]) -> list[list[list]]:
    """Each document's sentences joined into its first and its second half."""
    return [[sum(d[:len(d) // 2], []), sum(d[len(d) // 2:], [])] for d in docs]


def segment_length(unit: str, seq_len: int) -> int:
    """Tokens per segment: two segments and three special tokens fit a pair, one and two a sentence."""
    return (seq_len - 3) // 2 if unit == "pairs" else seq_len - 2  # halves are framed one at a time


def chunks(sentences: list[list[int]], seg_len: int, merge: bool = True) -> list[list[int]]:
    """A document's sentences as segments of at most ``seg_len`` tokens (a longer sentence is cut).

    With ``merge``, consecutive sentences are grouped into as few segments as fit, but at least
    two when there are two sentences, of about equal length: a short document still gives a pair.
    Without it, each sentence is its own segment.
    """
    pieces = [s[i:i + seg_len] for s in sentences for i in range(0, len(s), seg_len)]
    if not merge or len(pieces) < 2:
        return pieces
    total = sum(len(p) for p in pieces)
    target = total / max(2, math.ceil(total / seg_len))
    out, current = [], []
    for piece in pieces:
        if current and (len(current) + len(piece) > seg_len or len(current) >= target):
            out.append(current)
            current = []
        current = current + piece
    return out + [current]


def segment_pairs(docs: list[list[list[int]]], seg_len: int, pad_id: int, last_alone: bool = False,
                  continues: list[list[list[bool]]] | None = None) -> pa.Table:
    """Rows of (segment ``a``, the next segment ``b`` of the same document), padded to ``seg_len``.

    Pairs (``last_alone`` off) group sentences into segments that fill ``seg_len``, as BERT
    does. Sentences (``last_alone`` on) keep one sentence per segment, as SimCSE trains on,
    and a document's last sentence (or only one) is a row too, with an empty ``b``. ``doc``
    identifies the document (NSP must not draw its "random" segment from it). ``continues``
    (per document, sentence and token: it continues a segmenter's word) is cut the same way into
    the columns :func:`sslab.segment.pair_column` names for ``a`` and ``b``.
    """
    a, b, doc, words = [], [], [], {"a": [], "b": []}
    for i, sentences in enumerate(docs):
        segs = chunks(sentences, seg_len, merge=not last_alone)
        n = len(segs) if last_alone else len(segs) - 1
        a += segs[:n]
        b += (segs[1:] + [[]])[:n]
        doc += [hash_ids(segs[0])] * max(n, 0)
        if continues is not None:  # chunks cuts by lengths alone: the marks are cut as the ids are
            marks = chunks(continues[i], seg_len, merge=not last_alone)
            words["a"] += marks[:n]
            words["b"] += (marks[1:] + [[]])[:n]
    a_ids, a_len = padded(a, seg_len, pad_id)
    b_ids, b_len = padded(b, seg_len, pad_id)
    row_id = content_hash(np.concatenate([a_ids, b_ids], axis=1)) if a else np.zeros(0, dtype=np.uint64)
    columns = {"a": ArrowTensorArray.from_numpy(a_ids), "a_len": pa.array(a_len),
               "b": ArrowTensorArray.from_numpy(b_ids), "b_len": pa.array(b_len),
               "doc": pa.array(np.asarray(doc, dtype=np.uint64)), "row_id": pa.array(row_id)}
    if continues is not None:
        for side, marks in words.items():
            columns[segment.pair_column(side)] = ArrowTensorArray.from_numpy(padded(marks, seg_len, False, bool)[0])
    return pa.table(columns)


def padded(seqs: list[list[int]], width: int, pad_id, dtype=np.int32) -> tuple[np.ndarray, np.ndarray]:
    """(rows, width) ids (int32, or ``dtype``) padded with ``pad_id``, and each row's length."""
    ids = np.full((len(seqs), width), pad_id, dtype=dtype)
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int32, count=len(seqs))
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
    return ids, lengths


def hash_ids(ids: list[int]) -> int:
    return int(content_hash(np.asarray([ids or [0]], dtype=np.int64))[0])


def pack(docs: list[list[int]], seq_len: int, cls_id: int, sep_id: int,
         continues: list[np.ndarray] | None = None) -> pa.Table:
    """Concatenate documents (each closed by ``sep_id``) and cut ``[CLS] body [SEP]`` blocks.

    RoBERTa's FULL-SENTENCES packing: no padding, so every position trains. The tail that does
    not fill a block is dropped. Each block gets a ``row_id``, a hash of its tokens, which seeds
    its masks independently of where the block lands. ``continues`` (per document, per token: it
    continues a segmenter's word) is cut the same way into the :data:`sslab.segment.COLUMN` column.
    """
    body = seq_len - 2
    flat = concatenated(docs, sep_id, np.int64)
    n = len(flat) // body
    blocks = framed(flat[: n * body].reshape(n, body), cls_id, sep_id)
    # A table, not a dict: Ray converts an empty 2-D array to pickled objects, not a tensor column.
    columns = {"input_ids": ArrowTensorArray.from_numpy(blocks.astype(np.int32)),
               "row_id": pa.array(content_hash(blocks))}
    if continues is not None:  # False at [CLS], [SEP] and between documents
        words = concatenated(continues, False, bool)[: n * body].reshape(n, body)
        columns[segment.COLUMN] = ArrowTensorArray.from_numpy(framed(words, False, False))
    return pa.table(columns)


def concatenated(docs: list, closer, dtype) -> np.ndarray:
    """The documents one after the other, each followed by ``closer``."""
    lengths = np.fromiter((len(d) + 1 for d in docs), dtype=np.int64, count=len(docs))
    flat = np.full(int(lengths.sum()), closer, dtype=dtype)
    for doc, end in zip(docs, np.cumsum(lengths)):
        flat[end - 1 - len(doc): end - 1] = doc
    return flat


def framed(body: np.ndarray, first, last) -> np.ndarray:
    """``body`` (rows, seq_len - 2) between a first and a last column."""
    blocks = np.empty((body.shape[0], body.shape[1] + 2), dtype=body.dtype)
    blocks[:, 0], blocks[:, -1], blocks[:, 1:-1] = first, last, body
    return blocks


def content_hash(blocks: np.ndarray) -> np.ndarray:
    """A uint64 hash per row of an integer array."""
    h = np.zeros(len(blocks), dtype=np.uint64)
    for col in blocks.astype(np.uint64).T:
        h = splitmix64(h ^ col)
    return h


def tokenize(docs: ray.data.Dataset, tokenizer_json: str, cfg: Config, vocab, unit: str = "packed") -> ray.data.Dataset:
    """Documents → rows of the objective's ``unit`` (packed blocks or segment pairs, with ``row_id``,
    and ``tokenizer.word_segmenter``'s word boundaries when the objective masks words); sentences
    end where ``cfg.corpus.sentence_split`` says."""
    return docs.map_batches(
        tokenize_batch, fn_kwargs=dict(tokenizer_json=tokenizer_json, seq_len=cfg.train.seq_len, cls_id=vocab.cls_id,
                                       sep_id=vocab.sep_id, pad_id=vocab.pad_id, unit=unit,
                                       word_segmenter=segmenter_of(cfg),
                                       sentence_split=cfg.corpus.sentence_split),
        batch_size=TOKENIZE_BATCH, batch_format="numpy", zero_copy_batch=True)


def segmenter_of(cfg: Config) -> str | None:
    """The word segmenter whose boundaries the rows carry: ``tokenizer.word_segmenter`` when the
    objective masks words (mlm, electra, a mixture with mlm), else None (nothing would read them)."""
    return cfg.tokenizer.word_segmenter if get(cfg.objective.name).masks_words else None


def tokenize_batch(batch: dict[str, np.ndarray], **kwargs) -> pa.Table:
    """``Tokenize`` as a Ray Data task. Tasks reuse Ray's warm worker processes, where each
    ``Tokenize`` is built once per process; an actor pool would start new processes every pass."""
    return _tokenizer(**kwargs)(batch)


@functools.lru_cache(maxsize=4)
def _tokenizer(**kwargs) -> Tokenize:
    return Tokenize(**kwargs)


def corrupt(batch: dict[str, np.ndarray], objective: Objective, seed: int, epoch: int,
            protocol: EvalConfig | None = None, progress: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One ``map_batches`` call of the objective's corruption (training or fixed-protocol eval);
    ``progress``: per row, the share of training done at its step (:attr:`RowRandom.progress`).
    A training row is corrupted with the randomness of its objective's :meth:`~Objective.mask_epoch`
    (mlm's ``static_masks`` reuse earlier epochs' masks); the fixed protocol's never changes."""
    drawn = epoch if protocol is not None else objective.mask_epoch(epoch)
    rng = RowRandom(seed, drawn, batch["row_id"], progress)
    inputs = {k: v for k, v in batch.items() if k != "row_id"}
    if protocol is None:
        return objective.transform(inputs, rng)
    return objective.eval_transform(inputs, rng, protocol)


def to_numpy(table: pa.Table) -> dict[str, np.ndarray]:
    """A table's columns as numpy arrays, tensor columns as n-d arrays."""
    return BlockAccessor.for_block(table).to_numpy()


def eval_blocks(rows: pa.Table, objective: Objective, protocol: EvalConfig) -> ray.data.Dataset:
    """Validation rows (at most ``eval.max_blocks``) corrupted once by the fixed protocol, the same
    in every run, in batches of :data:`CORRUPT_BATCH` as the training stream corrupts them. Done
    here, in numpy: a few hundred rows, not worth Ray Data tasks (and their worker processes)."""
    rows = rows.slice(0, protocol.max_blocks)
    parts = [corrupt(to_numpy(rows.slice(i, CORRUPT_BATCH)), objective, protocol.seed, 0, protocol)
             for i in range(0, rows.num_rows, CORRUPT_BATCH)]
    columns = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
    return ray.data.from_arrow(pa.table({k: ArrowTensorArray.from_numpy(v) if v.ndim > 1 else pa.array(v)
                                         for k, v in columns.items()}))


class TorchBatch(NumpyBatchCollateFn):
    """A batch's numpy columns as CPU tensors. At training batch sizes this is about twice as fast
    as Ray's default Arrow collate (measured in ``benchmarks/data_pipeline.py``)."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        # A copy: Ray hands out read-only views of its blocks; a batch is a few hundred kB at most.
        return {k: torch.from_numpy(np.array(v)) for k, v in batch.items()}


def torch_batches(shard, batch_size: int, prefetch: int, device: torch.device, pin_memory: bool = False):
    """A worker's batches as tensors on ``device``, collated in Ray Data's prefetch threads; with
    ``pin_memory`` (a GPU's) pinned there too, so the copy to the GPU does not block the step."""
    return shard.iter_torch_batches(batch_size=batch_size, drop_last=True, prefetch_batches=prefetch, device=device,
                                    collate_fn=TorchBatch(), pin_memory=pin_memory)
