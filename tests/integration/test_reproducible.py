"""Same seed, same run: two fresh run directories with one config train the same tokenizer, byte for
byte, and the same losses, step for step."""
from __future__ import annotations

import json

import pytest

import sslab
from sslab.config import load

pytestmark = pytest.mark.slow


def run_in(out):
    """A tiny run that trains its own (WordPiece) tokenizer on the synthetic corpus."""
    return sslab.pretrain(load(overrides=[
        "corpus.source=synthetic", "corpus.synthetic.num_docs=1000", "tokenizer.vocab_size=500",
        "model.preset=tiny", "train.seq_len=64", "train.batch_size=16", "train.lr=1e-3", "train.warmup_steps=5",
        "train.max_steps=10", "train.log_every=2", "train.eval_every=10", "train.checkpoint_every=10",
        "eval.max_blocks=64", "eval.probe_docs=0", "run.quiet=true", f"run.out={out}"]))


def test_two_runs_with_one_config_and_seed_train_the_same_tokenizer_and_losses(ray_cluster, tmp_path):
    first, second = run_in(tmp_path / "first"), run_in(tmp_path / "second")
    tokenizers = [r.run_dir / "tokenizer" / "tokenizer.json" for r in (first, second)]
    assert tokenizers[0].read_bytes() == tokenizers[1].read_bytes()
    rows = [[json.loads(line) for line in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
            for r in (first, second)]
    assert [row["step"] for row in rows[0]] == [2, 4, 6, 8, 10]
    assert [row["loss"] for row in rows[0]] == [row["loss"] for row in rows[1]]
    assert first.summary["metrics"]["eval_mlm_loss"] == second.summary["metrics"]["eval_mlm_loss"]
