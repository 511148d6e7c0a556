"""Reading corpora: files, directories, globs, formats, cleaning, errors and the split."""
import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from sslab import corpus
from sslab.config import CorpusConfig, SyntheticConfig
from sslab.errors import CorpusError, find_sslab_error


def read(**kwargs) -> list[dict]:
    return corpus.read_documents(CorpusConfig(**kwargs)).take_all()


def texts(rows) -> list[str]:
    return sorted(r["text"] for r in rows)


def worker_error(ds) -> str:
    """The message of the CorpusError that running ``ds`` raises in a Ray Data worker."""
    with pytest.raises(Exception) as info:
        ds.take_all()
    err = find_sslab_error(info.value)
    assert isinstance(err, CorpusError), info.value
    return str(err)


# ---------------------------------------------------------------- resolving files


def test_resolve_files_reads_directories_recursively_skipping_hidden_files(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / ".git").mkdir()
    for name in ("a.txt", "sub/b.md", ".hidden.txt", ".git/c.txt", "notes"):
        (tmp_path / name).write_text("x\n")
    files = corpus.resolve_files(CorpusConfig(source=str(tmp_path)))
    assert [f.rsplit("/", 2)[-2:] for f in files] == [[tmp_path.name, "a.txt"], ["sub", "b.md"]]
    # Without any known extension, every (visible) file is part of the corpus.
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "data").write_text("x\n")
    assert [f.rsplit("/", 1)[-1] for f in corpus.resolve_files(CorpusConfig(source=str(tmp_path / "only")))] == ["data"]


@pytest.mark.parametrize("uri", [False, True], ids=["path", "file_uri"])
def test_resolve_files_accepts_a_file_a_folder_and_a_glob_as_paths_or_file_uris(tmp_path, uri):
    (tmp_path / "sub").mkdir()
    for name in ("a.txt", "b.txt", "c.jsonl", ".d.txt", "sub/e.txt"):
        (tmp_path / name).write_text("x\n")
    name = (lambda p: (tmp_path / p).as_uri()) if uri else (lambda p: str(tmp_path / p))
    a, b, e = (str(tmp_path / p) for p in ("a.txt", "b.txt", "sub/e.txt"))
    assert corpus.resolve_files(CorpusConfig(source=name("a.txt"))) == [a]
    assert corpus.resolve_files(CorpusConfig(source=name("sub"))) == [e]
    assert corpus.resolve_files(CorpusConfig(source=name("*.txt"))) == [a, b]  # hidden files skipped
    assert corpus.resolve_files(CorpusConfig(source=name("**/*.txt"))) == [a, b, e]  # ** spans folders


@pytest.mark.parametrize("kind", ["missing", "glob", "empty_dir"])
def test_resolve_files_names_the_path_it_cannot_use(tmp_path, kind):
    source = {"missing": tmp_path / "nope.txt", "glob": tmp_path / "*.jsonl", "empty_dir": tmp_path}[kind]
    with pytest.raises(CorpusError, match="does not exist|matches no files|holds no files") as info:
        corpus.resolve_files(CorpusConfig(source=str(source)))
    assert str(source) in str(info.value)


def test_resolve_format_goes_by_extension_and_refuses_a_mix():
    cfg = CorpusConfig(source="d")
    assert corpus.resolve_format(cfg, ["a.jsonl", "b.json"]) == "jsonl"
    assert corpus.resolve_format(cfg, ["a.parquet"]) == "parquet"
    assert corpus.resolve_format(cfg, ["a.txt", "b.md", "c"]) == "text"
    assert corpus.resolve_format(CorpusConfig(source="d", format="jsonl"), ["a.txt"]) == "jsonl"
    with pytest.raises(CorpusError, match=r"mixes file formats.*jsonl: a\.jsonl.*text: b\.txt"):
        corpus.resolve_format(cfg, ["a.jsonl", "b.txt"])


# ---------------------------------------------------------------- readers


