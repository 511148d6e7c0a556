"""``sslab preview``: the first rows of a user's corpus as training reads them, without Ray.

The commands run in one ``sslab`` process with no Ray running and no ``RAY_ADDRESS`` (each
command's seconds are measured; the first one's include the imports), on small folders of text
files written here; Ray must not start. One test prepares the corpus on the tests' Ray and reads its
training stream as the workers do: the preview's rows are, id for id, the rows training reads.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import sslab
import sslab.cli
from sslab import synthetic
from sslab.config import SyntheticConfig
from sslab.objectives.base import IGNORE
from sslab.previews import format_rows
from sslab.stream import read_window

pytestmark = pytest.mark.slow

SMALL = ["train.seq_len=64", "tokenizer.vocab_size=600"]
ZH = ["北京是中国的首都。", "今天天气很好，我们去公园散步吧！", "上海是一个人口很多的大城市。",
      "研究人员用中文文本训练语言模型。", "这个方法的结果比以前好得多？", "学生们每天早上在图书馆学习。"]
COMMANDS = {
    "mlm": ["--objective", "mlm", "-n", "3", "objective.mask_ratio=0.3"],
    "mlm json": ["--objective", "mlm", "-n", "24", "--json", "objective.mask_ratio=0.3"],
    "sop": ["--objective", "sop", "-n", "2"],
    "sop json": ["--objective", "sop", "-n", "24", "--json"],
    "span": ["--objective", "span", "-n", "2", "--json"],
    "simcse": ["--objective", "simcse", "-n", "2", "--json"],
    "mixture": ["--objective", "mlm+sop", "-n", "2"],
    "mixture json": ["--objective", "mlm+sop", "-n", "2", "--json", "--epoch", "2", "--seed", "7"],
    "chinese": ["--objective", "mlm", "--corpus", "{zh}", "-n", "2", "--json", "objective.mask_ratio=0.3"],
    "unknown objective": ["--objective", "nope"],
    "missing corpus": ["--objective", "mlm", "--corpus", "{missing}"],
    "bad value": ["--objective", "mlm", "objective.mask_ratio=1.5"],
    "no rows": ["--objective", "mlm", "-n", "0"],
}
DRIVER = r"""
import contextlib, io, json, sys, time
from sslab.cli import main  # light: a command imports what it needs (the first one: Ray Data, tokenizers)
runs = {}
for name, argv in json.loads(sys.argv[1]).items():
    out, err, started = io.StringIO(), io.StringIO(), time.time()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
    runs[name] = {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue(), "s": time.time() - started}
