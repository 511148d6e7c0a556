"""The `sslab` command line: a folder of .txt files pretrains, and the listings.

Bad input (one row per case, pretrain and tune) is in test_bad_input.py."""
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
                              "data.shuffle=window", "data.shard_rows=16")  # rows mixed within windows of shards
    assert code == 0
    assert "run finished" in stdout and "eval_mlm_acc" in stdout
    for name in ("config.yaml", "tokenizer/tokenizer.json", "summary.json", "model/config.json",
                 "checkpoint_00000010/state.pt", "checkpoint_00000020/state.pt"):
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text())["steps"] == 20


def test_spaces_lists_every_shipped_search_space(capsys):
    from sslab.search_spec import shipped_spaces

    code, out, _ = run_cli(capsys, "spaces")
    names = {p.stem for p in shipped_spaces()}
    assert code == 0 and names >= {"mlm_masking", "simcse_temperature", "electra", "span_corruption",
                                   "objective_bakeoff", "clm_lr"}
    assert all(f"{name} " in out for name in names)


@pytest.mark.parametrize("command", ["pretrain", "tune", "study", "eval", "report", "objectives", "spaces", "studies",
                                     "presets"])
def test_every_command_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "example" in out and f"sslab {command}" in out


def test_presets_lists_every_size_with_its_parameter_count(capsys):
    from sslab.models import PRESETS

    code, out, _ = run_cli(capsys, "presets")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:] if line.split() and line.split()[0] in PRESETS}
    assert code == 0 and set(rows) == set(PRESETS)
    assert rows["tiny"][-1] == "0.4M" and rows["base"][-1] == "85.0M"  # BERT-base: 85M without embeddings


class Stop(Exception):
    """Raised by a stand-in for the runner once it has seen what the CLI passed."""


def test_tracking_flags_set_the_track_keys_of_a_run_and_of_every_trial(monkeypatch, tmp_path):
    import sslab.runner
    import sslab.search

    seen = {}

    def record(key):
        def stand_in(arg, **kwargs):
            seen[key] = (arg, kwargs)
            raise Stop

        return stand_in

    monkeypatch.setattr(sslab.runner, "pretrain", record("run"))
    monkeypatch.setattr(sslab.search, "tune", record("tune"))
    with pytest.raises(Stop):
        main(["pretrain", "--out", str(tmp_path / "r"), "--mlflow-uri", "file:/m", "--wandb-project", "p"])
    cfg = seen["run"][0]
    assert cfg.track.mlflow_uri == "file:/m" and cfg.track.wandb_project == "p"
    with pytest.raises(Stop):
        main(["tune", "mlm_masking", "--mlflow-uri", "http://mlflow:5000"])
    assert "track.mlflow_uri=http://mlflow:5000" in seen["tune"][1]["overrides"]


def test_eval_and_report_name_what_is_missing(tmp_path, capsys):
    code, _, err = run_cli(capsys, "eval", str(tmp_path))
    assert code == 1 and "--data FILE" in err
    code, _, err = run_cli(capsys, "eval", str(tmp_path / "nomodel"), "--data", str(tmp_path / "none.jsonl"))
    assert code == 1 and err.count("sslab: error:") == 1 and "none.jsonl" in err
    code, _, err = run_cli(capsys, "report", str(tmp_path / "nothing"))
    assert code == 1 and err.count("sslab: error:") == 1 and "nothing" in err
