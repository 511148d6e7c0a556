"""One local Ray cluster for every test that needs one (unit and integration alike), a tokenizer
trained once, and the overrides of a small run."""
from __future__ import annotations

import os

import pytest
import ray
import torch

from sslab import runner, synthetic, tokenizer
from sslab.config import SyntheticConfig, TokenizerConfig


def pytest_configure(config):
    # make test runs two test processes (pytest -n 2) on this machine's cores: one torch thread
    # each, rather than each spinning a thread per core against the other.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ray_cluster():
    # More logical CPUs than cores: Ray Data must corrupt batches beside two training workers.
    # Started as sslab starts its own (runner.start_local_ray): never joining a cluster `ray start`
    # left on this machine, its processes knowing its address (the CLI tests' subprocesses and a
    # parallel test worker start Rays of their own beside it), idle workers kept warm. The
    # dashboard stays: Ray Train's placement-group cleaner finds stopped runs through its State API,
    # and without it a stopped trial's CPUs are never freed.
    runner.start_local_ray(4)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    """A WordPiece tokenizer of the synthetic corpus, trained once and shared to save each run the
    training (which is deterministic: sslab.tokenizer works around huggingface/tokenizers#1794)."""
    path = tmp_path_factory.mktemp("tokenizer")
    docs = synthetic.generate(SyntheticConfig(num_docs=2000), 0, 2000)["text"]
    tokenizer.train_tokenizer(TokenizerConfig(vocab_size=2000), docs, 512).save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def tiny(tokenizer_dir):
    """``tiny(out, *extra)``: overrides of a small, fast run on the synthetic corpus."""
    return lambda out, *extra: ["corpus.source=synthetic", "corpus.synthetic.num_docs=2000", "model.preset=tiny",
            "train.seq_len=64", "train.batch_size=16", "train.lr=1e-3", "train.warmup_steps=20",
            "eval.max_blocks=128", "eval.probe_docs=200", "run.quiet=true", f"run.out={out}",
            f"tokenizer.path={tokenizer_dir}", *extra]