import ray
print(json.dumps({"runs": runs, "ray_initialized": ray.is_initialized()}))
"""


def write_corpus(root: Path) -> Path:
    """Three text files of documents of several sentences, one per line."""
    root.mkdir()
    docs = synthetic.generate(SyntheticConfig(num_docs=300), 0, 300)["text"]
    for i in range(3):
        (root / f"part{i}.txt").write_text("\n".join(docs[i::3]) + "\n")
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("preview") / "corpus")


@pytest.fixture(scope="module")
def cli(corpus, tmp_path_factory) -> dict:
    """Every command of :data:`COMMANDS`, run in one fresh process without Ray."""
    tmp = tmp_path_factory.mktemp("preview-cli")
    zh = tmp / "zh"
    zh.mkdir()
    (zh / "a.txt").write_text("\n".join(["".join(ZH[i:] + ZH[:i]) for i in range(len(ZH))] * 4) + "\n")
    places = {"{zh}": str(zh), "{missing}": str(tmp / "no-such-folder")}
    argvs = {name: ["preview", "--corpus", str(corpus), *[places.get(a, a) for a in args], *SMALL]
             for name, args in COMMANDS.items()}
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = str(tmp / "ray")  # where a Ray started here would keep its session
    started = time.time()
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(argvs)], cwd=tmp, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    result.update(wall_s=time.time() - started, ray_dir=tmp / "ray")
    return result


def rows_of(cli: dict, name: str) -> list[dict]:
    run = cli["runs"][name]
    assert run["code"] == 0, run["stderr"]
    return json.loads(run["stdout"])


def test_preview_runs_without_ray_in_seconds(cli):
    assert not cli["ray_initialized"] and not cli["ray_dir"].exists(), "Ray started"
    times = {name: round(run["s"], 2) for name, run in cli["runs"].items()}
    print(f"\nthe process {cli['wall_s']:.1f} s; each command (the first imports sslab's data side): {times}")
    assert max(times.values()) < 15, times  # a tokenizer trained on the corpus's first documents, at most


def test_mlm_marks_masked_random_and_kept_tokens_with_their_labels(cli):
    text = cli["runs"]["mlm"]["stdout"]
    assert cli["runs"]["mlm"]["code"] == 0, cli["runs"]["mlm"]["stderr"]
    assert "«w→[MASK]» masked" in text and "tokens selected" in text
    assert re.search(r"«[^«»]+→(\[MASK\])+»", text), text
    rows = rows_of(cli, "mlm json")
    selected = eligible = 0
    actions = {"mask": 0, "random": 0, "kept": 0}
    for row in rows:
        (view,) = row["views"]
        source, ids, labels = (np.array(x) for x in (row["source"]["input_ids"], row["batch"]["input_ids"],
                                                      row["batch"]["labels"]))
        chosen = labels != IGNORE
        assert (labels[chosen] == source[chosen]).all()  # the label is the original token
        assert (ids[~chosen] == source[~chosen]).all()  # what is not selected is untouched
        assert view["marks"] == [("" if not c else "mask" if t == "[MASK]" else "kept" if i == s else "random")
                                 for c, t, i, s in zip(chosen, view["tokens"], ids, source)]
        selected, eligible = selected + chosen.sum(), eligible + view["counts"]["tokens"]
        for action in actions:
            actions[action] += view["counts"][action]
    assert len(rows) == 24 and abs(selected / eligible - 0.3) < 0.06, selected / eligible
    assert actions["mask"] > 0.65 * selected and actions["random"] > 0 and actions["kept"] > 0, actions


def test_sop_shows_two_segments_and_the_label(cli):
    text = cli["runs"]["sop"]["stdout"]
    assert re.search(r"label [01]: (in order|swapped)", text) and "\n       A: " in text and "\n       B: " in text
    rows = rows_of(cli, "sop json")
    assert {row["views"][0]["label"] for row in rows} == {0, 1}
    for row in rows:
        (view,) = row["views"]
        src = row["source"]
        a, b = src["a"][:src["a_len"]], src["b"][:src["b_len"]]
        first, second = (b, a) if view["label"] == 1 else (a, b)  # swapped: B comes first
        cls, sep = row["batch"]["input_ids"][0], row["batch"]["input_ids"][len(first) + 1]
        assert row["batch"]["input_ids"][:len(first) + len(second) + 3] == [cls, *first, sep, *second, sep]
        assert all(view["segments"]) and view["segments"][0] != view["segments"][1]


def test_span_shows_sentinels_in_the_input_and_the_target(cli):
    for row in rows_of(cli, "span"):
        (view,) = row["views"]
        sentinels = re.findall(r"<extra_id_\d+>", view["input"])
        assert sentinels and sentinels == re.findall(r"<extra_id_\d+>", view["target"])
        assert view["target"].startswith("<extra_id_0>")


def test_simcse_shows_the_two_views(cli):
    for row in rows_of(cli, "simcse"):
        (view,) = row["views"]
        assert len(view["views"]) == 2 and view["views"][0] == view["views"][1] and len(view["views"][0]) > 10


def test_a_mixture_shows_each_parts_view(cli):
    text = cli["runs"]["mixture"]["stdout"]
    assert re.search(r"\n  sop +label", text) and re.search(r"\n  mlm +\[CLS\]", text), text
    for row in rows_of(cli, "mixture json"):
        assert [v["part"] for v in row["views"]] == ["sop", "mlm"] and (row["epoch"], row["seed"]) == (2, 7)
        sop, mlm = row["views"]
        assert mlm["counts"]["selected"] > 0 and "sop_label" in row["batch"]
        assert sop["label"] == row["batch"]["sop_label"]


def test_chinese_text_reads_without_spaces(cli):
    rows = rows_of(cli, "chinese")
    shown = rows[0]["views"][0]["text"]
    assert not re.search(r"[\u4e00-\u9fff] [\u4e00-\u9fff]", shown), shown
    plain = re.sub(r"«=?([^«»→]*)(→[^«»]*)?»", r"\1", shown)  # the original text, marks taken out
    assert any(sentence in plain for sentence in ZH), plain


@pytest.mark.parametrize("name, needle", [("unknown objective", "objective 'nope' is unknown"),
                                          ("missing corpus", "does not exist"),
                                          ("bad value", "objective.mask_ratio=1.5"), ("no rows", "n=0")])
def test_bad_input_is_one_line_and_exit_code_1(cli, name, needle):
    run = cli["runs"][name]
    assert run["code"] == 1 and run["stdout"] == ""
    assert run["stderr"].splitlines() == [run["stderr"].strip()] and run["stderr"].startswith("sslab: error: ")
    assert needle in run["stderr"], run["stderr"]


def test_a_column_the_preview_does_not_know_is_summed_up_not_fatal(cli):
    """A new per-token column (say, which tokens continue a word) in a row, or in the batch an
    objective corrupts, shows as one line and travels in --json as it is."""
    rows = rows_of(cli, "mlm json")[:2]
    for row in rows:
        flags = [k % 3 == 0 for k in range(len(row["batch"]["input_ids"]))]
        row["source"]["continues_word"] = row["batch"]["continues_word"] = flags
    text = format_rows(rows)
    assert text.count(f"continues_word: {len(flags)} flags, {sum(flags)} set") == 2
    assert text.count("tokens selected") == 2


def test_preview_has_help_with_examples(capsys):
    with pytest.raises(SystemExit) as exit_:
        sslab.cli.main(["preview", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "example" in out and "sslab preview --objective" in out and "--epoch" in out


# ---------------------------------------------------------------- the rows training reads


def training_rows(data, epoch: int) -> dict[bytes, dict]:
    """Every row of the training stream of ``epoch`` (one worker), as each worker corrupts it, by its
    uncorrupted ids (the masked tokens' labels put back)."""
    stream = data.entry.stream(data.config.data, data.config.train.seed)
    per = stream.rows_per_worker(1)
    rows = {}
    for task in stream.tasks(0, 1, epoch * per, (epoch + 1) * per):
        for batch in read_window(pa.Table.from_pylist([task]), stream, data.objective, 0, 1, per):
            for i in range(len(batch["input_ids"])):
                row = {k: np.asarray(v[i]).tolist() for k, v in batch.items()}
                rows[uncorrupted(row)] = row
    return rows


def uncorrupted(batch_row: dict) -> bytes:
    ids, labels = np.asarray(batch_row["input_ids"], dtype=np.int64), np.asarray(batch_row["labels"], dtype=np.int64)
    return np.where(labels != IGNORE, labels, ids).tobytes()


@pytest.mark.parametrize("objective", ["mlm", "mlm+sop"])
def test_the_preview_shows_the_rows_training_reads_id_for_id(ray_cluster, corpus, tmp_path, objective):
    cfg = sslab.resolve(overrides=[f"corpus.source={corpus}", f"objective.name={objective}", *SMALL,
                                   f"data.cache_dir={tmp_path / 'cache'}", f"run.out={tmp_path / 'run'}",
                                   "run.quiet=true", "train.seed=3"])
    data = sslab.prepare(cfg)
    shown = {epoch: sslab.preview(cfg, n=8, epoch=epoch) for epoch in (0, 1)}
    assert "data cache" in shown[1][0]["tokenizer"]  # the run's own tokenizer, trained for this corpus
    for epoch, rows in shown.items():
        trained = training_rows(data, epoch)
        for row in rows:
            assert trained[uncorrupted(row["batch"])] == row["batch"]  # every column, id for id
    assert [r["batch"]["input_ids"] for r in shown[0]] != [r["batch"]["input_ids"] for r in shown[1]]
