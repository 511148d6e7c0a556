"""Search-space files (``sslab.search_spec``): what ``sslab tune`` checks before Ray starts.

No Ray cluster and no training here: a search is loaded, validated and turned into trial configs
and Tune domains, which needs neither. Every bad file must fail here, as one ConfigError line that
names the bad key or value, rather than as trials that fail one by one after Ray started.
"""
from __future__ import annotations

import copy
import itertools
import json

import pytest
from ray.tune.search.sample import Categorical, Domain as TuneDomain, Float, Integer

from sslab.errors import ConfigError
from sslab.objectives import get as get_objective
from sslab.search_spec import Domain, SearchSpec, build_spec, load_spec, parse_domain, shipped_spaces

SHIPPED = shipped_spaces()


def cpu_overrides(path) -> list[str]:
    """What a shipped file's header suggests on a CPU (``# ... on a CPU: sslab tune NAME key=value ...``)."""
    line = next(line for line in path.read_text().splitlines() if "on a CPU: sslab tune " in line)
    name, *overrides = line.split("on a CPU: sslab tune ", 1)[1].split()
    assert name == path.stem, line
    return overrides


def spec_data(**fields) -> dict:
    """A small valid search (MLM mask ratio, tiny model), with ``fields`` replacing its keys."""
    data = {
        "base": {"objective": "mlm", "corpus": "synthetic", "model": {"preset": "tiny"}, "train": {"max_steps": 200}},
        "space": {"objective.mask_ratio": {"uniform": [0.1, 0.6]}},
        "metric": "eval_mlm_loss",
        "mode": "min",
    }
    data.update(copy.deepcopy(fields))
    return data


def error_of(data: dict, overrides=None) -> str:
    """The message of the ConfigError that loading ``data`` raises; it must be one line."""
    with pytest.raises(ConfigError) as info:
        load_spec(data, overrides)
    message = str(info.value)
    assert message and "\n" not in message, f"not one line: {message!r}"
    return message


def is_tune_domain(d: Domain, tuned) -> bool:
    if d.kind == "grid":
        return tuned == {"grid_search": list(d.args)}
    return isinstance(tuned, TuneDomain)


# ---------------------------------------------------------------- the shipped search spaces


def test_search_spaces_are_shipped_and_found_by_name():
    assert SHIPPED, "sslab.search_spaces ships no *.yaml"
    assert any(p.stem == "mlm_masking" for p in SHIPPED)
    for path in SHIPPED:
        spec = load_spec(path.stem)
        assert spec.name == path.stem
        assert load_spec(f"{path.stem}.yaml").name == path.stem
        assert [d.describe() for d in spec.domains] == [d.describe() for d in load_spec(path).domains]


def test_an_unknown_search_space_name_lists_the_shipped_ones():
    message = str(pytest.raises(ConfigError, load_spec, "mlm_maskin").value)
    assert "mlm_maskin" in message and "\n" not in message
    for path in SHIPPED:
        assert path.stem in message


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_space_says_what_its_paper_measured_and_why_its_metric_stands_for_it(path):
    """The ranking audit of issue 23: a search is only as good as the quantity it ranks by."""
    header = path.read_text().split("\ndescription:")[0]
    assert "Quantity measured:" in header, path.name
    assert load_spec(path).metric in header, f"{path.name}'s header does not name the metric it ranks by"


@pytest.mark.parametrize("on_cpu", [False, True], ids=["own-scale", "cpu"])
@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_space_loads_validates_and_turns_into_tune_domains(path, on_cpu):
    overrides = cpu_overrides(path) if on_cpu else None
    spec = load_spec(path, overrides)
    assert isinstance(spec, SearchSpec) and spec.domains and spec.description
    assert spec.metric.startswith(("eval_", "probe_")), "a shipped space must rank by a fixed-protocol metric"
    for name in spec.objectives():
        assert spec.metric in get_objective(name).metrics, (name, spec.metric)
    cfg = spec.base_config()
    if overrides:
        assert cfg.model.preset == "tiny" and cfg.train.max_steps <= 200 and spec.max_steps == cfg.train.max_steps
        # The overrides shrink the runs (and may draw fewer trials), not the space searched.
        assert [d.describe() for d in spec.domains] == [d.describe() for d in load_spec(path).domains]
        assert spec.num_samples <= load_spec(path).num_samples
    for d in spec.domains:
        tuned = d.to_tune()
        assert is_tune_domain(d, tuned), (d, tuned)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_value_a_shipped_space_samples_makes_a_valid_trial_config(path):
    spec = load_spec(path, cpu_overrides(path))
    for d in spec.domains:
        tuned = d.to_tune()
        # One value at a time, as Tune draws them for a trial.
        values = tuned["grid_search"] if d.kind == "grid" else [tuned.sample(random_state=i) for i in range(25)]
        for value in list(values) + d.corners:
            cfg = spec.base_config({d.field: value})
            section, _, leaf = d.field.rpartition(".")
            got = getattr(getattr(cfg, section), leaf)
            assert got == value if isinstance(value, str) else got == pytest.approx(value), (d.field, value, got)


