"""A T5 span-corruption run trains its own SentencePiece-style Unigram tokenizer (span's default
kind) and exports a model and tokenizer that Hugging Face loads offline."""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import sslab
from sslab.config import load

pytestmark = pytest.mark.slow

STEPS = 6


@pytest.fixture(scope="module")
def run(ray_cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "span"
    # No tokenizer.path and no tokenizer.kind: the run trains span's default, a Unigram.
    cfg = load(overrides=["objective.name=span", "corpus.source=synthetic", "corpus.synthetic.num_docs=400",
                          "tokenizer.vocab_size=1000", "model.preset=tiny", "train.seq_len=32", "train.batch_size=8",
                          f"train.max_steps={STEPS}", "train.warmup_steps=1", f"train.eval_every={STEPS}",
                          "eval.max_blocks=16", "eval.probe_docs=0", "run.quiet=true", f"run.out={out}"])
    return sslab.pretrain(cfg)


def test_a_span_run_trains_a_unigram_tokenizer_and_exports_what_hugging_face_loads_offline(run, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert yaml.safe_load((run.run_dir / "config.yaml").read_text())["tokenizer"]["kind"] == "unigram"
    assert run.summary["steps"] == STEPS and "eval_span_loss" in run.summary["metrics"]
    tok = AutoTokenizer.from_pretrained(run.model_dir, local_files_only=True)
    model = AutoModelForSeq2SeqLM.from_pretrained(run.model_dir, local_files_only=True).eval()
    backend = json.loads(tok.backend_tokenizer.to_str())["model"]
    assert backend["type"] == "Unigram" and backend["byte_fallback"] is True
    assert "<extra_id_99>" in tok.get_vocab() and model.config.vocab_size >= len(tok)
    # The exported tokenizer gives the ids the run trained on.
    text = "first a kotapa called rasin belokes the tiva. 猫"
    trained_with = AutoTokenizer.from_pretrained(run.run_dir / "tokenizer", local_files_only=True)
    assert tok(text)["input_ids"] == trained_with(text)["input_ids"]
    assert tok.unk_token_id not in tok(text)["input_ids"]  # the unseen character is spelled in bytes
    inputs = tok(["first a <extra_id_0> called rasin"], return_tensors="pt")
    labels = tok(["<extra_id_0> kotapa"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model(**inputs, labels=labels)
    assert out.logits.shape == (1, labels.shape[1], model.config.vocab_size) and torch.isfinite(out.loss)
