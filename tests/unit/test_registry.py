"""The objective registry: its exact contents, and what ``register`` and ``get`` refuse."""
from dataclasses import dataclass

import pytest

from sslab import objectives
from sslab.config import ObjectiveConfig
from sslab.errors import ConfigError
from sslab.objectives import base
from sslab.protocol import is_fixed_protocol

# Every registered objective. Adding an objective file means adding its name here.
EXPECTED_OBJECTIVES = ["clm", "denoise", "electra", "mlm", "nsp", "simcse", "sop", "span"]


@pytest.fixture
def registry():
    """The registry, restored to its contents before the test whatever the test registered."""
    before = dict(base._REGISTRY)
    yield base._REGISTRY
    base._REGISTRY.clear()
    base._REGISTRY.update(before)


def make_objective(name="toy", config=ObjectiveConfig, **attrs):
    """A concrete Objective subclass (its abstract methods stubbed) named ``name``."""
    stubs = {m: (lambda self, *a, **k: None) for m in base.Objective.__abstractmethods__}
    namespace = {**stubs, "unit": "packed", "Config": config, **attrs}
    if name is not None:
        namespace["name"] = name
    return type(f"Toy_{name}", (base.Objective,), namespace)


def test_the_registry_holds_exactly_the_expected_objectives():
    assert objectives.available() == sorted(EXPECTED_OBJECTIVES)


@pytest.mark.parametrize("name", EXPECTED_OBJECTIVES)
def test_each_registered_objective_is_complete(name):
    cls = objectives.get(name)
    assert issubclass(cls, base.Objective) and cls.name == name
    assert not cls.__abstractmethods__
    assert cls.unit in ("packed", "sentences", "pairs")
    assert issubclass(cls.Config, ObjectiveConfig) and cls.Config().name == name
    assert cls.metrics, f"{name} reports no fixed-protocol metrics"
    # each trivial baseline is a fixed-protocol metric, of a metric the objective reports
    assert cls.baselines, f"{name} declares no baseline: its report cannot say whether it learned"
    for baseline, metric in cls.baselines.items():
        assert is_fixed_protocol(baseline) and metric in cls.metrics and baseline not in (metric, "probe_acc")


def test_register_adds_a_class_and_get_returns_it(registry):
    cls = make_objective("toy")
    assert base.register(cls) is cls
    assert objectives.get("toy") is cls
    assert objectives.available() == sorted(EXPECTED_OBJECTIVES + ["toy"])
    base.register(cls)  # registering the same class again (a module re-import) is harmless
    assert objectives.get("toy") is cls


def test_register_refuses_a_duplicate_name(registry):
    taken = EXPECTED_OBJECTIVES[0]
    original = objectives.get(taken)
    with pytest.raises(ValueError, match=f"'{taken}' is already registered"):
        base.register(make_objective(taken))
    assert objectives.get(taken) is original


def test_a_subclass_of_a_registered_objective_must_choose_its_own_name(registry):
    parent = objectives.get(EXPECTED_OBJECTIVES[0])
    with pytest.raises(ValueError, match="already registered"):
        base.register(type("Variant", (parent,), {}))
    renamed = base.register(type("Variant", (parent,), {"name": "variant"}))
    assert objectives.get("variant") is renamed and objectives.get(parent.name) is parent


@pytest.mark.parametrize("thing", [object, int, "mlm", make_objective], ids=["object", "int", "str", "function"])
def test_register_refuses_what_is_not_an_objective_class(registry, thing):
    with pytest.raises(TypeError, match="subclass of Objective"):
        base.register(thing)
    assert objectives.available() == sorted(EXPECTED_OBJECTIVES)


@pytest.mark.parametrize("name", [None, ""])
def test_register_refuses_a_class_without_a_name(registry, name):
    with pytest.raises(TypeError, match="'name'"):
        base.register(make_objective(name))
    assert objectives.available() == sorted(EXPECTED_OBJECTIVES)


def test_register_refuses_a_config_that_is_not_an_objective_config(registry):
    @dataclass(kw_only=True)
    class NotAnObjectiveConfig:
        name: str = "toy"

    for config in (NotAnObjectiveConfig, NotAnObjectiveConfig(), dict):
        with pytest.raises(TypeError, match="ObjectiveConfig"):
            base.register(make_objective("toy", config=config))
    assert "toy" not in objectives.available()


def test_get_of_an_unknown_name_lists_the_available_ones():
    with pytest.raises(ConfigError) as info:
        objectives.get("mlmm")
    assert "'mlmm'" in str(info.value)
    assert f"available: {', '.join(sorted(EXPECTED_OBJECTIVES))}" in str(info.value)
