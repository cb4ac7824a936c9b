"""One source of defaults: the params dataclasses. conf/config.yaml (the base every suite
overrides) restates them, and the model's own config defaults to train.model's. One registry
of the generators the params accept."""

import dataclasses
import typing
from pathlib import Path

import yaml

from trajectory_transformer.analysis import AnalyzeSpec
from trajectory_transformer.critic import BCSpec, IQLSpec
from trajectory_transformer.datasets import GENERATORS, FetchSpec
from trajectory_transformer.discretization import DiscretizeSpec
from trajectory_transformer.evaluation import EvaluateSpec, ImitationSpec
from trajectory_transformer.model import ModelConfig
from trajectory_transformer.planner import PlannerSpec
from trajectory_transformer.training import ArchitectureSpec, TrainSpec
from trajectory_transformer.trajectories import SequenceSpec

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = {"sequence": SequenceSpec, "discretize": DiscretizeSpec, "train": TrainSpec, "critic": IQLSpec, "bc": BCSpec,
            "analyze": AnalyzeSpec, "imitation": ImitationSpec, "plan": PlannerSpec, "evaluate": EvaluateSpec}


def disagreements(defaults, written, path: str) -> list[str]:
    """Where the yaml gives another value than the dataclass default (a key it omits takes the default)."""
    if isinstance(defaults, dict) and isinstance(written, dict):
        unknown = [f"{path}.{key}: not a field" for key in written if key not in defaults]
        return unknown + [line for key in written if key in defaults
                          for line in disagreements(defaults[key], written[key], f"{path}.{key}")]
    return [] if defaults == written else [f"{path}: default {defaults!r}, conf/config.yaml {written!r}"]


def test_conf_restates_the_params_defaults():
    base = yaml.safe_load((ROOT / "conf/config.yaml").read_text())
    assert set(base) - {"defaults"} == set(SECTIONS)
    found = [line for name, spec in SECTIONS.items() for line in disagreements(dataclasses.asdict(spec()), base[name], name)]
    assert found == []


def test_the_default_planner_runs_on_the_default_model():
    """Defaults that disagreed once: a cached planner needs rotary positions."""
    assert PlannerSpec().cached and ArchitectureSpec().position_embedding == "rotary"


def test_the_model_config_defaults_are_the_params_defaults():
    model = {f.name: f.default for f in dataclasses.fields(ModelConfig) if f.default is not dataclasses.MISSING}
    assert {key: model[key] for key in dataclasses.asdict(ArchitectureSpec())} == dataclasses.asdict(ArchitectureSpec())
    assert model["window"] == SequenceSpec().window


def test_every_generator_the_params_accept_has_one_registry_entry():
    literal, _none = typing.get_args(typing.get_type_hints(FetchSpec)["generator"])
    assert set(typing.get_args(literal)) == set(GENERATORS)


def test_every_dataset_of_every_suite_carries_its_sequence_overrides():
    """The train stage lists `datasets.<name>.sequence`, and DVC stops on a listed parameter that
    is missing: every dataset states it (`{}` when it sets nothing), itself or in the suite it extends."""
    suites = {path.stem: yaml.safe_load(path.read_text()) for path in (ROOT / "conf/suite").glob("*.yaml")}
    for name, suite in suites.items():
        bases = [suites[base] for base in suite.get("defaults", []) if base in suites]
        for dataset, entry in suite["datasets"].items():
            assert "sequence" in entry or any("sequence" in base["datasets"].get(dataset, {}) for base in bases), \
                f"{name}: datasets.{dataset}"
