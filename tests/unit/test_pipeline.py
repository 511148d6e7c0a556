"""The data path without a cluster: packing, row ids, epoch count, and the per-epoch corruption."""
import functools
import pickle
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
import ray.cloudpickle
from ray.data.extensions import ArrowTensorType, ArrowTensorTypeV2

from blocks import corpus_tokenizer, texts
from sslab import pipeline, synthetic, tokenizer
from sslab.config import EvalConfig, SyntheticConfig, TokenizerConfig, load
from sslab.objectives import available, get
from sslab.rng import RowRandom
from sslab.objectives.mlm import IGNORE, MLM, MLMConfig
from sslab.objectives.span import Span, SpanConfig
from sslab.pipeline import content_hash, corrupt, pack

CLS, SEP = 2, 3


@pytest.fixture
def docs():
    """200 documents of 0-40 tokens with ids in [10, 100)."""
    rng = np.random.default_rng(0)
    return [list(rng.integers(10, 100, rng.integers(0, 41))) for _ in range(200)]


@pytest.fixture(scope="module")
def vocab():
    """A hand-made vocabulary of 100 ids: 0-4 special ([PAD] [UNK] [CLS] [SEP] [MASK])."""
    return tokenizer.Vocab(size=100, pad_id=0, mask_id=4, cls_id=CLS, sep_id=SEP, special_ids=(0, 1, 2, 3, 4),
                           continues_word=np.zeros(100, dtype=bool))


def ids_of(table: pa.Table) -> np.ndarray:
    return table.column("input_ids").combine_chunks().to_numpy_ndarray()


def blocks_batch(docs, seq_len=32) -> dict[str, np.ndarray]:
    """A packed batch as ``map_batches`` hands it over (numpy format)."""
    table = pack(docs, seq_len, CLS, SEP)
    return {"input_ids": ids_of(table), "row_id": table.column("row_id").to_numpy()}


# ---------------------------------------------------------------- packing


def test_pack_cuts_cls_body_sep_blocks_from_the_documents_joined_by_sep():
    table = pack([[5, 6, 7, 8, 9, 10, 11], [12, 13, 14], [15]], seq_len=5, cls_id=CLS, sep_id=SEP)
    assert ids_of(table).tolist() == [[CLS, 5, 6, 7, SEP],
                                      [CLS, 8, 9, 10, SEP],
                                      [CLS, 11, SEP, 12, SEP],
                                      [CLS, 13, 14, SEP, SEP]]  # the tail [15, SEP] is dropped


