"""End to end on a local Ray cluster: two CPU workers pretrain MLM on the synthetic corpus."""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from transformers import AutoModelForMaskedLM, AutoTokenizer

import sslab
from sslab import checkpoint
from sslab.config import load

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(ray_cluster, tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "mlm"
    cfg = load(overrides=tiny(out, "scaling.num_workers=2", "train.max_steps=300", "train.eval_every=150",
                              "train.checkpoint_every=150", "train.log_every=10"))
    return sslab.pretrain(cfg)


def test_two_workers_learn_well_beyond_the_unigram_baseline(run):
    m = run.summary["metrics"]
    # The baseline is the best constant guess fitted on the very targets it is scored on.
    assert m["eval_mlm_loss"] < m["eval_unigram_loss"] - 0.3, m
    assert m["eval_mlm_acc"] > m["eval_unigram_acc"] + 0.03, m
    assert m["probe_acc"] > 0.5, m  # 8 topics: chance is 0.125
    assert run.summary["steps"] == 300 and run.summary["num_workers"] == 2


def test_the_run_directory_holds_config_tokenizer_checkpoints_summary_and_model(run):
    d = run.run_dir
    assert yaml.safe_load((d / "config.yaml").read_text())["scaling"]["num_workers"] == 2
    assert (d / "tokenizer" / "tokenizer.json").is_file()
    assert sorted(p.name for p in d.glob("checkpoint_*") if p.is_dir()) == ["checkpoint_00000150", "checkpoint_00000300"]
    assert checkpoint.trained_in_process(d) is False  # two workers: a worker group, whose checkpoints Ray registers
    summary = json.loads((d / "summary.json").read_text())
    assert summary["tokens"] == 300 * 2 * 16 * 64 and summary["wall_s"] > 0
    steps = [json.loads(line)["step"] for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(10, 301, 10))


def test_the_exported_model_loads_offline_and_fills_in_masks(run):
    model = AutoModelForMaskedLM.from_pretrained(run.model_dir, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(run.model_dir, local_files_only=True)
    enc = tok(["first a"], return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape == (1, enc["input_ids"].shape[1], len(tok))
    # Final weights, not the initial ones: the exported model scores like the run's last eval.
    state = torch.load(run.summary["checkpoint"] + "/state.pt", map_location="cpu", weights_only=False)["model"]
    state = {k.removeprefix("lm."): v for k, v in state.items()}  # the encoder sits at .lm in training
    exported = model.state_dict()
    assert len(set(exported) & set(state)) > 0.9 * len(exported)
    for name, tensor in exported.items():
        if name in state:
            assert torch.equal(tensor, state[name]), name


def test_the_exported_model_loads_in_sentence_transformers_and_cuts_inputs_at_the_runs_seq_len(run, monkeypatch):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = sentence_transformers.SentenceTransformer(str(run.model_dir), device="cpu")
    assert model.max_seq_length == 64  # train.seq_len, not model.max_positions
    assert model.encode(["first a", "then the second one"]).shape == (2, 128)