def test_text_file_gives_one_cleaned_document_per_line(ray_cluster, tmp_path):
    (tmp_path / "a.txt").write_text("  hello \t world \n\n   \nsecond\u00a0line\nab\n")
    rows = read(source=str(tmp_path / "a.txt"), min_chars=3)
    assert texts(rows) == ["hello world", "second line"]  # "ab" is shorter than min_chars
    assert all(r["label"] is None for r in rows) and set(rows[0]) == {"text", "label"}


def test_directory_and_glob_read_every_file(ray_cluster, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("one\ntwo\n")
    (tmp_path / "sub" / "b.txt").write_text("three\n")
    assert texts(read(source=str(tmp_path))) == ["one", "three", "two"]
    assert texts(read(source=str(tmp_path / "**" / "*.txt"))) == ["one", "three", "two"]


def test_file_uris_read_a_folder_a_glob_and_a_file(ray_cluster, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n')
    (tmp_path / "sub" / "b.jsonl").write_text('{"text": "three"}\n')
    assert texts(read(source=tmp_path.as_uri())) == ["one", "three", "two"]  # the text field, not raw JSON
    assert texts(read(source=(tmp_path / "**" / "b.jsonl").as_uri())) == ["three"]
    assert texts(read(source=(tmp_path / "a.jsonl").as_uri())) == ["one", "two"]


def test_extensionless_files_holding_json_lines_or_parquet_need_corpus_format(tmp_path):
    (tmp_path / "part-00000").write_text('{"text": "one"}\n')
    with pytest.raises(CorpusError, match=r"part-00000: holds JSON Lines .*corpus\.format=jsonl"):
        corpus.check(CorpusConfig(source=str(tmp_path)))
    corpus.check(CorpusConfig(source=str(tmp_path), format="jsonl"))
    corpus.check(CorpusConfig(source=str(tmp_path), format="text"))  # the raw lines, asked for
    pq.write_table(pa.table({"text": ["x"]}), tmp_path / "part-00000")
    with pytest.raises(CorpusError, match=r"part-00000: a Parquet file .*corpus\.format=parquet"):
        corpus.check(CorpusConfig(source=str(tmp_path)))


def test_paragraph_split_joins_the_lines_of_a_paragraph(ray_cluster, tmp_path):
    (tmp_path / "a.txt").write_text("first line\nof one\n\n \nsecond paragraph\n\n\nthird\n")
    rows = read(source=str(tmp_path / "a.txt"), doc_split="paragraph")
    assert texts(rows) == ["first line of one", "second paragraph", "third"]


def test_jsonl_reads_the_text_and_label_fields(ray_cluster, tmp_path):
    lines = [{"body": "a  cat", "topic": 3}, {"body": "a dog", "topic": "pets"}, {"body": "no label"}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    rows = read(source=str(tmp_path / "d.jsonl"), text_field="body", label_field="topic")
    assert sorted((r["text"], r["label"] or "") for r in rows) == [("a cat", "3"), ("a dog", "pets"), ("no label", "")]


def test_parquet_reads_the_named_columns(ray_cluster, tmp_path):
    table = pa.table({"body": ["x  y", "z", None], "topic": [1, 2, 3], "other": [0, 0, 0]})
    pq.write_table(table, tmp_path / "d.parquet")
    rows = read(source=str(tmp_path / "d.parquet"), text_field="body", label_field="topic")
    assert sorted((r["text"], r["label"]) for r in rows) == [("x y", "1"), ("z", "2")]
    assert set(rows[0]) == {"text", "label"}


def test_synthetic_source_reads_the_built_in_corpus(ray_cluster):
    rows = read(source="synthetic", synthetic=SyntheticConfig(num_docs=40))
    assert len(rows) == 40 and all(r["label"].startswith("topic_") for r in rows)


def test_undecodable_bytes_are_replaced_not_fatal(ray_cluster, tmp_path):
    (tmp_path / "a.txt").write_bytes(b"good line\nbad \xff\xfe byte\n")
    assert texts(read(source=str(tmp_path / "a.txt"))) == ["bad \ufffd\ufffd byte", "good line"]


def test_decode_reports_only_bytes_it_replaced(caplog):
    with caplog.at_level(logging.WARNING, logger="sslab.corpus"):
        assert corpus.decode("ok \ufffd".encode(), "clean.txt") == "ok \ufffd"
        assert caplog.records == []  # a literal U+FFFD in the file is not a decoding problem
        assert corpus.decode(b"\xff ok \xef\xbf\xbd", "bad.txt") == "\ufffd ok \ufffd"
    assert "bad.txt" in caplog.text and "1 undecodable" in caplog.text


# ---------------------------------------------------------------- malformed input


def test_bad_json_line_names_file_and_line(ray_cluster, tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "fine"}\n{"text": oops}\n')
    ds = corpus.read_documents(CorpusConfig(source=str(tmp_path / "d.jsonl")))
    assert "d.jsonl:2: not valid JSON" in worker_error(ds)
    with pytest.raises(CorpusError) as info:  # on the driver: exactly the message raised, one line
        corpus.count_documents(ds, "d")
    assert str(info.value).startswith(f"{tmp_path / 'd.jsonl'}:2: not valid JSON (")
    assert "\n" not in str(info.value)
    # Keeping the error intact must not change how Ray Data behaves for other datasets.
    assert not ray.data.DataContext.get_current().raise_original_map_exception


def test_missing_jsonl_field_names_file_line_and_field(ray_cluster, tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "fine"}\n{"text": "ok"}\n{"body": "x"}\n')
    ds = corpus.read_documents(CorpusConfig(source=str(tmp_path / "d.jsonl")))
    assert "d.jsonl:3: no string field 'text'" in worker_error(ds)


def test_missing_parquet_column_names_column_and_file(ray_cluster, tmp_path):
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "d.parquet")
    with pytest.raises(CorpusError, match=r"d\.parquet: no column 'text' \(columns: body\)"):
        corpus.read_documents(CorpusConfig(source=str(tmp_path / "d.parquet")))
    with pytest.raises(CorpusError, match=r"d\.parquet: no column 'topic'"):
        corpus.read_documents(CorpusConfig(source=str(tmp_path / "d.parquet"), text_field="body", label_field="topic"))
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "d.parquet")
    with pytest.raises(CorpusError, match=r"d\.parquet: column 'text' holds int64, not strings"):
        corpus.read_documents(CorpusConfig(source=str(tmp_path / "d.parquet")))


def test_corpus_empty_after_cleaning_is_an_error(ray_cluster, tmp_path):
    (tmp_path / "a.txt").write_text("ab\n  \n\ncd\n")
    cfg = CorpusConfig(source=str(tmp_path / "a.txt"), min_chars=5)
    with pytest.raises(CorpusError, match="is empty after cleaning"):
        corpus.count_documents(corpus.read_documents(cfg), cfg.source)
    assert corpus.count_documents(corpus.read_documents(CorpusConfig(source=cfg.source)), cfg.source) == 2


# ---------------------------------------------------------------- train / validation split


def test_split_is_deterministic_disjoint_and_near_val_fraction(ray_cluster, tmp_path):
    lines = [f"document number {i}" for i in range(3000)]
    (tmp_path / "a.txt").write_text("\n".join(lines[:1700]) + "\n")
    (tmp_path / "b.txt").write_text("\n".join(lines[1700:]) + "\n")
    ds = corpus.read_documents(CorpusConfig(source=str(tmp_path)))
    train, val = (set(texts(d.take_all())) for d in corpus.split(ds, 0.2))
    assert train.isdisjoint(val) and train | val == set(lines)
    assert abs(len(val) / 3000 - 0.2) < 4 * (0.2 * 0.8 / 3000) ** 0.5
    # Another file layout and block count give the same split.
    (tmp_path / "a.txt").write_text("\n".join(reversed(lines)) + "\n")
    (tmp_path / "b.txt").unlink()
    reordered = corpus.read_documents(CorpusConfig(source=str(tmp_path))).repartition(7)
    assert set(texts(corpus.split(reordered, 0.2)[1].take_all())) == val
