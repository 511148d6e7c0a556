"""The sentence-transformers files of an encoder export: ``SentenceTransformer(model_dir)`` loads
it offline and its embeddings are the vectors sslab pools, as the run pooled them."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sslab import evaluation, synthetic
from sslab.config import SyntheticConfig

from learning import FIXED_TOKENIZER, Setup

sentence_transformers = pytest.importorskip("sentence_transformers")

SEQ_LEN = 64  # learning.BASE's train.seq_len


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """One sentence each, of different lengths (so padding matters), the last longer than SEQ_LEN."""
    doc = synthetic.generate(SyntheticConfig(num_docs=10), 0, 10)["text"][0]
    sentences = [s.strip() + "." for s in doc.split(".") if s.strip()]
    return ["first a.", *sentences[:3], " ".join([doc.replace(".", "")] * 2)]


def exported(name: str, tmp_path, *overrides: str) -> tuple[Setup, torch.nn.Module]:
    """A tiny model of objective ``name`` (untrained: the pooling is what is compared), exported
    to ``tmp_path`` with its tokenizer as a run exports it."""
    setup = Setup(name, ["model.preset=tiny", *overrides], num_docs=100, tokenizer_dir=FIXED_TOKENIZER)
    model = setup.model().eval()
    setup.objective.export(model, str(tmp_path), seq_len=SEQ_LEN)
    setup.tok.save_pretrained(str(tmp_path))
    return setup, model


def st_embeddings(model_dir, texts: list[str], monkeypatch) -> np.ndarray:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a local directory: nothing may be downloaded
    st = sentence_transformers.SentenceTransformer(str(model_dir), device="cpu")
    return st.encode(texts, batch_size=2, convert_to_numpy=True)  # batches padded unlike sslab's


def written(model_dir) -> tuple[str, int]:
    """The pooling mode and the max_seq_length the export wrote."""
    pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())["pooling_mode"]
    return pooling, json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"]


@pytest.mark.parametrize("arch, pooling", [("modernbert", "mean"), ("modernbert", "cls"), ("bert", "cls")])
def test_a_simcse_export_embeds_as_the_run_pooled(arch, pooling, texts, tmp_path, monkeypatch):
    setup, model = exported("simcse", tmp_path, f"model.arch={arch}", f"objective.pooling={pooling}")
    obj = setup.objective
    # Each text as training frames it: the pipeline's sentence ([CLS] sentence [SEP], cut at seq_len).
    rows = [setup.units([t], "sentences") for t in texts]
    lengths = np.array([r["a_len"][0] for r in rows])
    assert lengths[-1] == SEQ_LEN - 2 < len(setup.tok(texts[-1])["input_ids"])  # the long one is cut
    ids = np.zeros((len(texts), lengths.max()), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, :lengths[i]] = r["a"][0, :lengths[i]]
    view = torch.as_tensor(obj.sentence(ids, lengths))
    with torch.no_grad():
        ours = obj.pool(model({"view": view}, ["view"])["view"][0].hidden, view).numpy()
    # Unnormalised on both sides: the export adds no Normalize module.
    np.testing.assert_allclose(st_embeddings(tmp_path, texts, monkeypatch), ours, atol=1e-5, rtol=1e-5)
    assert written(tmp_path) == (pooling, SEQ_LEN)


@pytest.mark.parametrize("name", ["mlm", "electra"])
def test_other_encoder_exports_mean_pool_as_the_linear_probe_reads_them(name, texts, tmp_path, monkeypatch):
    setup, model = exported(name, tmp_path)
    probe = evaluation.probe_set(texts, ["x", "y", "x", "y", "x"], setup.tok, SEQ_LEN)  # the probe's inputs
    ours = evaluation.mean_pooled(setup.objective.encoder(model), probe["input_ids"], probe["attention_mask"],
                                  torch.device("cpu"))
    np.testing.assert_allclose(st_embeddings(tmp_path, texts, monkeypatch), ours, atol=1e-5, rtol=1e-5)
    assert written(tmp_path) == ("mean", SEQ_LEN)


@pytest.mark.parametrize("name, arch, pooling", [("simcse+mlm", "modernbert", "cls"), ("mlm+simcse", "bert", "cls"),
                                                ("mlm+nsp", "roberta", "mean")])
def test_a_mixture_pools_as_its_simcse_part_or_by_the_mean(name, arch, pooling, tmp_path):
    knobs = ["objective.simcse.pooling=cls"] if "simcse" in name else []
    setup = Setup(name, ["model.preset=tiny", f"model.arch={arch}", *knobs], num_docs=20, tokenizer_dir=FIXED_TOKENIZER)
    setup.objective.export(setup.model(), str(tmp_path))  # no seq_len: the model's positions (less RoBERTa's offset)
    assert written(tmp_path) == (pooling, setup.cfg.model.max_positions)