# ---------------------------------------------------------------- overrides


def test_overrides_set_search_keys_and_the_base_config_with_typed_values():
    spec = load_spec("mlm_masking", ["num_samples=3", "scheduler.grace_period=7", "resources.workers=2",
                                     "train.lr=0.01", "model.preset=tiny"])
    shipped = load_spec("mlm_masking")
    assert spec.num_samples == 3 and type(spec.num_samples) is int
    assert spec.scheduler.grace_period == 7 and type(spec.scheduler.grace_period) is int
    # A dotted override changes one key of a section; the file's other keys stay.
    assert spec.scheduler.name == shipped.scheduler.name == "asha"
    assert spec.scheduler.reduction_factor == shipped.scheduler.reduction_factor
    assert spec.resources.workers == 2 and spec.resources.cpus_per_worker == shipped.resources.cpus_per_worker
    # Search keys never leak into the run config, and base keys never into the search.
    assert "num_samples" not in spec.base and "scheduler" not in spec.base and "resources" not in spec.base
    assert type(spec.base["train"]["lr"]) is float and spec.base["model"]["preset"] == "tiny"
    assert spec.base["train"]["max_steps"] == shipped.base["train"]["max_steps"]
    trial = spec.base_config({"objective.mask_ratio": 0.3})
    assert trial.train.lr == 0.01 and type(trial.train.lr) is float
    assert trial.model.preset == "tiny"
    base = spec.base_config()
    assert base.scaling.num_workers == 2 and base.scaling.cpus_per_worker == shipped.resources.cpus_per_worker


def test_whole_section_overrides_and_dict_overrides():
    spec = load_spec(spec_data(), ["search=optuna", "scheduler=pbt", "metric=eval_mlm_acc", "mode=max",
                                   "max_concurrent_trials=2", "resources.gpus_per_worker=0.5", "corpus=synthetic"])
    assert spec.search.name == "optuna" and spec.scheduler.name == "pbt"
    assert spec.metric == "eval_mlm_acc" and spec.mode == "max" and spec.max_concurrent_trials == 2
    assert spec.resources.gpus_per_worker == 0.5
    spec = load_spec(spec_data(), {"num_samples": 5, "train": {"lr": 2e-3}})
    assert spec.num_samples == 5 and spec.base_config().train.lr == 2e-3


def test_a_misspelt_override_is_refused_by_name():
    assert "trails" in error_of(spec_data(), ["trails=3"])
    assert "train.max_step" in error_of(spec_data(), ["train.max_step=3"])
    assert "scheduler.grace" in error_of(spec_data(), ["scheduler.grace=3"])


def test_a_loaded_search_spec_reloads_with_overrides():
    spec = load_spec(spec_data(scheduler={"name": "asha", "grace_period": 50}, num_samples=4))
    again = load_spec(spec, ["num_samples=2"])
    assert again.num_samples == 2 and spec.num_samples == 4
    assert again.scheduler == spec.scheduler and again.base == spec.base and again.metric == spec.metric
    assert [d.describe() for d in again.domains] == [d.describe() for d in spec.domains]


# ---------------------------------------------------------------- trial configs


def test_base_config_sets_dotted_params_over_the_base_without_changing_it():
    spec = load_spec(spec_data(base={"objective": {"name": "mlm", "mask_ratio": 0.2},
                                     "model": {"preset": "tiny"}, "train": {"lr": 1e-3}}))
    base = copy.deepcopy(spec.base)
    cfg = spec.base_config({"objective.mask_ratio": 0.4, "train.lr": 3e-4})
    assert cfg.objective.name == "mlm" and cfg.objective.mask_ratio == 0.4 and cfg.train.lr == 3e-4
    assert cfg.model.preset == "tiny"
    # One trial's params never reach the next trial.
    assert spec.base == base
    assert spec.base_config().objective.mask_ratio == 0.2 and spec.base_config().train.lr == 1e-3


def test_base_config_params_that_the_config_refuses_are_errors():
    spec = load_spec(spec_data())
    with pytest.raises(ConfigError, match="objective.mask_ratio"):
        spec.base_config({"objective.mask_ratio": 1.5})


@pytest.mark.parametrize("gpus, use_gpu, gpus_per_worker", [(None, None, 1.0), (0, False, 1.0), (0.5, True, 0.5),
                                                              (2, True, 2.0)])
