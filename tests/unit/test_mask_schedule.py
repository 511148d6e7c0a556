"""Mask-rate schedules (``objective.mask_schedule``): the ratio a row is masked at comes from the
share of training done at its step; the fixed-protocol evaluation ignores the schedule; a bad
schedule is one line naming the field, before anything starts. (The stream gives each row its
step: tests/unit/test_stream.py; a resumed run masks as the uninterrupted one:
tests/integration/test_resume.py.)"""
from __future__ import annotations

import numpy as np
import pytest

from sslab.config import EvalConfig, load
from sslab.errors import ConfigError
from sslab.masking import schedule_of
from sslab.objectives.mlm import MLM
from sslab.rng import RowRandom
from sslab.tokenizer import Vocab

VOCAB = Vocab(size=1000, pad_id=0, mask_id=4, cls_id=2, sep_id=3, special_ids=(0, 1, 2, 3, 4),
              continues_word=np.zeros(1000, dtype=bool))


def objective(*overrides: str):
    return load(overrides=["objective.name=mlm", *overrides]).objective


def test_each_schedule_gives_the_ratio_of_its_share_of_training():
    at = np.array([0.0, 0.25, 0.5, 0.77, 0.9, 0.97, 1.0])
    assert objective("objective.mask_ratio=0.3").ratio_at(at) == 0.3
    linear = objective("objective.mask_ratio=0.3", "objective.mask_schedule=linear", "objective.mask_ratio_end=0.15")
    assert linear.ratio_at(at) == pytest.approx(0.3 - 0.15 * at)
    steps = objective("objective.mask_ratio=0.3", "objective.mask_schedule=steps",
                      "objective.mask_steps=[[0.77, 0.15], [0.97, 0.05]]")
    assert list(steps.ratio_at(at)) == [0.3, 0.3, 0.3, 0.15, 0.15, 0.05, 0.05]
    assert linear.ratio_at(None) == steps.ratio_at(None) == 0.3  # outside training: the first step's


@pytest.mark.parametrize("overrides, named", [
    (["objective.mask_schedule=cosine"], "objective.mask_schedule='cosine'"),
    (["objective.mask_schedule=linear"], "objective.mask_ratio_end=None"),
    (["objective.mask_schedule=linear", "objective.mask_ratio_end=1.5"], "objective.mask_ratio_end=1.5"),
    (["objective.mask_schedule=steps"], "objective.mask_steps=None"),
    (["objective.mask_schedule=steps", "objective.mask_steps=[[0.9, 0.1], [0.5, 0.05]]"], "objective.mask_steps="),
    (["objective.mask_schedule=steps", "objective.mask_steps=[[0.5, 2]]"], "objective.mask_steps="),
])
def test_a_bad_schedule_is_one_line_naming_the_field(overrides, named):
    with pytest.raises(ConfigError) as e:
        objective(*overrides)
    assert named in str(e.value) and "\n" not in str(e.value)


def test_rows_are_masked_at_their_steps_ratio_and_the_eval_at_its_fixed_one():
    mlm = MLM(objective("objective.mask_ratio=0.5", "objective.mask_schedule=linear", "objective.mask_ratio_end=0.1"),
              VOCAB)
    ids = np.random.default_rng(0).integers(5, 1000, (4000, 64))
    progress = np.repeat([0.0, 0.5, 1.0, 0.0], 1000)
    labels = mlm.transform({"input_ids": ids}, RowRandom(1, 0, np.arange(4000), progress))["labels"]
    realised = (labels >= 0).reshape(4, 1000, 64).mean(axis=(1, 2))
    assert realised == pytest.approx([0.5, 0.3, 0.1, 0.5], abs=0.01)
    constant = MLM(objective(), VOCAB)
    for rng in (RowRandom(1, 0, np.arange(4000), progress), RowRandom(1, 0, np.arange(4000))):
        a = mlm.eval_transform({"input_ids": ids}, rng, EvalConfig())
        b = constant.eval_transform({"input_ids": ids}, rng, EvalConfig())
        assert all(np.array_equal(a[k], b[k]) for k in a)  # the fixed protocol ignores the schedule


def test_a_mixture_schedules_its_masking_part_and_a_constant_ratio_logs_nothing():
    mixture = load(overrides=["objective.name=mlm+sop", "objective.mlm.mask_schedule=linear",
                              "objective.mlm.mask_ratio_end=0.05"]).objective
    assert schedule_of(mixture).ratio_at(1.0) == pytest.approx(0.05)
    assert schedule_of(objective()) is None
    electra = load(overrides=["objective.name=electra", "objective.mask_schedule=linear",
                              "objective.mask_ratio_end=0.05"]).objective
    assert schedule_of(electra).ratio_at(0.0) == 0.15
