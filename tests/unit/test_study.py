"""Studies (`sslab study`): every shipped one states its paper and runs as a valid search at each
size, and the comparison says plainly which of the paper's directions reproduce and which do not.

The runs themselves are in tests/integration/test_study_runs.py."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sslab.errors import ConfigError
from sslab.search_spec import load_spec
from sslab.study import check_overrides, compare, html_of, load_study, markdown_of, shipped_studies, text_of

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = {p.stem: p for p in shipped_studies()}
NOT_REPRODUCED = "does not reproduce at this size"


def test_the_four_studies_of_the_issue_are_shipped_as_package_data():
    assert set(SHIPPED) >= {"simcse_temperature", "span_corruption", "dynamic_masking", "electra"}
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "*.yaml" in data["sslab.search_spaces.studies"]  # else a wheel would ship none


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_a_shipped_study_states_its_paper_and_runs_as_a_valid_search_at_every_size(name):
    study = load_study(name)
    paper = study.paper
    assert all(paper[k] for k in ("citation", "where", "quantity", "says", "checked", "claims"))
    assert all(len(s.paper) == len(paper["columns"]) for s in study.settings)  # a number per column, or none
    assert {"smoke", "tiny", "paper"} <= set(study.sizes)
    for size in study.sizes:
        spec = load_spec(study.search(size))  # the metric is one the objective reports (simcse: needs i23-sts)
        assert spec.scheduler.name == "fifo" and spec.num_samples == 1 and spec.search.name == "grid"
        assert [d.args for d in spec.domains if d.field == study.setting] == [tuple(s.value for s in study.settings)]
    tiny = load_spec(study.search("tiny"))
    assert tiny.base_config().model.preset == "tiny" and tiny.resources.cpus_per_worker == 1
    assert len(study.settings) * len(study.seeds) <= 4 and tiny.max_steps <= 300  # minutes on 2 cores


def test_the_search_of_a_study_crosses_its_settings_with_its_seeds():
    study = load_study("dynamic_masking")
    space = study.search("smoke")["space"]
    assert space == {"objective.static_masks": {"grid": [10, None]}, "train.seed": {"grid": [0, 1]}}
    one_seed = load_study("span_corruption").search("tiny")
    assert set(one_seed["space"]) == {"objective.noise_density"} and one_seed["base"]["train"]["seed"] == 0
    with pytest.raises(ConfigError, match="--size='huge'.*smoke, tiny, paper"):
        study.search("huge")


@pytest.mark.parametrize("override", ["scheduler.name=asha", "num_samples=3", "metric=probe_acc", "mode=max",
                                      "search.name=random", "objective.static_masks=1", "train.seed=3"])
def test_overrides_that_would_change_the_experiment_are_refused(override):
    with pytest.raises(ConfigError, match=f"^{override.partition('=')[0]}: a study runs its own grid"):
        check_overrides(load_study("dynamic_masking"), [override])


def test_the_command_refuses_such_an_override_in_one_line_before_ray(tmp_path, capsys):
    from sslab.cli import main

    assert main(["study", "dynamic_masking", "--out", str(tmp_path / "s"), "scheduler.name=asha"]) == 1
    assert capsys.readouterr().err.startswith("sslab: error: scheduler.name: a study runs its own grid")
    assert not (tmp_path / "s" / "search.yaml").exists()


def test_studies_lists_every_shipped_study_with_its_paper(capsys):
    from sslab.cli import main

    assert main(["studies"]) == 0
    out = capsys.readouterr().out
    for name in SHIPPED:
        study = load_study(name)
        assert f"{name} " in out and study.paper["citation"] in out and study.setting in out


def test_a_trials_config_and_resources_may_be_overridden():
    check_overrides(load_study("dynamic_masking"), ["model.preset=small", "train.max_steps=600",
                                                    "resources.cpus_per_worker=2", "max_concurrent_trials=1"])
    check_overrides(load_study("span_corruption"), ["train.seed=4"])  # one seed: the user's


def write(tmp_path, **changes) -> Path:
    data = yaml.safe_load(SHIPPED["span_corruption"].read_text())
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            data[section][field] = value
        elif value is None:
            del data[section]
        else:
            data[section] = value
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("changes, needle", [
    ({"extra": 1}, "unknown study key 'extra'"),
    ({"paper__table": "7"}, "unknown study key 'table'"),
    ({"stands_for": None}, "needs 'stands_for'"),
    ({"paper__claims": [["15 %", "40 %"]]}, "paper.claims="),
    ({"sizes": {"paper": {}}}, "a 'tiny' size"),
    ({"seeds": []}, "seeds="),
    ({"settings": [{"label": "15 %", "value": 0.15, "paper": [1.0]}, {"label": "50 %", "value": 0.5}]},
     r"settings\[15 %\]\.paper="),
])
def test_a_malformed_study_is_refused_naming_the_key(tmp_path, changes, needle):
    with pytest.raises(ConfigError, match=needle):
        load_study(write(tmp_path, **changes))


def test_an_unknown_study_name_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="neither a file nor a shipped study.*dynamic_masking"):
        load_study("static_masking")


# ---------------------------------------------------------------- the comparison


def results(rows: list[tuple], setting: str = "objective.noise_density", metric: str = "eval_span_loss"):
    """A results table like a search's: (value, seed, status, metric) per trial."""
    return pd.DataFrame([{setting: v, "train.seed": seed, "status": status, metric: m} for v, seed, status, m in rows])