def test_resources_become_the_scaling_of_every_trial(gpus, use_gpu, gpus_per_worker):
    spec = load_spec(spec_data(base={"objective": "mlm", "model": {"preset": "tiny"},
                                     "scaling": {"num_workers": 4, "max_failures": 2}},
                               resources={"workers": 3, "cpus_per_worker": 2, "gpus_per_worker": gpus}))
    for cfg in (spec.base_config(), spec.base_config({"objective.mask_ratio": 0.3})):
        s = cfg.scaling
        assert s.num_workers == 3 and s.cpus_per_worker == 2.0  # resources win over the base's scaling
        assert s.use_gpu is use_gpu and s.gpus_per_worker == gpus_per_worker
        assert s.max_failures == 2  # what resources do not set stays the base's


# ---------------------------------------------------------------- domains


def test_domains_parse_every_kind_and_reach_their_corners():
    spec = load_spec(spec_data(space={
        "objective.mask_ratio": {"uniform": [0.1, 0.6]},
        "train.lr": {"loguniform": [1.0e-4, 1.0e-2]},
        "train.weight_decay": {"quniform": [0.0, 0.1, 0.01]},
        "train.seq_len": {"randint": [8, 513]},
        "train.schedule": {"choice": ["linear", "cosine"]},
        "train.seed": {"grid": [0, 1, 2]},
    }))
    by_field = {d.field: d for d in spec.domains}
    assert [d.kind for d in spec.domains] == ["uniform", "loguniform", "quniform", "randint", "choice", "grid"]
    assert by_field["objective.mask_ratio"].corners == [0.1, 0.6]
    assert by_field["train.seq_len"].corners == [8, 512]  # randint's high end is excluded
    assert by_field["train.schedule"].corners == ["linear", "cosine"]
    assert by_field["train.seed"].corners == [0, 1, 2]
    tuned = {d.field: d.to_tune() for d in spec.domains}
    assert isinstance(tuned["objective.mask_ratio"], Float)
    assert (tuned["objective.mask_ratio"].lower, tuned["objective.mask_ratio"].upper) == (0.1, 0.6)
    assert isinstance(tuned["train.lr"], Float) and tuned["train.lr"].lower == 1e-4
    assert isinstance(tuned["train.weight_decay"], Float)
    assert isinstance(tuned["train.seq_len"], Integer)
    assert all(8 <= v <= 512 for v in tuned["train.seq_len"].sample(size=200, random_state=0))
    assert isinstance(tuned["train.schedule"], Categorical)
    assert tuned["train.schedule"].categories == ["linear", "cosine"]
    assert tuned["train.seed"] == {"grid_search": [0, 1, 2]}


def test_randint_high_end_is_excluded_when_checking_what_the_config_accepts():
    # seq_len may be at most model.max_positions (512): randint [8, 513] reaches 512, [8, 514] reaches 513.
    load_spec(spec_data(space={"train.seq_len": {"randint": [8, 513]}}))
    message = error_of(spec_data(space={"train.seq_len": {"randint": [8, 514]}}))
    assert "space.train.seq_len" in message and "513" in message


@pytest.mark.parametrize("kind, args, value, clipped", [
    ("uniform", [0.1, 0.6], 0.72, 0.6),
    ("uniform", [0.1, 0.6], 0.08, 0.1),
    ("uniform", [0.1, 0.6], 0.35, 0.35),
    ("loguniform", [1e-4, 1e-3], 1.2e-3, 1e-3),
    ("loguniform", [1e-4, 1e-3], 0.8e-4, 1e-4),
    ("loguniform", [1e-4, 1e-3], 5e-4, 5e-4),
    ("randint", [8, 65], 64 * 1.2, 64),
    ("randint", [8, 65], 8 * 0.8, 8),
    ("randint", [8, 65], 12 * 0.8, 10),
    ("randint", [8, 65], 40, 40),
])
def test_clip_keeps_pbt_perturbations_inside_the_bounds(kind, args, value, clipped):
    d = parse_domain("x", {kind: args})
    out = d.clip(value)
    assert out == pytest.approx(clipped)
    if kind == "randint":
        assert type(out) is int  # an integer field must stay an integer
        assert args[0] <= out < args[1]
    else:
        assert args[0] <= out <= args[1]


def test_clip_leaves_choice_and_grid_values_alone():
    assert parse_domain("x", {"choice": [1, 2]}).clip(2) == 2
    assert parse_domain("x", {"grid": ["a", "b"]}).clip("b") == "b"


