"""Training order on a corpus sorted by topic, as real corpora come sorted by file, section or
source: with the default shuffle, a run learns every topic as well as a run on a copy shuffled
offline does; in corpus order (``data.shuffle=none``) it stops before the last topics and
drifts, which is what makes this test able to fail."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import sslab
from sslab import pipeline, synthetic
from sslab.checkpoint import read_state
from sslab.config import SyntheticConfig, load
from sslab.objectives import get
from sslab.rng import RowRandom
from sslab.tokenizer import load_tokenizer, vocab_of

# Three training runs: in make test-cluster, with the other long suites.
pytestmark = [pytest.mark.slow, pytest.mark.cluster]

TOPICS, DOCS = 8, 2400
RUN = ["model.preset=tiny", "train.seq_len=64", "train.batch_size=16", "train.lr=2e-3", "train.warmup_steps=10",
       "train.max_steps=110", "train.eval_every=110", "train.checkpoint_every=110", "eval.probe_docs=0",
       "corpus.val_fraction=0.02", "run.quiet=true", "track.tensorboard=false"]


def write(folder: Path, texts: list[str], files: int = 8) -> Path:
    folder.mkdir()
    for i, part in enumerate(np.array_split(np.array(texts, dtype=object), files)):
        (folder / f"part{i:02d}.txt").write_text("\n".join(part) + "\n")
    return folder


@pytest.fixture(scope="module")
def runs(ray_cluster, tokenizer_dir, tmp_path_factory):
    """The corpus sorted by topic with the default shuffle and in corpus order, and a copy shuffled
    offline read in its order: the same documents, model, tokenizer and steps (about 3/4 of an epoch)."""
    tmp = tmp_path_factory.mktemp("order")
    docs = synthetic.generate(SyntheticConfig(num_docs=DOCS, num_topics=TOPICS), 0, DOCS)
    by_topic = [t for _, t in sorted(zip(docs["label"], docs["text"]), key=lambda x: x[0])]
    shuffled = list(np.random.default_rng(0).permutation(np.array(docs["text"], dtype=object)))
    sorted_corpus, shuffled_corpus = write(tmp / "sorted", by_topic), write(tmp / "shuffled", shuffled)
    common = [f"tokenizer.path={tokenizer_dir}", f"data.cache_dir={tmp / 'cache'}", *RUN]
    out = {}
    for name, corpus, order in [("shuffled", sorted_corpus, "global"), ("offline", shuffled_corpus, "none"),
                                ("corpus order", sorted_corpus, "none")]:
        out[name] = sslab.pretrain(load(overrides=[f"corpus.source={corpus}", f"run.out={tmp / ('run-' + name.replace(' ', '-'))}",
                                                   f"data.shuffle={order}", *common]))
    return out


# Documents of the same generator after the corpus's last one: the same words and topics, unseen.
_held_out = synthetic.generate(SyntheticConfig(num_docs=DOCS + 1600, num_topics=TOPICS), DOCS, DOCS + 1600)
HELD_OUT = (_held_out["text"], _held_out["label"])


def held_out_loss(result, topic: int) -> float:
    """Masked-token loss of ``result``'s final model on unseen documents of one topic,
    15 % masking with a fixed seed: one evaluator for every run."""
    cfg = result.config
    tok = load_tokenizer(result.run_dir / "tokenizer")
    objective = get("mlm")(cfg.objective, vocab_of(tok))
    texts = [t for t, label in zip(*HELD_OUT) if label == f"topic_{topic:02d}"]
    assert texts, topic
    ids = [e.ids for e in tok.backend_tokenizer.encode_batch(texts, add_special_tokens=False)]
    table = pipeline.pack(ids, cfg.train.seq_len, objective.vocab.cls_id, objective.vocab.sep_id)
    blocks = table.column("input_ids").combine_chunks().to_numpy_ndarray()
    batch = objective.eval_transform({"input_ids": blocks}, RowRandom(99, 0, table.column("row_id").to_numpy()),
                                     cfg.eval)
    model = objective.build_model(cfg.model)
    model.load_state_dict(read_state(Path(result.summary["checkpoint"]))["model"])
    model.eval()
    with torch.no_grad():
        loss, _ = objective.loss(model, {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()})
    return float(loss)


# Two runs on the offline-shuffled copy that differ only in their random order (train.seed or
# data.shuffle) ended 2 % apart on the held-out loss (4.772 against 4.864 and 4.866 at 110 steps):
# the tolerance must exceed that noise, and corpus order still falls far outside it (its worst
# topic, one it never reached, was 20 % worse).
NOISE = 0.04


def test_the_default_shuffle_learns_a_sorted_corpus_as_an_offline_shuffle_does_and_corpus_order_drifts(runs):
    losses = {name: [held_out_loss(r, t) for t in range(TOPICS)] for name, r in runs.items()}
    print(json.dumps(losses, indent=1))
    shuffled, offline, ordered = (np.array(losses[k]) for k in ("shuffled", "offline", "corpus order"))
    assert abs(shuffled.mean() / offline.mean() - 1) <= NOISE, (shuffled, offline)
    assert np.all(np.abs(shuffled / offline - 1) <= NOISE + 0.01), (shuffled, offline)  # every topic too
    assert (ordered / offline).max() > 1 + 2 * NOISE, (ordered, offline)  # the topics it never reached
