"""Real packed text for the corruption tests: a WordPiece tokenizer trained on the synthetic corpus
and the packed blocks of further documents, so words split into "##" pieces as they do in a run.

Rate checks allow ``Z`` binomial standard errors; 5 keeps false alarms below 1e-5.
"""
from __future__ import annotations

import numpy as np

from sslab import synthetic, tokenizer
from sslab.config import SyntheticConfig, TokenizerConfig
from sslab.rng import RowRandom
from sslab.pipeline import pack

Z = 5  # tolerance of a rate check, in standard errors
TRAIN_DOCS = 300  # the tokenizer learns on documents [0, TRAIN_DOCS); blocks come from later ones


def texts(stop: int, start: int = TRAIN_DOCS) -> list[str]:
    return list(synthetic.generate(SyntheticConfig(seed=5), start, stop)["text"])


def corpus_tokenizer(vocab_size: int = 1000, max_len: int = 512, extra: list[str] = ()):
    """A tokenizer trained on the first documents, with ``extra`` special tokens (T5's sentinels)."""
    tok = tokenizer.train_tokenizer(TokenizerConfig(vocab_size=vocab_size), texts(TRAIN_DOCS, 0), max_len)
    if extra:
        tok.add_special_tokens({"additional_special_tokens": list(extra)}, replace_extra_special_tokens=False)
    return tok


def packed(tok, vocab, seq_len: int, stop: int, dtype=np.int64) -> dict[str, np.ndarray]:
    """Packed blocks of ``seq_len`` tokens from documents [TRAIN_DOCS, stop): ``input_ids`` and ``row_id``."""
    ids = tok(texts(stop), add_special_tokens=False)["input_ids"]
    table = pack(ids, seq_len, vocab.cls_id, vocab.sep_id)
    return {"input_ids": table.column("input_ids").combine_chunks().to_numpy_ndarray().astype(dtype),
            "row_id": table.column("row_id").to_numpy()}


def transformed(objective, blocks, seed=0, epoch=0, rows=slice(None)):
    """``objective.transform`` of (some of) the blocks, with their per-row randomness."""
    ids, row_ids = blocks["input_ids"][rows], blocks["row_id"][rows]
    return objective.transform({"input_ids": ids}, RowRandom(seed, epoch, row_ids))


def assert_share(count, total, p, what):
    """``count / total`` is ``p`` within ``Z`` binomial standard errors."""
    se = np.sqrt(p * (1 - p) / total)
    assert abs(count / total - p) <= Z * se + 1e-12, f"{what}: {count / total:.4f} vs {p} (se {se:.4f})"


def assert_row_keyed(objective, blocks) -> None:
    """A row's corruption depends on (seed, epoch, row) only: not on the batch, its order or its size."""
    whole = transformed(objective, blocks, seed=7, epoch=2, rows=slice(0, 64))
    again = transformed(objective, blocks, seed=7, epoch=2, rows=slice(0, 64))
    perm = np.random.default_rng(0).permutation(64)
    shuffled = transformed(objective, blocks, seed=7, epoch=2, rows=perm)
    alone = transformed(objective, blocks, seed=7, epoch=2, rows=slice(17, 18))
    for key in whole:
        np.testing.assert_array_equal(again[key], whole[key])
        np.testing.assert_array_equal(shuffled[key], whole[key][perm])
        np.testing.assert_array_equal(alone[key][0], whole[key][17])