def test_perturbed_corners_clipped_are_values_the_config_accepts():
    """What PBT does: scale a value by 0.8 or 1.2, then clip; the trial must still build."""
    spec = load_spec(spec_data(
        space={"objective.mask_ratio": {"uniform": [0.1, 0.99]}, "train.lr": {"loguniform": [1e-4, 1e-3]},
               "train.seq_len": {"randint": [8, 513]}},
        scheduler={"name": "pbt", "mutations": ["objective.mask_ratio", "train.lr", "train.seq_len"]}))
    assert {d.field for d in spec.mutable()} == {"objective.mask_ratio", "train.lr", "train.seq_len"}
    for d in spec.mutable():
        for corner in d.corners:
            for factor in (0.8, 1.2):
                value = d.clip(corner * factor)
                spec.base_config({d.field: value})  # raises if the config refuses it
                assert d.corners[0] <= value <= d.corners[-1]


def test_pbt_perturbs_the_continuous_fields_by_default_or_the_listed_ones():
    space = {"objective.mask_ratio": {"uniform": [0.1, 0.6]}, "train.lr": {"loguniform": [1e-4, 1e-3]},
             "train.seed": {"grid": [0, 1]}}
    spec = load_spec(spec_data(space=space, scheduler="pbt"))
    assert [d.field for d in spec.mutable()] == ["objective.mask_ratio", "train.lr"]
    spec = load_spec(spec_data(space=space, scheduler={"name": "pbt", "mutations": ["train.lr"]}))
    assert [d.field for d in spec.mutable()] == ["train.lr"]
    message = error_of(spec_data(space=space, scheduler={"name": "pbt", "mutations": ["train.warmup_steps"]}))
    assert "scheduler.mutations" in message and "train.warmup_steps" in message


# ---------------------------------------------------------------- searching the objective itself


@pytest.mark.parametrize("kind", ["choice", "grid"])
def test_a_searched_objective_lists_its_objectives_and_the_metric_must_be_reported_by_all(kind):
    spec = load_spec(spec_data(space={"objective.name": {kind: ["mlm", "clm", "electra"]}}, metric="probe_acc"))
    assert spec.objectives() == ["mlm", "clm", "electra"]
    for name in spec.objectives():
        assert spec.base_config({"objective.name": name}).objective.name == name
    message = error_of(spec_data(space={"objective.name": {kind: ["mlm", "clm"]}}, metric="eval_mlm_loss"))
    assert "eval_mlm_loss" in message and "'clm'" in message and "'mlm'" not in message


def test_objectives_is_the_base_objective_when_it_is_not_searched():
    assert load_spec(spec_data()).objectives() == ["mlm"]
    assert load_spec(spec_data(base={"objective": "clm", "model": {"preset": "tiny"}},
                               space={"train.lr": {"loguniform": [1e-4, 1e-3]}}, metric="eval_ppl")).objectives() == ["clm"]


def test_an_unknown_searched_objective_is_named():
    message = error_of(spec_data(space={"objective.name": {"choice": ["mlm", "mlmm"]}}, metric="probe_acc"))
    assert "objective.name" in message and "mlmm" in message


# ---------------------------------------------------------------- errors that name the bad thing


@pytest.mark.parametrize("space, expected", [
    ({"objective.mask_rato": {"uniform": [0.1, 0.6]}}, ["space.objective.mask_rato", "did you mean objective.mask_ratio"]),
    ({"train.lrr": {"loguniform": [1e-4, 1e-3]}}, ["space.train.lrr", "did you mean train.lr"]),
    ({"lr": {"loguniform": [1e-4, 1e-3]}}, ["space.lr", "did you mean train.lr"]),
    ({"train": {"choice": [1]}}, ["space.train", "unknown config field"]),
    ({"train.lr": {"uniform": [0.1, 0.1]}}, ["space.train.lr", "low < high"]),
    ({"train.lr": {"loguniform": [1e-3, 1e-4]}}, ["space.train.lr", "low < high"]),
    ({"train.lr": {"loguniform": [0, 1e-3]}}, ["space.train.lr", "positive"]),
    ({"train.lr": {"loguniform": [-1.0, 1e-3]}}, ["space.train.lr", "positive"]),
    ({"train.weight_decay": {"quniform": [0.0, 0.1, 0]}}, ["space.train.weight_decay", "step"]),
    ({"train.weight_decay": {"quniform": [0.0, 0.1, -0.01]}}, ["space.train.weight_decay", "step"]),
    ({"train.batch_size": {"randint": [8, 64.5]}}, ["space.train.batch_size", "integer"]),
    ({"train.batch_size": {"randint": [8.0, 64]}}, ["space.train.batch_size", "integer"]),
    ({"train.schedule": {"choice": []}}, ["space.train.schedule", "non-empty"]),
    ({"train.seed": {"grid": []}}, ["space.train.seed", "non-empty"]),
    ({"train.lr": {"normal": [1e-3, 1e-4]}}, ["space.train.lr", "uniform", "choice"]),
    ({"train.lr": [1e-4, 1e-3]}, ["space.train.lr"]),
    ({"train.lr": {"uniform": [1e-4]}}, ["space.train.lr", "2 numbers"]),
    ({"train.lr": {"uniform": [1e-4, "1e-3"]}}, ["space.train.lr", "numbers"]),
    ({"train.lr": {"uniform": [True, 2]}}, ["space.train.lr", "numbers"]),
    ({"objective.mask_ratio": {"uniform": [0.1, 1.5]}}, ["space.objective.mask_ratio", "1.5"]),
    ({"objective.mask_ratio": {"uniform": [0.0, 0.5]}}, ["space.objective.mask_ratio", "0.0"]),
    ({"train.schedule": {"choice": ["linear", "exponential"]}}, ["space.train.schedule", "exponential"]),
    ({"objective.tau": {"loguniform": [0.01, 1.0]}}, ["objective.tau"]),  # simcse's knob, the base is mlm
], ids=lambda v: json.dumps(v) if isinstance(v, dict) else None)
def test_a_bad_space_is_one_error_naming_the_field(space, expected):
    message = error_of(spec_data(space=space))
    for text in expected:
        assert text in message, (text, message)


