"""One local Ray cluster for every test that needs one (unit and integration alike), a tokenizer
trained once, and the overrides of a small run."""
from __future__ import annotations

import os

import pytest
import ray

from sslab import cluster, synthetic, tokenizer
from sslab.config import SyntheticConfig, TokenizerConfig


@pytest.fixture(scope="session", autouse=True)
def data_cache(tmp_path_factory):
    """One prepared-data cache for the session (never the user's ``~/.cache/sslab``), shared as
    runs on one machine share theirs; CLI subprocesses inherit it. A test of the cache itself
    names its own ``data.cache_dir``."""
    path = tmp_path_factory.mktemp("sslab-cache")
    previous = os.environ.get("SSLAB_CACHE_DIR")
    os.environ["SSLAB_CACHE_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("SSLAB_CACHE_DIR", None)
    else:
        os.environ["SSLAB_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def _ray_session():
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_cluster(_ray_session):
    """One local Ray for the whole session, started by the first module that asks for it (and
    again after a module that ran a Ray of its own, as the multi-node tests do)."""
    if not ray.is_initialized():
        # More logical CPUs than cores: Ray Data must corrupt batches beside two training workers.
        # Started as sslab starts its own (cluster.start_local_ray): never joining a cluster that
        # `ray start` left here, idle worker processes warm between runs, and the dashboard on: Ray
        # Train's placement-group cleaner finds stopped runs through its State API, and without it
        # (or beside another Ray on the machine, but for cluster.own_state_api) a stopped trial's
        # CPUs are never freed.
        cluster.start_local_ray(4)
    yield


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
