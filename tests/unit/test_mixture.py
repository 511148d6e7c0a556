"""Mixtures of encoder objectives: which combine, how their config reads, one forward, each part's loss."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoModelForMaskedLM

from sslab.config import load
from sslab.errors import ConfigError
from sslab.objectives import RowRandom, get
from sslab.objectives.encoder import HEADS_FILE

from test_simcse import toy_rows, toy_vocab

RECIPES = {"mlm+nsp": "pairs", "mlm+sop": "pairs", "simcse+mlm": "sentences"}


@pytest.mark.parametrize("name, unit", RECIPES.items())
def test_the_three_recipes_compose_on_a_shared_unit(name, unit):
    cls = get(name)
    assert cls.unit == unit and cls.backbone == "encoder"
    assert {"eval_mlm_acc", "probe_acc"} <= set(cls.metrics)


@pytest.mark.parametrize("name, named", [
    ("clm+mlm", ("'clm'", "'mlm'", "decoder")),
    ("mlm+span", ("'mlm'", "'span'", "t5")),
    ("electra+mlm", ("'electra'", "'mlm'")),
    ("nsp+sop", ("'nsp'", "'sop'", "both build")),
    ("simcse+nsp", ("'simcse'", "'nsp'")),
    ("mlm+mlm", ("'mlm'", "twice")),
])
def test_an_incompatible_mixture_is_refused_at_config_time_naming_both(name, named):
    with pytest.raises(ConfigError) as err:
        load(overrides=[f"objective.name={name}"])
    for text in named:
        assert text in str(err.value)


def test_each_part_has_its_section_and_weight_and_bad_values_are_named():
    cfg = load(overrides=["objective.name=simcse+mlm", "objective.mlm.mask_ratio=0.3", "objective.simcse.tau=0.1"])
    assert cfg.objective.mlm.mask_ratio == 0.3 and cfg.objective.simcse.tau == 0.1
    assert cfg.objective.simcse_weight == 1.0 and cfg.objective.mlm_weight == 0.1  # SimCSE's auxiliary weight
    assert load(overrides=["objective.name=mlm+nsp"]).objective.nsp_weight == 1.0  # BERT sums the two
    with pytest.raises(ConfigError, match="objective.nsp_weight"):
        load(overrides=["objective.name=mlm+nsp", "objective.nsp_weight=-1"])
    with pytest.raises(ConfigError, match="mask_ratio"):
        load(overrides=["objective.name=mlm+nsp", "objective.mlm.mask_ratio=1.5"])
    with pytest.raises(ConfigError, match="objective.mlm.bogus"):
        load(overrides=["objective.name=mlm+nsp", "objective.mlm.bogus=1"])
    assert load(overrides=["objective.name=mlm+sop"]).to_dict()["objective"]["sop_weight"] == 1.0


def mixture(name, *overrides):
    cfg = load(overrides=[f"objective.name={name}", "train.seq_len=32", *overrides])
    return cfg, get(name)(cfg.objective, toy_vocab())


def pair_rows(n=16):
    rows = toy_rows(n)
    rows["b_len"] = np.maximum(rows["b_len"], 2)
    rows["b"][:, :2] = 7
    return rows


def test_mlm_masks_the_pair_nsp_built_and_never_its_special_tokens():
    _, obj = mixture("mlm+nsp", "objective.mlm.mask_ratio=0.5")
    rows = pair_rows()
    out = obj.transform(rows, RowRandom(0, 0, rows["row_id"]))
    assert set(out) == {"input_ids", "labels", "nsp_label"}
    unmasked = get("nsp")(load(overrides=["objective.name=nsp"]).objective, toy_vocab())
    # The mixture forks an independent generator per part: nsp's part is nsp's draw with fork(0).
    pair = unmasked.transform(rows, RowRandom(0, 0, rows["row_id"]).fork(0))
    np.testing.assert_array_equal(out["nsp_label"], pair["nsp_label"])
    scored = out["labels"] != -100
    np.testing.assert_array_equal(out["labels"][scored], pair["input_ids"][scored])
    assert not np.isin(pair["input_ids"][scored], toy_vocab().special_ids).any()
    assert 0.3 < scored.sum() / (~np.isin(pair["input_ids"], toy_vocab().special_ids)).sum() < 0.7


def test_one_forward_pass_serves_every_part_and_each_loss_is_reported():
    cfg, obj = mixture("simcse+mlm", "objective.mlm_weight=0.5")
    torch.manual_seed(0)
    model = obj.build_model(cfg.model)
    calls = []
    model.lm.register_forward_hook(lambda m, args, kwargs_out: calls.append(1))
    rows = toy_rows()
    batch = {k: torch.as_tensor(v) for k, v in obj.transform(rows, RowRandom(0, 0, rows["row_id"])).items()}
    total, logs = obj.loss(model, batch)
    assert len(calls) == 1
    assert {"simcse_loss", "mlm_loss"} <= set(logs)
    torch.testing.assert_close(total.detach(), logs["simcse_loss"] + 0.5 * logs["mlm_loss"])
    total.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_the_mixture_exports_the_encoder_with_its_mlm_head_and_the_pair_head(tmp_path):
    cfg, obj = mixture("mlm+sop")
    model = obj.build_model(cfg.model)
    obj.export(model, str(tmp_path))
    assert AutoModelForMaskedLM.from_pretrained(tmp_path).config.vocab_size == toy_vocab().size
    assert AutoModel.from_pretrained(tmp_path) is not None
    assert set(torch.load(tmp_path / HEADS_FILE)) == {"sop"}


def test_eval_metrics_of_every_part_come_out_under_their_own_names():
    cfg, obj = mixture("mlm+nsp")
    torch.manual_seed(0)
    model = obj.build_model(cfg.model).eval()
    rows = pair_rows()
    batch = obj.eval_transform(rows, RowRandom(1, 0, rows["row_id"]), cfg.eval)
    with torch.no_grad():
        sums = obj.eval_sums(model, {k: torch.as_tensor(v) for k, v in batch.items()})
    metrics = obj.eval_metrics({k: v.numpy() for k, v in sums.items()})
    assert {"eval_mlm_loss", "eval_mlm_acc", "eval_nsp_acc", "eval_nsp_majority_acc"} <= set(metrics)