def test_a_domain_whose_endpoint_the_config_refuses_names_the_field_and_the_value():
    message = error_of(spec_data(space={"objective.mask_ratio": {"uniform": [0.1, 1.5]}}))
    assert "objective.mask_ratio" in message and "1.5" in message


def test_an_empty_space_is_refused():
    assert "space" in error_of(spec_data(space={}))


def test_a_metric_the_objective_does_not_report_is_named_with_what_it_reports():
    message = error_of(spec_data(metric="eval_ppl"))
    assert "eval_ppl" in message and "'mlm'" in message and "eval_mlm_loss" in message


def test_ranking_by_the_training_loss_is_refused_as_not_comparable():
    message = error_of(spec_data(metric="loss"))
    assert "'loss'" in message and "not comparable" in message
    # A fixed-protocol metric that is merely wrong gets no such lecture.
    assert "not comparable" not in error_of(spec_data(metric="eval_ppl"))


def test_ranking_by_a_trivial_baseline_is_refused_naming_the_metric_it_baselines():
    # MLM reports eval_unigram_acc (the unigram baseline of eval_mlm_acc): every trial has the same one
    message = error_of(spec_data(metric="eval_unigram_acc", mode="max"))
    assert "metric='eval_unigram_acc'" in message and "rank by eval_mlm_acc" in message


def test_a_missing_metric_is_refused():
    assert "metric" in error_of({k: v for k, v in spec_data().items() if k != "metric"})


@pytest.mark.parametrize("data, expected", [
    (spec_data(trials=3), ["unknown search key 'trials'", "num_samples"]),
    (spec_data(mode="maximize"), ["mode", "maximize"]),
    (spec_data(base={"train": {"lr": -1}}), ["train.lr"]),
    (spec_data(base={"train": {"lrr": 1e-3}}), ["train.lrr"]),
    (spec_data(scheduler={"name": "asha", "reduction_factor": 1}), ["scheduler.reduction_factor"]),
    (spec_data(scheduler={"name": "asha", "reduction_factor": 0.5}), ["scheduler.reduction_factor"]),
    (spec_data(scheduler={"name": "asha", "grace_period": 0}), ["scheduler.grace_period"]),
    (spec_data(scheduler={"name": "pbt", "quantile_fraction": 0}), ["scheduler.quantile_fraction"]),
    (spec_data(scheduler={"name": "pbt", "quantile_fraction": 0.6}), ["scheduler.quantile_fraction", "0.6"]),
    (spec_data(scheduler={"name": "pbt", "resample_probability": 1.5}), ["scheduler.resample_probability"]),
    (spec_data(scheduler={"name": "pbt", "perturbation_interval": 0}), ["scheduler.perturbation_interval"]),
    (spec_data(scheduler="hyperband"), ["scheduler.name", "hyperband"]),
    (spec_data(scheduler={"name": "asha", "grace": 10}), ["scheduler.grace"]),
    (spec_data(search="bayes"), ["search.name", "bayes"]),
    (spec_data(resources={"workers": 0}), ["resources.workers"]),
    (spec_data(resources={"cpus_per_worker": 0}), ["resources.cpus_per_worker"]),
    (spec_data(resources={"gpus_per_worker": -1}), ["resources.gpus_per_worker"]),
    (spec_data(num_samples=0), ["num_samples"]),
    (spec_data(max_concurrent_trials=0), ["max_concurrent_trials"]),
], ids=lambda v: json.dumps({k: v[k] for k in v if k not in ("base", "space", "metric", "mode")} or v.get("base"))
   if isinstance(v, dict) else None)
