"""The prepared-data cache's names and manifests: a changed input never reuses an entry, and an
entry exists only once its manifest is whole."""
from __future__ import annotations

import json
import os

import pyarrow.fs as pafs
import pytest

from sslab import corpus, prepared
from sslab.config import CorpusConfig, SyntheticConfig, TokenizerConfig
from sslab.errors import RunError


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "corpus"
    (root / "b").mkdir(parents=True)
    (root / "a.txt").write_text("first document\nsecond document\n")
    (root / "b" / "c.txt").write_text("third document\n")
    return root


def test_the_corpus_fingerprint_changes_with_its_files_and_reader_options_only(folder):
    cfg = CorpusConfig(source=str(folder))
    first = corpus.fingerprint(cfg)
    assert corpus.fingerprint(cfg) == first
    assert corpus.fingerprint(CorpusConfig(source=f"{folder}/**/*.txt")) == first  # the same files, named by a glob
    assert corpus.fingerprint(CorpusConfig(source=str(folder), min_chars=5)) != first
    assert corpus.fingerprint(CorpusConfig(source=str(folder), val_fraction=0.1)) != first
    stat = (folder / "a.txt").stat()
    os.utime(folder / "a.txt", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # touched
    touched = corpus.fingerprint(cfg)
    assert touched != first
    (folder / "b" / "d.txt").write_text("a new file\n")
    assert corpus.fingerprint(cfg) not in (first, touched)


def test_the_synthetic_corpus_is_fingerprinted_by_its_settings():
    base = corpus.fingerprint(CorpusConfig())
    assert corpus.fingerprint(CorpusConfig()) == base
    assert corpus.fingerprint(CorpusConfig(synthetic=SyntheticConfig(num_docs=500))) != base
    assert corpus.fingerprint(CorpusConfig(synthetic=SyntheticConfig(seed=1))) != base


def test_every_input_that_changes_the_rows_changes_the_data_key():
    key = prepared.data_key("corpus", '{"tok": 1}', 128, "packed", None)
    assert prepared.data_key("corpus", '{"tok": 1}', 128, "packed", None) == key
    changed = [prepared.data_key("other", '{"tok": 1}', 128, "packed", None),
               prepared.data_key("corpus", '{"tok": 2}', 128, "packed", None),
               prepared.data_key("corpus", '{"tok": 1}', 256, "packed", None),
               prepared.data_key("corpus", '{"tok": 1}', 128, "pairs", None),
               prepared.data_key("corpus", '{"tok": 1}', 128, "packed", "sentences")]
    assert key not in changed and len(set(changed)) == len(changed)
    tok = prepared.tokenizer_key("corpus", TokenizerConfig(), 512, 0)
    assert tok != prepared.tokenizer_key("corpus", TokenizerConfig(vocab_size=4000), 512, 0)
    assert tok != prepared.tokenizer_key("corpus", TokenizerConfig(), 512, 1)


def manifest(key="k1") -> prepared.Manifest:
    shards = (prepared.Shard("train/0.parquet", 10), prepared.Shard("train/1.parquet", 5))
    return prepared.Manifest(key=key, unit="packed", seq_len=64, splits={
        "train": prepared.Split(rows=15, tokens=960, shards=shards),
        "val": prepared.Split(rows=2, tokens=128, shards=(prepared.Shard("val/0.parquet", 2),))})


LOCAL = pafs.LocalFileSystem()


def test_a_manifest_reads_back_as_written(tmp_path):
    prepared.write_manifest(LOCAL, str(tmp_path), manifest())
    assert prepared.read_manifest(LOCAL, str(tmp_path), "k1") == manifest()
    assert [p.name for p in tmp_path.iterdir()] == [prepared.MANIFEST]  # no temporary file left


class FullDisk(pafs.PyFileSystem):
    """The local filesystem, except that the manifest's final move fails."""

    def __init__(self):
        super().__init__(pafs.FSSpecHandler(__import__("fsspec").filesystem("file")))

    def move(self, src, dest):
        raise OSError("disk full")


def test_an_entry_without_its_manifest_does_not_exist_and_a_failed_write_leaves_none(tmp_path):
    assert prepared.read_manifest(LOCAL, str(tmp_path), "k1") is None
    with pytest.raises(OSError, match="disk full"):
        prepared.write_manifest(FullDisk(), str(tmp_path), manifest())
    assert list(tmp_path.iterdir()) == []
    assert prepared.read_manifest(LOCAL, str(tmp_path), "k1") is None


@pytest.mark.parametrize("damage, message", [
    (lambda d: {**d, "format": 0}, "data format 0, this one reads"),
    (lambda d: {**d, "key": "k2"}, "is the manifest of entry k2, not of k1"),
    (lambda d: {k: v for k, v in d.items() if k != "splits"}, "is not a manifest sslab can read"),
])
def test_a_manifest_of_another_format_or_entry_is_refused_with_what_to_do(tmp_path, damage, message):
    (tmp_path / prepared.MANIFEST).write_text(json.dumps(damage(manifest().to_dict())))
    with pytest.raises(RunError, match=message) as e:
        prepared.read_manifest(LOCAL, str(tmp_path), "k1")
    assert "prepare the corpus again" in str(e.value)
