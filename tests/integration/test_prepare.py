"""Prepare once, reuse everywhere: `sslab prepare` fills the data cache, and a later `sslab
pretrain` in a fresh process finds the rows and the tokenizer there and tokenises nothing; a
corpus that changed is prepared again, and an entry whose preparation was cut short is rebuilt."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

import sslab
from sslab import synthetic
from sslab.config import SyntheticConfig

pytestmark = pytest.mark.slow

COMMON = ["train.seq_len=64", "tokenizer.vocab_size=1000", "data.shard_rows=50"]


@pytest.fixture
def folder(tmp_path):
    """A folder of text files, one document per line."""
    root = tmp_path / "corpus"
    root.mkdir()
    docs = synthetic.generate(SyntheticConfig(num_docs=900), 0, 900)["text"]
    for i in range(3):
        (root / f"part{i}.txt").write_text("\n".join(docs[i::3]) + "\n")
    return root


def sslab_cli(*argv: str, cache, cwd, **env_vars) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # no Ray to join: the command starts its own
    env.update(SSLAB_CACHE_DIR=str(cache), **env_vars)
    done = subprocess.run([sys.executable, "-m", "sslab.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_prepare_then_pretrain_in_a_fresh_process_tokenises_once(folder, tmp_path):
    cache = tmp_path / "cache"
    prep = sslab_cli("prepare", "--corpus", str(folder), *COMMON, cache=cache, cwd=tmp_path,
                     SSLAB_PROGRESS_EVERY_S="0.2")
    (entry,) = (cache / "data").iterdir()
    manifest = json.loads((entry / "manifest.json").read_text())
    train = manifest["splits"]["train"]
    assert "prepared data written" in prep.stdout and f"{train['rows']:,} rows" in prep.stdout
    assert train["rows"] > 100 and train["tokens"] == train["rows"] * 64 and len(train["shards"]) > 2
    assert manifest["splits"]["probe"]["rows"] == 0  # plain text has no labels for the probe
    # Outside a terminal, progress lines while a split is written; the training split's with an ETA.
    lines = [line for line in prep.stdout.splitlines() if line.startswith("[sslab] prepare: train split: ")]
    assert lines and all(" rows/s" in line for line in lines), prep.stdout
    assert any(" of about " in line and " | eta " in line for line in lines), prep.stdout
    (tokenizer,) = (cache / "tokenizers").iterdir()

    run = tmp_path / "run"
    done = sslab_cli("pretrain", "--corpus", str(folder), "--preset", "tiny", "--max-steps", "5", "--out", str(run),
                     "train.batch_size=8", "train.warmup_steps=1", "eval.probe_docs=0", *COMMON,
                     cache=cache, cwd=tmp_path)
    assert f"prepared data: found {entry}" in done.stdout and "nothing to tokenise" in done.stdout
    assert "writing the train split" not in done.stdout and "tokenizer sample" not in done.stdout
    assert list((cache / "data").iterdir()) == [entry]
    assert len([p for p in entry.iterdir() if p.name.startswith("attempt-")]) == 1  # written once, by prepare
    assert (run / "tokenizer" / "tokenizer.json").read_text() == (tokenizer / "tokenizer.json").read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 5 and summary["train_blocks"] == train["rows"]


def test_a_changed_corpus_is_prepared_again_and_a_cut_short_entry_is_rebuilt(ray_cluster, folder, tmp_path):
    overrides = [f"corpus.source={folder}", f"data.cache_dir={tmp_path / 'cache'}", "run.quiet=true", *COMMON]
    first = sslab.prepare(overrides=overrides)
    again = sslab.prepare(overrides=overrides)
    synthetic_entry = sslab.prepare(overrides=[*overrides, "corpus.source=synthetic", "corpus.synthetic.num_docs=400"])
    assert synthetic_entry.splits["probe"]["rows"] > 0  # the labelled validation documents, kept for the probe
    assert not first.hit and again.hit and again.entry.uri == first.entry.uri and again.splits == first.splits

    with open(folder / "part0.txt", "a") as f:
        f.write("one more document, so the corpus is not the one that was prepared\n")
    changed = sslab.prepare(overrides=overrides)
    assert not changed.hit and changed.key != first.key

    (tmp_path / "cache" / "data" / changed.key / "manifest.json").unlink()  # as a prepare killed before its manifest
    rebuilt = sslab.prepare(overrides=overrides)
    assert not rebuilt.hit and rebuilt.key == changed.key and rebuilt.splits == changed.splits
    assert sslab.prepare(overrides=overrides).hit


def test_a_search_prepares_each_value_of_a_searched_row_field_once_before_its_trials(ray_cluster, tmp_path):
    from sslab.search import prepared_once
    from sslab.search_spec import load_spec

    cache = tmp_path / "cache"
    spec = load_spec({"base": {"objective": "mlm", "corpus": "synthetic"}, "metric": "eval_mlm_loss", "mode": "min",
                      "space": {"train.seq_len": {"grid": [48, 64]}, "train.lr": {"loguniform": [1e-4, 1e-3]}}},
                     ["corpus.synthetic.num_docs=400", "tokenizer.vocab_size=1000", "data.shard_rows=50",
                      f"data.cache_dir={cache}", "run.quiet=true"])
    base = prepared_once(spec, tmp_path / "search")
    assert "path" not in base.get("tokenizer", {})  # each value's tokenizer is the data cache's
    entries = sorted((cache / "data").iterdir())
    assert len(entries) == 2  # one per seq_len, none per learning rate
    for entry in entries:
        assert len([p for p in entry.iterdir() if p.name.startswith("attempt-")]) == 1
    # What a trial of each value prepares is already there: nothing is tokenised again.
    for seq_len in (48, 64):
        found = sslab.prepare(spec.base_config({"train.seq_len": seq_len, "train.lr": 3e-4}))
        assert found.hit and found.entry.manifest.seq_len == seq_len
    # A continuous row field leaves each trial to prepare its own value.
    spec.domains[0] = dataclasses.replace(spec.domains[0], kind="randint", args=(48, 65))
    assert prepared_once(spec, tmp_path / "search2") == spec.base
    assert len(list((cache / "data").iterdir())) == 2


def test_resolve_prepare_and_train_are_the_stages_of_a_run(ray_cluster, tiny, tmp_path):
    cfg = sslab.resolve(overrides=tiny(tmp_path / "run", "train.max_steps=3", "train.warmup_steps=1",
                                       "eval.probe_docs=50", f"data.cache_dir={tmp_path / 'cache'}"))
    data = sslab.prepare(cfg)
    assert not data.hit and data.config.train.max_steps == 3 and data.probe is not None
    assert data.vocab.size == data.objective.vocab.size
    result = sslab.train(data)
    assert result.summary["steps"] == 3 and result.summary["train_blocks"] == data.splits["train"]["rows"]
    assert (result.run_dir / "tokenizer" / "tokenizer.json").is_file()  # where a resume finds it
    assert sslab.prepare(cfg).hit  # and nothing else was written to the cache
    assert len(list((tmp_path / "cache" / "data").iterdir())) == 1
