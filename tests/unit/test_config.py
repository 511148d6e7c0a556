"""The run config: defaults, YAML files, ``a.b=value`` overrides, and errors that name the key."""
import dataclasses
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from sslab import config
from sslab.config import Config, ConfigError
from sslab.rng import RowRandom
from sslab.objectives.mlm import MLMConfig


@pytest.fixture
def yaml_file(tmp_path):
    """Write a dict (or raw text) to a YAML file and return its path."""
    def write(content, name="run.yaml"):
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
        return path
    return write


def error_of(overrides=None, path=None) -> str:
    with pytest.raises(ConfigError) as info:
        config.load(path, overrides)
    return str(info.value)


# ---------------------------------------------------------------- defaults, files, overrides


def test_defaults_build_a_valid_config_with_the_mlm_objective():
    cfg = config.build()
    assert isinstance(cfg.objective, MLMConfig)
    assert cfg.objective.name == "mlm" and cfg.objective.mask_ratio == 0.15
    # Apart from the objective (whose Config comes from the registry), build() is Config().
    assert dataclasses.replace(cfg, objective=config.ObjectiveConfig()) == Config()
    assert config.load() == cfg


def test_overrides_are_read_by_the_type_of_the_field_they_set():
    cfg = config.build(config.parse_overrides([
        "train.lr=1e-3", "train.max_steps=20", "data.shuffle=none", "corpus.label_field=null",
        "train.betas=[0.9, 0.95]", "run.out=runs/x", "model.dropout=.5", "eval.mask_ratio=2E-1",
        "corpus.text_field=yes", "corpus.source=001"]))
    assert cfg.train.lr == 0.001 and type(cfg.train.lr) is float
    assert cfg.train.max_steps == 20 and type(cfg.train.max_steps) is int
    assert cfg.data.shuffle == "none" and cfg.corpus.label_field is None
    assert cfg.train.betas == (0.9, 0.95) and cfg.run.out == "runs/x"
    assert cfg.model.dropout == 0.5 and cfg.eval.mask_ratio == 0.2
    # Text fields keep the text as typed, even when it reads as a bool or a number.
    assert cfg.corpus.text_field == "yes" and cfg.corpus.source == "001"


def test_overrides_build_typed_values():
    cfg = config.load(overrides=["train.lr=1e-3", "data.shuffle=none", "scaling.use_gpu=null",
                                 "train.betas=[0.8, 0.9]", "train.grad_clip=2"])
    assert cfg.train.lr == 0.001 and cfg.data.shuffle == "none" and cfg.scaling.use_gpu is None
    assert cfg.train.betas == (0.8, 0.9)
    assert cfg.train.grad_clip == 2.0 and type(cfg.train.grad_clip) is float  # an int where a float goes


def test_corpus_and_objective_shorthands():
    assert config.parse_overrides(["corpus=synthetic"]) == {"corpus": "synthetic"}
    cfg = config.load(overrides=["corpus=/data/wiki", "corpus.val_fraction=0.1", "objective=mlm"])
    assert cfg.corpus.source == "/data/wiki" and cfg.corpus.val_fraction == 0.1
    assert isinstance(cfg.objective, MLMConfig)


def test_an_objective_override_builds_that_objectives_config():
    cfg = config.load(overrides=["objective.mask_ratio=0.3", "objective.whole_word=true"])
    assert type(cfg.objective) is MLMConfig
    assert cfg.objective.mask_ratio == 0.3 and cfg.objective.whole_word is True
    assert cfg.objective.replace_mask == 0.8  # untouched fields keep their defaults


def test_overrides_win_over_the_yaml_file_which_wins_over_defaults(yaml_file):
    path = yaml_file({"corpus": "synthetic", "train": {"lr": 0.002, "max_steps": 50},
                      "objective": {"name": "mlm", "mask_ratio": 0.4}})
    cfg = config.load(path, ["train.lr=1e-4", "corpus.synthetic.num_docs=100"])
    assert cfg.train.lr == 1e-4 and cfg.train.max_steps == 50
    assert cfg.corpus.source == "synthetic" and cfg.corpus.synthetic.num_docs == 100
    assert cfg.objective.mask_ratio == 0.4
    assert cfg.train.batch_size == Config().train.batch_size
    # The override may also come as a nested dict (the Python API).
    assert config.load(path, {"train": {"max_steps": 7}}).train.max_steps == 7


