"""Each kind of data path end to end on Ray with two workers: packed blocks with T5's sentinels,
sentences (with document halves for the retrieval eval), and segment pairs in a mixture."""
from __future__ import annotations

import json

import pytest
from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForSeq2SeqLM, AutoTokenizer

import sslab
from sslab.config import load

pytestmark = pytest.mark.slow

CASES = {
    # objective: (Auto class that loads model/, metrics the summary must hold)
    "span": (AutoModelForSeq2SeqLM, ("eval_span_loss", "eval_unigram_loss", "probe_acc")),
    "simcse+mlm": (AutoModelForMaskedLM, ("eval_retrieval_acc", "eval_align", "eval_mlm_acc", "simcse_loss", "mlm_loss")),
    "mlm+nsp": (AutoModelForMaskedLM, ("eval_nsp_acc", "eval_mlm_acc", "nsp_loss", "mlm_loss")),
}


@pytest.mark.parametrize("name", CASES)
def test_two_workers_train_and_export_each_data_path(ray_cluster, tiny, tmp_path, name):
    auto, metrics = CASES[name]
    cfg = load(overrides=tiny(tmp_path / "run", f"objective.name={name}", "scaling.num_workers=2",
                              "corpus.synthetic.num_docs=800", "eval.probe_docs=100",
                              "train.max_steps=6", "train.warmup_steps=2", "train.log_every=3"))
    result = sslab.pretrain(cfg)
    m = result.summary["metrics"]
    assert result.summary["steps"] == 6 and set(metrics) <= set(m), m
    assert all(v == v for v in m.values())  # no NaN
    model = auto.from_pretrained(result.model_dir, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(result.model_dir, local_files_only=True)
    assert model.config.vocab_size >= len(tok)
    assert AutoModel.from_pretrained(result.model_dir, local_files_only=True) is not None
    logged = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [3, 6]
    if name == "span":  # the sentinels were added to the run's tokenizer and exported with it
        assert "<extra_id_99>" in tok.get_vocab()
