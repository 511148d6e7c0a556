"""The `sslab` command line: a folder of .txt files pretrains; bad input exits non-zero with one line."""
from __future__ import annotations

import json

import pytest

from sslab import synthetic
from sslab.cli import main
from sslab.config import SyntheticConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def text_folder(tmp_path_factory):
    """A folder of plain-text files, one document per line, in two subfolders."""
    root = tmp_path_factory.mktemp("corpus")
    docs = synthetic.generate(SyntheticConfig(num_docs=1200), 0, 1200)["text"]
    for i in range(4):
        sub = root / f"part{i % 2}"
        sub.mkdir(exist_ok=True)
        (sub / f"shard{i}.txt").write_text("\n".join(docs[i::4]) + "\n")
    return root


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_pretrain_on_a_folder_of_text_files_leaves_the_run_directory(ray_cluster, text_folder, tmp_path, capsys,
                                                                     tokenizer_dir):
    out = tmp_path / "run"
    code, stdout, _ = run_cli(capsys, "pretrain", "--objective", "mlm", "--corpus", str(text_folder),
                              "--preset", "tiny", "--workers", "2", "--max-steps", "20", "--out", str(out),
                              "--quiet", "train.seq_len=64", "train.batch_size=8", "eval.probe_docs=0",
                              "train.checkpoint_every=10", "tokenizer.vocab_size=1000",
                              "train.materialize=false")  # the streaming path: re-read every epoch
    assert code == 0
    assert "run finished" in stdout and "eval_mlm_acc" in stdout
    for name in ("config.yaml", "tokenizer/tokenizer.json", "summary.json", "model/config.json",
                 "checkpoint_00000010/state.pt", "checkpoint_00000020/state.pt"):
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text())["steps"] == 20


@pytest.fixture
def broken(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "blank.txt").write_text("\n   \n\t\n")
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": oops}\n')
    (tmp_path / "nofield.jsonl").write_text('{"body": "no text field"}\n')
    return tmp_path


@pytest.mark.parametrize("args, needle", [
    (["--corpus", "{d}/missing"], "does not exist"),
    (["--corpus", "{d}/empty"], "holds no files"),
    (["--corpus", "{d}/*.nothing"], "matches no files"),
    (["--corpus", "{d}/blank.txt"], "empty after cleaning"),
    (["--corpus", "{d}/bad.jsonl"], "bad.jsonl:2"),
    (["--corpus", "{d}/nofield.jsonl"], "'text'"),
    (["--objective", "nope"], "objective 'nope'"),
    (["--preset", "huge"], "model.preset"),
    (["train.lrr=1"], "train.lrr"),
    (["objective.mask_ratio=1.5"], "objective.mask_ratio"),
    (["train.seq_len=1024"], "train.seq_len"),
    (["--workers", "64"], "needs 64 CPUs"),
])
def test_bad_input_exits_non_zero_with_one_line_naming_the_problem(ray_cluster, broken, tmp_path, capsys,
                                                                   args, needle):
    argv = ["pretrain", "--out", str(tmp_path / "run"), "--max-steps", "5", "--quiet"]
    argv += [a.replace("{d}", str(broken)) for a in args]
    if "--corpus" not in args:
        argv += ["--corpus", "synthetic"]
    code, _, err = run_cli(capsys, *argv)
    assert code != 0
    # In-process, Ray's background threads may add their own log lines; ours is exactly one line.
    ours = [line for line in err.splitlines() if line.startswith("sslab:")]
    assert len(ours) == 1 and ours[0].startswith("sslab: error:") and needle in ours[0], err
    assert not list((tmp_path / "run").glob("checkpoint_*"))


def test_spaces_lists_every_shipped_search_space(capsys):
    from sslab.search_spec import shipped_spaces

    code, out, _ = run_cli(capsys, "spaces")
    names = {p.stem for p in shipped_spaces()}
    assert code == 0 and names >= {"mlm_masking", "simcse_temperature", "electra", "span_corruption",
                                   "objective_bakeoff", "clm_lr"}
    assert all(f"{name} " in out for name in names)


@pytest.mark.parametrize("argv, named", [
    (["tune", "no_such_space"], "no_such_space"),
    (["tune", "mlm_masking", "metric=loss"], "not comparable"),
    (["tune", "mlm_masking", "space_typo=1"], "space_typo"),
    (["tune", "mlm_masking", "objective.mask_ratio=2"], "objective.mask_ratio"),
    (["tune", "mlm_masking", "--num-samples", "0"], "num_samples"),
    (["tune", "mlm_masking", "scheduler.grace_period=0"], "scheduler.grace_period"),
])
def test_a_bad_search_exits_non_zero_with_one_line_before_anything_starts(argv, named, tmp_path, capsys):
    code, _, err = run_cli(capsys, *argv[:2], "--out", str(tmp_path / "s"), *argv[2:])
    assert code == 1 and named in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "s").exists()  # refused before the search directory (and Ray) exist