@pytest.mark.parametrize("seq_len", [8, 16, 128])
def test_pack_conserves_every_token_but_the_tail(docs, seq_len):
    blocks = ids_of(pack(docs, seq_len, CLS, SEP))
    body = seq_len - 2
    stream = np.concatenate([np.r_[d, SEP] for d in docs]).astype(np.int64)
    assert blocks.shape == (len(stream) // body, seq_len)
    assert (blocks[:, 0] == CLS).all() and (blocks[:, -1] == SEP).all()
    np.testing.assert_array_equal(blocks[:, 1:-1].ravel(), stream[: blocks.shape[0] * body])
    assert len(stream) - blocks[:, 1:-1].size < body  # only a partial block is dropped


def test_pack_types_input_ids_as_an_int32_tensor_column_and_row_id_as_uint64(docs):
    table = pack(docs, 16, CLS, SEP)
    assert isinstance(table, pa.Table) and table.column_names == ["input_ids", "row_id"]
    assert isinstance(table.schema.field("input_ids").type, (ArrowTensorType, ArrowTensorTypeV2))
    assert ids_of(table).dtype == np.int32
    assert table.schema.field("row_id").type == pa.uint64()


@pytest.mark.parametrize("tiny", [[], [[5, 6]], [[]], [[5] * 12]], ids=["none", "short", "empty", "one-short"])
def test_too_little_text_for_a_block_gives_zero_rows_of_the_same_schema(tiny, docs):
    table = pack(tiny, 16, CLS, SEP)
    assert table.num_rows == 0
    assert ids_of(table).shape == (0, 16)
    # The same schema as a full batch, so Ray Data can combine them.
    full = pack(docs, 16, CLS, SEP)
    assert table.schema == full.schema
    assert pa.concat_tables([table, full]).num_rows == full.num_rows


def test_the_tokenize_actor_packs_what_the_tokenizer_encodes():
    texts = list(synthetic.generate(SyntheticConfig(), 0, 60)["text"])
    tok = tokenizer.train_tokenizer(TokenizerConfig(vocab_size=300), texts, 64)
    v = tokenizer.vocab_of(tok)
    step = pipeline.Tokenize(tok.backend_tokenizer.to_str(), 64, v.cls_id, v.sep_id)
    table = step({"text": np.array(texts, dtype=object)})
    expected = pack(tok(texts, add_special_tokens=False)["input_ids"], 64, v.cls_id, v.sep_id)
    assert table.num_rows > 10
    assert table.equals(expected)


# ---------------------------------------------------------------- row ids


def test_row_id_is_a_hash_of_the_block_content(docs):
    table = pack(docs, 16, CLS, SEP)
    blocks, row_ids = ids_of(table), table.column("row_id").to_numpy()
    assert len(set(row_ids.tolist())) == len(blocks) == len({b.tobytes() for b in blocks})
    # Wherever a block lands (another batch, another order), it keeps its id.
    perm = np.random.default_rng(1).permutation(len(blocks))
    np.testing.assert_array_equal(content_hash(blocks[perm]), row_ids[perm])
    head = pack(docs[:50], 16, CLS, SEP)["row_id"].to_numpy()  # the same blocks, packed on their own
    np.testing.assert_array_equal(head, row_ids[:len(head)])
    # One token changed, or two swapped, is another block and another id.
    changed, swapped = blocks[:1].copy(), blocks[:1].copy()
    changed[0, 5] += 1
    swapped[0, [3, 4]] = swapped[0, [4, 3]]
    assert swapped[0, 3] != swapped[0, 4]
    assert len({*content_hash(blocks[:1]), *content_hash(changed), *content_hash(swapped)}) == 3


def test_identical_blocks_share_their_row_id():
    table = pack([[7, 8, 9]] * 12, 6, CLS, SEP)  # each document plus [SEP] fills one body exactly
    assert table.num_rows == 12
    assert len(set(table.column("row_id").to_pylist())) == 1


# ---------------------------------------------------------------- corruption per epoch


def test_corrupt_drops_row_id_and_applies_the_objectives_transform(vocab, docs):
    batch = blocks_batch(docs)
    objective = MLM(MLMConfig(mask_ratio=0.3), vocab)
    out = corrupt(batch, objective, seed=5, epoch=2)
    assert set(out) == {"input_ids", "labels"}
    expected = objective.transform({"input_ids": batch["input_ids"]}, RowRandom(5, 2, batch["row_id"]))
    for key in out:
        np.testing.assert_array_equal(out[key], expected[key])
    assert "row_id" in batch  # the caller's batch keeps it


def test_corrupt_is_deterministic_per_seed_epoch_and_row(vocab, docs):
    batch = blocks_batch(docs)
    objective = MLM(MLMConfig(mask_ratio=0.3), vocab)
    first = corrupt(batch, objective, seed=5, epoch=2)
    np.testing.assert_array_equal(corrupt(batch, objective, seed=5, epoch=2)["labels"], first["labels"])
    # Rows in another order, in smaller batches: each row gets the same corruption.
    perm = np.random.default_rng(3).permutation(len(batch["row_id"]))
    for part in np.array_split(perm, 3):
        piece = corrupt({k: v[part] for k, v in batch.items()}, objective, seed=5, epoch=2)
        np.testing.assert_array_equal(piece["input_ids"], first["input_ids"][part])
        np.testing.assert_array_equal(piece["labels"], first["labels"][part])
    for other in (dict(seed=5, epoch=3), dict(seed=6, epoch=2)):
        assert (corrupt(batch, objective, **other)["labels"] != first["labels"]).any(axis=1).all()


def test_corrupt_with_a_protocol_applies_the_fixed_eval_masking(vocab, docs):
    batch = blocks_batch(docs * 5)
    protocol = EvalConfig(mask_ratio=0.25)
    low = corrupt(batch, MLM(MLMConfig(mask_ratio=0.05), vocab), seed=9, epoch=0, protocol=protocol)
    high = corrupt(batch, MLM(MLMConfig(mask_ratio=0.6), vocab), seed=9, epoch=0, protocol=protocol)
    for key in low:
        np.testing.assert_array_equal(low[key], high[key])
    eligible = ~np.isin(batch["input_ids"], vocab.special_ids)
    rate = (low["labels"] != IGNORE).sum() / eligible.sum()
    assert abs(rate - 0.25) < 4 * np.sqrt(0.25 * 0.75 / eligible.sum())


# ---------------------------------------------------------------- the corruption's processes

FRESH_PROCESS = """
import pickle, sys
calls = pickle.load(sys.stdin.buffer)
outputs = [fn(batch) for fn, batch in calls]
heavy = sorted(name for name in ("torch", "transformers") if name in sys.modules)
sys.stdout.buffer.write(pickle.dumps((outputs, heavy)))
"""


def numpy_batch(table: pa.Table) -> dict[str, np.ndarray]:
    """A table's columns as ``map_batches`` hands them to a numpy-format function."""
    return {name: col.combine_chunks().to_numpy_ndarray() if isinstance(col.type, ArrowTensorType | ArrowTensorTypeV2)
            else col.to_numpy() for name, col in zip(table.column_names, table.columns)}


def test_a_fresh_process_corrupts_for_every_objective_without_importing_torch_or_transformers():
    """Ray Data's workers, and Ray Train's controller, dataset manager and split coordinators, are
    fresh processes that unpickle the corruption: each would spend ~8 s of a core importing torch
    and transformers at the start of every run. Every objective and mixture corrupts its training
    and validation rows in such a process without them, exactly as the driver does."""
    extra = Span.extra_tokens(SpanConfig())
    tok = corpus_tokenizer(extra=extra)
    vocab, tok_json = tokenizer.vocab_of(tok, extra), tok.backend_tokenizer.to_str()
    docs = {"text": np.array(texts(360))}
    calls = []
    for name in [*available(), "mlm+nsp", "simcse+mlm"]:
        objective = get(name)(load(overrides=[f"objective.name={name}"]).objective, vocab)
        for unit, protocol in [(objective.unit, None), (objective.eval_unit or objective.unit, EvalConfig())]:
            rows = pipeline.Tokenize(tok_json, 64, vocab.cls_id, vocab.sep_id, vocab.pad_id, unit)(docs)
            assert rows.num_rows > 8, (name, unit)
            calls.append((functools.partial(corrupt, objective=objective, seed=3, epoch=1, protocol=protocol),
                          numpy_batch(rows)))
    child = subprocess.run([sys.executable, "-c", FRESH_PROCESS], input=ray.cloudpickle.dumps(calls),
                           capture_output=True, timeout=120)
    assert child.returncode == 0, child.stderr.decode()[-3000:]
    outputs, heavy = pickle.loads(child.stdout)
    assert heavy == []
    for (fn, batch), out in zip(calls, outputs):
        expected = fn(batch)
        assert out.keys() == expected.keys()
        for key in expected:
            np.testing.assert_array_equal(out[key], expected[key])