def test_bad_search_keys_are_one_error_naming_them(data, expected):
    message = error_of(data)
    for text in expected:
        assert text in message, (text, message)


def test_bad_values_given_as_overrides_are_named_too():
    assert "resources.workers" in error_of(spec_data(), ["resources.workers=0"])
    assert "num_samples" in error_of(spec_data(), ["num_samples=0"])
    assert "scheduler.reduction_factor" in error_of(spec_data(), ["scheduler.reduction_factor=1"])


def test_scheduler_limits_themselves_are_accepted():
    spec = load_spec(spec_data(scheduler={"name": "pbt", "quantile_fraction": 0.5, "resample_probability": 0}))
    assert spec.scheduler.quantile_fraction == 0.5
    assert load_spec(spec_data(scheduler={"name": "asha", "reduction_factor": 1.5})).scheduler.reduction_factor == 1.5


def test_grid_search_needs_every_field_a_grid():
    message = error_of(spec_data(search="grid", space={"train.seed": {"grid": [0, 1]},
                                                       "objective.mask_ratio": {"uniform": [0.1, 0.6]}}))
    assert "search.name" in message and "grid" in message and "objective.mask_ratio" in message
    spec = load_spec(spec_data(search={"name": "grid"}, space={"train.seed": {"grid": [0, 1]},
                                                                "objective.mask_ratio": {"grid": [0.15, 0.4]}}))
    assert spec.search.name == "grid"


def test_optuna_cannot_cross_grid_fields():
    message = error_of(spec_data(search="optuna", space={"train.seed": {"grid": [0, 1]},
                                                         "objective.mask_ratio": {"uniform": [0.1, 0.6]}}))
    assert "optuna" in message and "train.seed" in message
    assert load_spec(spec_data(search="optuna", space={"train.seed": {"choice": [0, 1]}})).search.name == "optuna"


def test_random_search_crosses_grid_fields_and_samples_the_rest():
    spec = load_spec(spec_data(space={"train.seed": {"grid": [0, 1]}, "objective.mask_ratio": {"uniform": [0.1, 0.6]}}))
    assert spec.search.name == "random"


def test_pbt_with_nothing_to_perturb_is_refused():
    message = error_of(spec_data(scheduler="pbt", space={"train.seed": {"grid": [0, 1]}}))
    assert "pbt" in message and "perturb" in message