def test_each_stated_direction_says_whether_sslab_agrees():
    study = load_study("span_corruption")  # claims 15 % > 50 % and 25 % > 50 %; eval_span_loss, lower is better
    table = results([(0.15, 0, "FINISHED", 2.0), (0.25, 0, "FINISHED", 3.5), (0.5, 0, "FINISHED", 3.0)])
    c = compare(study, "tiny", table, 300)
    assert [r["sslab"] for r in c["settings"]] == [2.0, 3.5, 3.0]
    assert [r["paper"]["GLUE"] for r in c["settings"]] == [83.28, 83.00, 81.27]
    (agrees, opposite) = c["claims"]
    assert agrees["verdict"] == "agrees" and agrees["sslab_gap"] == 1.0 and agrees["paper_gap"] == 2.01
    assert opposite["verdict"] == f"opposite direction: {NOT_REPRODUCED}" and opposite["sslab_gap"] == -0.5
    assert c["summary"].startswith("1 of 2 directions the paper states reproduce at this size (size tiny, 300 steps")
    assert "Does not reproduce at this size: 25 % > 50 %." in c["summary"] and "noise was not estimated" in c["summary"]
    text = text_of(c)
    assert "83.00" in text and "81.27" in text  # the paper's numbers as published
    assert "at the last evaluation of each trial (step 300), not the best of its curve" in text
    for rendered in (text, markdown_of(c), html_of(c)):
        assert "25 % > 50 %" in rendered.replace("&gt;", ">") and NOT_REPRODUCED in rendered


def static_vs_dynamic(static: tuple, dynamic: tuple) -> dict:
    """dynamic_masking's comparison (dynamic > static (10 masks); eval_mlm_loss) for losses on seeds 0 and 1."""
    rows = [(10, seed, "FINISHED", v) for seed, v in enumerate(static)]
    rows += [(None, seed, "FINISHED", v) for seed, v in enumerate(dynamic)]
    return compare(load_study("dynamic_masking"), "tiny", results(rows, "objective.static_masks", "eval_mlm_loss"), 300)


def test_with_several_seeds_a_gap_must_hold_on_each_and_exceed_its_spread():
    # The seed moves both settings by 0.4, and dynamic beats static by about 0.2 on each: reproduced.
    c = static_vs_dynamic((4.80, 4.40), (4.60, 4.15))
    (only,) = c["claims"]
    assert only["gap_by_seed"] == pytest.approx([0.2, 0.25]) and only["sslab_gap"] == pytest.approx(0.225)
    assert only["noise"] == pytest.approx(0.05) and only["verdict"] == "agrees"
    assert c["noise"] == pytest.approx(0.45) and c["settings"][1]["by_seed"] == [4.60, 4.15]
    assert "1 of 1 directions" in c["summary"] and "moves by up to 0.45 between seeds" in c["summary"]
    assert "+0.2 +0.25" in text_of(c)


@pytest.mark.parametrize("static, dynamic", [((4.0, 4.2), (3.85, 4.25)), ((4.0, 4.2), (3.7, 4.19))])
def test_a_gap_that_flips_or_stays_within_its_spread_across_seeds_does_not_reproduce(static, dynamic):
    (only,) = static_vs_dynamic(static, dynamic)["claims"]  # mean gap > 0: +0.15 and -0.05; +0.3 and +0.01
    assert only["sslab_gap"] > 0
    assert only["verdict"] == f"same direction, within run-to-run noise: {NOT_REPRODUCED}"


def test_a_tie_or_a_failed_trial_is_not_counted_as_reproduced():
    study = load_study("electra")  # generator 1/4 > generator 1 by probe_acc; a figure, no numbers
    tie = compare(study, "tiny", results([(0.25, 0, "FINISHED", 0.9), (1.0, 0, "FINISHED", 0.9)],
                                         "objective.generator_fraction", "probe_acc"), 300, seeds=[0])
    assert tie["claims"][0]["verdict"] == f"tie: {NOT_REPRODUCED}" and tie["claims"][0]["paper_gap"] is None
    assert "figure only" in text_of(tie)
    failed = compare(study, "tiny", results([(0.25, 0, "ERROR", None), (1.0, 0, "FINISHED", 0.9),
                                             (0.25, 1, "FINISHED", 0.8), (1.0, 1, "FINISHED", 0.7)],
                                            "objective.generator_fraction", "probe_acc"), 300)
    assert failed["settings"][0]["sslab"] is None and failed["claims"][0]["verdict"].startswith("not measured")
    assert failed["summary"].startswith("0 of 1")