def test_overrides_extend_a_shorthand_in_the_yaml_file(yaml_file):
    path = yaml_file("corpus: /data/wiki\nobjective: mlm\n")
    cfg = config.load(path, ["objective.mask_ratio=0.4", "corpus.min_chars=20"])
    assert cfg.corpus.source == "/data/wiki" and cfg.corpus.min_chars == 20
    assert type(cfg.objective) is MLMConfig and cfg.objective.mask_ratio == 0.4


def test_an_empty_yaml_file_gives_the_defaults(yaml_file):
    assert config.load(yaml_file("")) == config.build()


def test_to_yaml_round_trips():
    cfg = config.load(overrides=["train.lr=3e-4", "train.betas=[0.85, 0.97]", "objective.mask_ratio=0.4",
                                 "corpus.label_field=topic", "scaling.use_gpu=false", "model.preset=mini"])
    again = config.build(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg
    assert type(again.objective) is MLMConfig and again.train.betas == (0.85, 0.97)


# ---------------------------------------------------------------- errors name the key


@pytest.mark.parametrize("override, key", [
    ("trian.lr=1", "trian"),
    ("train.lrr=1e-3", "train.lrr"),
    ("corpus.synthetic.num_doc=10", "corpus.synthetic.num_doc"),
    ("objective.mask_rato=0.3", "objective.mask_rato"),
])
def test_an_unknown_key_is_an_error_naming_it(override, key):
    message = error_of([override])
    assert f"unknown config key '{key}'" in message


@pytest.mark.parametrize("override, key", [
    ("train.batch_size=abc", "train.batch_size"),
    ("train.batch_size=1.5", "train.batch_size"),
    ("train.batch_size=true", "train.batch_size"),  # a bool is not an integer
    ("train.lr=fast", "train.lr"),
    ("data.shuffle=random", "data.shuffle"),
    ("scaling.use_gpu=maybe", "scaling.use_gpu"),
    ("train.betas=[0.9]", "train.betas"),
    ("train.betas=0.9", "train.betas"),
    ("train=5", "train"),
    ("corpus.synthetic=5", "corpus.synthetic"),
])
def test_a_value_of_the_wrong_type_is_an_error_naming_the_key(override, key):
    assert error_of([override]).startswith(key)


@pytest.mark.parametrize("override, key", [
    ("train.lr=-1e-3", "train.lr"),
    ("train.lr=nan", "train.lr"),
    ("train.batch_size=0", "train.batch_size"),
    ("train.seq_len=4", "train.seq_len"),
    ("train.betas=[0.9, 1.0]", "train.betas"),
    ("model.dropout=1.0", "model.dropout"),
    ("eval.mask_ratio=0", "eval.mask_ratio"),
    ("corpus.val_fraction=1.5", "corpus.val_fraction"),
    ("corpus.synthetic.num_topics=1", "corpus.synthetic.num_topics"),
    ("scaling.num_workers=0", "scaling.num_workers"),
    ("objective.mask_ratio=1.3", "objective.mask_ratio"),
    ("tokenizer.path=/no/such/dir", "tokenizer.path"),
    ("model.init_from=/no/such/dir", "model.init_from"),
])
def test_an_out_of_range_value_is_an_error_naming_the_key(override, key):
    assert error_of([override]).startswith(f"{key}=")


def test_an_unknown_literal_choice_is_an_error_listing_the_choices():
    message = error_of(["model.preset=huge"])
    assert message.startswith("model.preset='huge'")
    assert all(p in message for p in ("tiny", "mini", "small", "base", "large"))
    assert error_of(["tokenizer.kind=sentencepiece"]).startswith("tokenizer.kind=")


@pytest.mark.parametrize("overrides", [["objective=nope"], ["objective.name=nope"]])
def test_an_unknown_objective_is_an_error_listing_the_available_ones(overrides):
    message = error_of(overrides)
    assert "'nope'" in message and "available: clm, denoise, electra, mlm" in message


def test_seq_len_above_max_positions_is_an_error_naming_both():
    message = error_of(["train.seq_len=1024"])
    assert message.startswith("train.seq_len=1024") and "model.max_positions=512" in message
    assert config.load(overrides=["train.seq_len=1024", "model.max_positions=1024"]).train.seq_len == 1024


@pytest.mark.parametrize("item", ["train.lr", "=3", ""])
def test_a_malformed_override_is_an_error_quoting_it(item):
    assert repr(item) in error_of([item])


def test_a_missing_yaml_file_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert str(missing) in error_of(path=missing)


@pytest.mark.parametrize("text, why", [("train: [unclosed\n", "not valid YAML"),
                                       ("- a\n- b\n", "mapping")])
def test_an_invalid_yaml_file_is_an_error_naming_it(yaml_file, text, why):
    path = yaml_file(text)
    message = error_of(path=path)
    assert str(path) in message and why in message and "\n" not in message


def test_a_bad_key_in_the_yaml_file_is_named_too(yaml_file):
    assert "'model.prest'" in error_of(path=yaml_file({"model": {"prest": "tiny"}}))


# ---------------------------------------------------------------- edge cases


@pytest.mark.parametrize("override", ["objective=3", "objective=[mlm]"])
def test_an_objective_that_is_neither_a_name_nor_a_mapping_is_an_error_naming_it(override):
    assert error_of([override]).startswith("objective")


def test_a_string_field_accepts_a_value_that_looks_like_a_number():
    assert config.load(overrides=["run.out=2024"]).run.out == "2024"


@pytest.mark.parametrize("key", ["train.seed", "eval.seed"])
def test_a_negative_seed_is_refused_by_the_config_or_usable_by_the_masks(key):
    try:
        cfg = config.load(overrides=[f"{key}=-1"])
    except ConfigError as e:
        assert str(e).startswith(key)
        return
    section, field = key.split(".")
    RowRandom(getattr(getattr(cfg, section), field), 0, np.arange(4)).uniform(8)


# ---------------------------------------------------------------- warmup against the run's length


@pytest.fixture
def config_warnings(caplog, monkeypatch):
    """The config's warnings (each is logged once per process: forget those already given)."""
    monkeypatch.setattr(config, "_warned", set())
    caplog.set_level(logging.WARNING, logger="sslab")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "sslab"]