def test_probe_acc_needs_a_labelled_corpus(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("one document\nanother document\n")
    base = {"objective": "mlm", "model": {"preset": "tiny"}, "corpus": {"source": str(text)}}
    message = error_of(spec_data(base=base, metric="probe_acc"))
    assert "probe_acc" in message and "label_field" in message
    # The same corpus is fine for a metric that needs no labels.
    assert load_spec(spec_data(base=base, metric="eval_mlm_loss")).metric == "eval_mlm_loss"
    rows = tmp_path / "corpus.jsonl"
    rows.write_text('{"text": "one document", "topic": "a"}\n')
    labelled = {**base, "corpus": {"source": str(rows), "label_field": "topic"}}
    assert load_spec(spec_data(base=labelled, metric="probe_acc")).metric == "probe_acc"
    # The synthetic corpus is labelled, but a probe over no documents reports nothing.
    assert "probe_docs" in error_of(spec_data(base={"objective": "mlm", "eval": {"probe_docs": 0}}, metric="probe_acc"))


def test_eval_sts_spearman_needs_graded_pairs_and_a_trial_finds_their_file(tmp_path, monkeypatch):
    text = tmp_path / "corpus.txt"
    text.write_text("one document. and its second sentence.\nanother document\n")
    space = {"objective.tau": {"loguniform": [0.05, 1.0]}}
    base = {"objective": "simcse", "model": {"preset": "tiny"}, "corpus": {"source": str(text)}}
    message = error_of(spec_data(base=base, space=space, metric="eval_sts_spearman", mode="max"))
    assert "eval_sts_spearman needs eval.sts_pairs > 0 and graded sentence pairs (eval.sts_data" in message
    assert "not reported by objective 'mlm'" in error_of(spec_data(metric="eval_sts_spearman", mode="max"))
    (tmp_path / "pairs.tsv").write_text("sentence1\tsentence2\tscore\na b\ta b\t5\na b\tc d\t0\nc d\tc e\t2\n")
    monkeypatch.chdir(tmp_path)
    spec = load_spec(spec_data(base={**base, "eval": {"sts_data": "pairs.tsv"}}, space=space,
                               metric="eval_sts_spearman", mode="max"))
    assert spec.base["eval"]["sts_data"] == str(tmp_path / "pairs.tsv")  # a trial runs in another directory
    # The synthetic corpus has pairs of its own.
    synthetic_base = {**base, "corpus": "synthetic"}
    assert load_spec(spec_data(base=synthetic_base, space=space, metric="eval_sts_spearman", mode="max")).metric
    assert "eval.sts_pairs > 0" in error_of(spec_data(base={**synthetic_base, "eval": {"sts_pairs": 0}}, space=space,
                                                      metric="eval_sts_spearman", mode="max"))


def test_simcse_temperature_ranks_by_sentence_similarity_and_keeps_the_probe():
    spec = load_spec("simcse_temperature")
    assert (spec.metric, spec.mode) == ("eval_sts_spearman", "max")
    assert "probe_acc" in get_objective("simcse").metrics  # a column of its results beside the ranking one


# ---------------------------------------------------------------- checks added for bugs a review found


def test_quniform_bounds_off_the_step_are_refused_before_ray():
    try:
        spec = load_spec(spec_data(space={"objective.mask_ratio": {"quniform": [0.05, 0.5, 0.1]}}))
    except ConfigError as e:
        assert "objective.mask_ratio" in str(e)
        return
    spec.domains[0].to_tune()  # ValueError: lower bound 0.05 is not divisible by quantization factor 0.1


@pytest.mark.parametrize("domain", [{"uniform": [100, 2000]}, {"quniform": [0, 2000, 100]},
                                    {"loguniform": [10, 1000]}])
def test_a_continuous_domain_over_an_integer_field_only_samples_valid_configs(domain):
    try:
        spec = load_spec(spec_data(space={"train.warmup_steps": domain}))
    except ConfigError as e:
        assert "train.warmup_steps" in str(e)
        return
    d = spec.domains[0]
    for value in [d.to_tune().sample(random_state=i) for i in range(5)]:
        spec.base_config({d.field: value})  # ConfigError: train.warmup_steps=700.0 ... expected an integer


@pytest.mark.parametrize("override", ["num_samples=many", "num_samples=2.5", "max_concurrent_trials=all"])
def test_a_non_integer_trial_count_is_a_config_error(override):
    assert override.split("=")[0] in error_of(spec_data(), [override])


def test_a_base_that_is_not_a_mapping_is_a_config_error():
    assert "base" in error_of(spec_data(base=["objective", "mlm"]))


def test_build_spec_refuses_a_base_that_is_not_a_mapping():
    with pytest.raises(ConfigError, match="base"):
        build_spec(spec_data(base=["objective", "mlm"]))


def test_a_dotted_override_extends_a_scheduler_given_by_name():
    spec = load_spec(spec_data(scheduler="asha"), ["scheduler.grace_period=50"])
    assert spec.scheduler.name == "asha" and spec.scheduler.grace_period == 50


def test_pbt_advice_matches_what_it_perturbs():
    data = spec_data(scheduler="pbt", space={"objective.mask_ratio": {"choice": [0.15, 0.3, 0.45]}})
    try:
        spec = load_spec(data)
    except ConfigError as e:
        assert "choice" not in str(e), f"the space already has a choice field: {e}"
        return
    assert spec.mutable()


def test_a_searched_objective_and_a_knob_it_lacks_are_refused_before_ray():
    space = {"objective.name": {"grid": ["mlm", "clm"]}, "objective.mask_ratio": {"uniform": [0.1, 0.5]}}
    try:
        spec = load_spec(spec_data(space=space, metric="probe_acc"))
    except ConfigError as e:
        assert "objective.mask_ratio" in str(e)
        return
    for name, ratio in itertools.product(spec.objectives(), spec.domains[1].corners):
        spec.base_config({"objective.name": name, "objective.mask_ratio": ratio})


def test_corners_of_two_fields_that_constrain_each_other_are_checked_together():
    space = {"train.seq_len": {"choice": [128, 256]}, "model.max_positions": {"choice": [128, 512]}}
    try:
        spec = load_spec(spec_data(space=space))
    except ConfigError as e:
        assert "train.seq_len" in str(e) or "model.max_positions" in str(e)
        return
    for corners in itertools.product(*(d.corners for d in spec.domains)):
        spec.base_config({d.field: v for d, v in zip(spec.domains, corners)})


def test_optuna_proposes_the_same_points_inside_the_space_for_the_same_seed_and_caps_concurrency():
    pytest.importorskip("optuna")
    from sslab.search import search_alg_of

    def proposals(seed):
        spec = load_spec("mlm_masking", ["search.name=optuna", f"search.seed={seed}", "model.preset=tiny"])
        alg = search_alg_of(spec, 2)
        assert alg.set_search_properties(spec.metric, spec.mode, {d.field: d.to_tune() for d in spec.domains})
        return [alg.suggest(f"t{i}") for i in range(3)]

    first = proposals(0)
    assert first[2] is None  # two trials at once: the third waits for one to end
    assert first[:2] == proposals(0)[:2] and first[:2] != proposals(1)[:2]
    for params in first[:2]:
        assert 0.1 <= params["objective.mask_ratio"] <= 0.6 and 1e-4 <= params["train.lr"] <= 1e-3


def test_every_trial_runs_with_the_searchs_resources_as_its_scaling(tmp_path):
    from sslab import config as config_mod
    from sslab.search import TrialSetup

    spec = load_spec("mlm_masking", ["resources.workers=2", "resources.cpus_per_worker=3",
                                     "resources.gpus_per_worker=0.5", "model.preset=tiny"])
    setup = TrialSetup(base=config_mod.merge(spec.base, {"scaling": spec.scaling()}),
                       params=[d.field for d in spec.domains], search_dir=str(tmp_path), metric=spec.metric, pbt=False)
    cfg = setup.config({"objective.mask_ratio": 0.3, "train.lr": 1e-3}, tmp_path / "trial")
    s = cfg.scaling
    assert (s.num_workers, s.cpus_per_worker, s.use_gpu, s.gpus_per_worker) == (2, 3.0, True, 0.5)
    assert cfg.objective.mask_ratio == 0.3 and cfg.run.out == str(tmp_path / "trial")


@pytest.mark.parametrize("grace, factor, max_steps", [(1250, 4, 20000), (2500, 4, 20000), (50, 3, 150), (8, 4, 128),
                                                      (4000, 3, 20000), (7, 2.5, 100), (300, 4, 200)])
def test_asha_rungs_are_the_steps_ray_stops_trials_at(grace, factor, max_steps):
    from ray.tune.schedulers.async_hyperband import _Bracket

    from sslab.search import asha_rungs

    ray_rungs = sorted(m for m, _ in _Bracket(min(grace, max_steps), max_steps, factor, 0)._rungs)
    assert asha_rungs(grace, factor, max_steps) == [round(m) for m in ray_rungs]


@pytest.mark.parametrize("on_cpu", [False, True], ids=["own-scale", "cpu"])
@pytest.mark.parametrize("path", [p for p in SHIPPED if load_spec(p).scheduler.name == "asha"],
                         ids=lambda p: p.stem)
def test_shipped_asha_spaces_stop_trials_at_evaluations_and_end_at_max_steps(path, on_cpu, caplog):
    from sslab.search import asha_rungs, scheduler_of

    spec = load_spec(path, cpu_overrides(path) if on_cpu else None)
    s, cfg = spec.scheduler, spec.base_config()
    rungs = asha_rungs(s.grace_period, s.reduction_factor, spec.max_steps)
    assert len(rungs) >= 3 and rungs[-1] == spec.max_steps, rungs
    assert all(rung % cfg.train.eval_every == 0 for rung in rungs), (rungs, cfg.train.eval_every)
    with caplog.at_level("INFO", logger="sslab"):
        scheduler_of(spec)
    assert not caplog.records, caplog.records[0].getMessage()


def test_asha_says_when_its_last_rung_is_not_the_end_of_training(caplog):
    from sslab.search import scheduler_of

    with caplog.at_level("INFO", logger="sslab"):
        scheduler_of(load_spec("mlm_masking"))  # rungs 1250, 5000, 20000
        assert not caplog.records
        scheduler_of(load_spec("mlm_masking", ["scheduler.grace_period=2500"]))
    message = caplog.records[-1].getMessage()
    assert "[2500, 10000]" in message and "10000 more steps (50 %" in message and "at 20000" in message


def test_asha_says_when_a_rung_falls_between_evaluations(caplog):
    from sslab.search import scheduler_of

    with caplog.at_level("INFO", logger="sslab"):
        scheduler_of(load_spec("mlm_masking", ["train.eval_every=1000"]))  # rungs 1250, 5000, 20000
    message = caplog.records[-1].getMessage()
    assert "train.eval_every=1000" in message and "[1250, 5000, 20000]" in message, message
    assert "decided at steps [2000, 5000, 20000]" in message, message


def test_a_search_prepares_every_combination_of_its_categorical_row_fields_and_no_continuous_one():
    from sslab.search import MAX_PREPARED_VALUES, row_values

    assert row_values([]) == [{}]  # no row field searched: the base's rows, once
    seq, vocab = Domain("train.seq_len", "grid", (64, 128)), Domain("tokenizer.vocab_size", "choice", (1000, 2000))
    assert row_values([seq, vocab]) == [{"train.seq_len": s, "tokenizer.vocab_size": v}
                                        for s in (64, 128) for v in (1000, 2000)]
    assert row_values([Domain("train.seq_len", "randint", (64, 129))]) is None  # each trial prepares its own
    many = Domain("train.seq_len", "choice", tuple(range(32, 32 + MAX_PREPARED_VALUES + 1)))
    assert row_values([many]) is None
