"""Corpora in object storage, read through a real S3 API: moto's standalone server on 127.0.0.1.

The endpoint and keys are passed as a user passes them (``AWS_ENDPOINT_URL`` and the AWS key
variables in the driver's environment, or ``?endpoint_override=`` in the URI), and only after
the session's Ray has started: its workers never see them, as the workers of a cluster the driver
joins would not, so every test here also shows that they reach Ray Data's workers by value.
"""
from __future__ import annotations

import io
import json
import math
import os

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import yaml
from moto.server import ThreadedMotoServer

import sslab
from sslab import corpus, synthetic
from sslab.config import CorpusConfig, SyntheticConfig, load
from sslab.errors import CorpusError

BUCKET = "corpora"
TEXTS = ["the first line of a plain text file", "a second line", "one more in a sub folder"]
RECORDS = [{"text": f"record {i} text", "content": f"the content of record {i}", "topic": f"t{i % 2}"}
           for i in range(6)]
ROWS = {"text": ["a parquet row", "another parquet row"], "label": ["x", "y"]}


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def jsonl(records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def web_corpus() -> str:
    """Enough labelled documents for a few steps of a tiny model, as one JSONL file."""
    docs = synthetic.generate(SyntheticConfig(num_docs=600), 0, 600)
    return jsonl({"text": t, "topic": lab} for t, lab in zip(docs["text"], docs["label"]))


OBJECTS = {
    "text/a.txt": "\n".join(TEXTS[:2]) + "\n",
    "text/sub/b.txt": TEXTS[2] + "\n",
    "text/.hidden.txt": "never read\n",
    "jsonl/part-0.jsonl": jsonl(RECORDS[:3]),
    "jsonl/part-1.jsonl": jsonl(RECORDS[3:]),
    "parquet/rows.parquet": parquet_bytes(pa.table(ROWS)),
    "mixed/a.txt": "a line\n",
    "mixed/b.jsonl": jsonl(RECORDS[:1]),
    "parts/part-00000": jsonl(RECORDS),  # JSON Lines without an extension, as Spark writes them
    "bad/x.jsonl": '{"text": "fine"}\n{"text": oops}\n',
    "web/docs.jsonl": web_corpus(),
}


@pytest.fixture(scope="module")
def s3(ray_cluster, tmp_path_factory):
    """The endpoint of a local S3 holding bucket ``corpora`` (see OBJECTS), with the variables a
    user would set in the environment. Ray is started first, so its workers lack them."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    nowhere = str(tmp_path_factory.mktemp("aws") / "none")  # no ~/.aws file of this machine counts
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test-key",
                            "AWS_SECRET_ACCESS_KEY": "test-secret", "AWS_REGION": "us-east-1",
                            "AWS_CONFIG_FILE": nowhere, "AWS_SHARED_CREDENTIALS_FILE": nowhere,
                            "AWS_EC2_METADATA_DISABLED": "true"}.items():
            mp.setenv(name, value)
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket=BUCKET)
        for key, body in OBJECTS.items():
            client.put_object(Bucket=BUCKET, Key=key, Body=body.encode() if isinstance(body, str) else body)
        yield endpoint
    server.stop()


def read(**kwargs) -> list[dict]:
    cfg = CorpusConfig(**kwargs)
    corpus.check(cfg)  # what a run does first, on the driver
    return corpus.read_documents(cfg).take_all()


def texts(rows) -> list[str]:
    return sorted(r["text"] for r in rows)


@ray.remote
def worker_env(name: str) -> str | None:
    return os.environ.get(name)


def test_ray_data_workers_do_not_see_the_drivers_s3_settings(s3):
    # The premise of every test below: what reaches the workers, reaches them by value.
    assert ray.get(worker_env.remote("AWS_ENDPOINT_URL")) is None
    assert ray.get(worker_env.remote("AWS_ACCESS_KEY_ID")) is None


def test_a_text_prefix_reads_its_lines_from_every_visible_file(s3):
    assert corpus.resolve_files(CorpusConfig(source=f"s3://{BUCKET}/text/")) == [
        f"s3://{BUCKET}/text/a.txt", f"s3://{BUCKET}/text/sub/b.txt"]
    assert texts(read(source=f"s3://{BUCKET}/text/")) == sorted(TEXTS)


def test_a_jsonl_prefix_reads_the_text_field_not_raw_json_lines(s3):
    rows = read(source=f"s3://{BUCKET}/jsonl/")
    assert texts(rows) == sorted(r["text"] for r in RECORDS)
    rows = read(source=f"s3://{BUCKET}/jsonl", text_field="content", label_field="topic")
    assert sorted((r["text"], r["label"]) for r in rows) == sorted((r["content"], r["topic"]) for r in RECORDS)


def test_a_parquet_prefix_reads_its_columns(s3):
    rows = read(source=f"s3://{BUCKET}/parquet/", label_field="label")
    assert sorted((r["text"], r["label"]) for r in rows) == sorted(zip(ROWS["text"], ROWS["label"]))


def test_a_glob_and_a_single_object_read_too(s3):
    assert texts(read(source=f"s3://{BUCKET}/jsonl/*-1.jsonl")) == sorted(r["text"] for r in RECORDS[3:])
    assert texts(read(source=f"s3://{BUCKET}/text/sub/b.txt")) == [TEXTS[2]]


def test_the_endpoint_may_be_given_in_the_uri_instead(s3, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    source = f"s3://{BUCKET}/jsonl/?endpoint_override={s3}"
    assert corpus.resolve_files(CorpusConfig(source=source))[0] == f"s3://{BUCKET}/jsonl/part-0.jsonl"
    assert texts(read(source=source)) == sorted(r["text"] for r in RECORDS)


def test_extensionless_json_lines_need_corpus_format(s3):
    with pytest.raises(CorpusError, match=rf"s3://{BUCKET}/parts/part-00000: holds JSON Lines .* corpus.format=jsonl"):
        corpus.check(CorpusConfig(source=f"s3://{BUCKET}/parts/"))
    assert texts(read(source=f"s3://{BUCKET}/parts/", format="jsonl")) == sorted(r["text"] for r in RECORDS)


@pytest.mark.parametrize("prefix, message", [
    ("nothing/", "does not exist"),
    ("mixed/", r"mixes file formats \(jsonl: b\.jsonl; text: a\.txt\)"),
], ids=["empty_prefix", "mixed_formats"])
def test_a_bad_prefix_is_named_before_ray_is_used(s3, prefix, message):
    source = f"s3://{BUCKET}/{prefix}"
    with pytest.raises(CorpusError, match=message) as info:
        corpus.check(CorpusConfig(source=source))
    assert source in str(info.value)


def test_a_missing_bucket_is_named(s3):
    with pytest.raises(CorpusError, match="there is no bucket 'no-such-bucket'") as info:
        corpus.check(CorpusConfig(source="s3://no-such-bucket/corpus/"))
    assert "s3://no-such-bucket/corpus/" in str(info.value)


def test_a_bad_line_is_named_by_its_uri(s3):
    ds = corpus.read_documents(CorpusConfig(source=f"s3://{BUCKET}/bad/"))
    with pytest.raises(CorpusError, match=rf"^s3://{BUCKET}/bad/x\.jsonl:2: not valid JSON"):
        corpus.count_documents(ds, f"s3://{BUCKET}/bad/")


def test_pretrain_refuses_a_bad_s3_corpus_before_it_writes_anything(s3, tiny, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(CorpusError, match="mixes file formats"):
        sslab.pretrain(load(overrides=tiny(out, f"corpus.source=s3://{BUCKET}/mixed/")))
    assert not out.exists()


@pytest.mark.slow
def test_an_s3_jsonl_corpus_trains_from_a_data_cache_in_s3(s3, tiny, tmp_path):
    # The prepared rows go to the bucket too, and the training stream's read tasks (Ray workers
    # without the driver's S3 settings) read them back with the driver's endpoint and keys.
    source, cache = f"s3://{BUCKET}/web/", f"s3://{BUCKET}/cache"
    result = sslab.pretrain(load(overrides=tiny(tmp_path / "run", f"corpus.source={source}", f"data.cache_dir={cache}",
                                                "corpus.label_field=topic", "eval.probe_docs=50", "eval.max_blocks=32",
                                                "train.max_steps=5", "train.warmup_steps=1", "train.log_every=5")))
    assert result.summary["steps"] == 5
    assert all(math.isfinite(v) for v in result.summary["metrics"].values()), result.summary["metrics"]
    assert yaml.safe_load((result.run_dir / "config.yaml").read_text())["corpus"]["source"] == source
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3).list_objects_v2(
        Bucket=BUCKET, Prefix="cache/data/")["Contents"]]
    (manifest,) = [k for k in keys if k.endswith("/manifest.json")]
    assert any(k.endswith(".parquet") and "/train/" in k for k in keys), keys
    found = sslab.prepare(overrides=tiny(tmp_path / "again", f"corpus.source={source}", f"data.cache_dir={cache}",
                                         "corpus.label_field=topic", "eval.probe_docs=50", "eval.max_blocks=32"))
    assert found.hit and found.entry.uri == f"{cache}/data/{manifest.split('/')[2]}"