@pytest.mark.parametrize("overrides, peak", [
    (["train.max_steps=20"], "65%"),                                  # --max-steps 20 with the default 30
    (["train.max_steps=30"], "97%"),                                  # as long as the run: no decay at all
    (["train.max_steps=160", "train.warmup_steps=1000"], "16%"),      # a shipped space shrunk for a CPU
])
def test_a_warmup_not_below_max_steps_is_warned_about_naming_both_and_kept(config_warnings, overrides, peak):
    cfg = config.load(overrides=overrides)
    asked = int(config.parse_overrides(overrides)["train"].get("warmup_steps", 30))
    assert cfg.train.warmup_steps == asked  # what was asked is what trains (and what a search recorded)
    [message] = config_warnings()
    assert message.startswith(f"train.warmup_steps={asked} is not below train.max_steps={cfg.train.max_steps}: ")
    assert f"reaches {peak} of train.lr" in message
    assert f"train.warmup_steps={cfg.train.max_steps // 10})" in message  # what to set instead


def test_a_warmup_below_max_steps_gives_no_warning(config_warnings):
    assert config.load(overrides=["train.max_steps=31"]).train.warmup_steps == 30
    assert config.load(overrides=["train.max_steps=20", "train.warmup_steps=19"]).train.warmup_steps == 19
    assert config.load(overrides=["train.max_steps=1", "train.warmup_steps=0"]).train.warmup_steps == 0
    assert config_warnings() == []


def test_a_warmup_is_warned_about_once_however_often_the_config_is_built(config_warnings):
    for _ in range(3):  # a search builds its base config for every corner of its space and every trial
        config.load(overrides=["train.max_steps=20"])
    assert len(config_warnings()) == 1


def test_the_shipped_spaces_as_written_and_the_demo_warm_up_within_their_runs(config_warnings):
    from sslab.search_spec import load_spec, shipped_spaces

    for path in shipped_spaces():
        spec = load_spec(path.stem)
        for d in spec.domains:  # clm_lr searches the warmup itself
            for value in d.corners if d.field == "train.warmup_steps" else ():
                spec.base_config({d.field: value})
    make = (Path(__file__).parents[2] / "Makefile").read_text()
    demo = re.search(r"DEMO_OVERRIDES := (.*?)\n\n", make, re.S).group(1).replace("\\\n", " ").split()
    train = load_spec("mlm_masking", demo).base_config().train
    assert train.warmup_steps == train.max_steps // 10 == 30  # the demo's own warm-up, not the space's 1000
    assert config_warnings() == []
