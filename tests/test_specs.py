"""The spec schema and loader: what parses, what fails, and what the errors say."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from _paths import SPECS
from toy_outer import ToyConfig, ToyLoop

from metaplat.outer.base import METHODS
from metaplat.specs.loader import (
    load_spec,
    parse_override,
    parse_spec,
    resolve_method,
    set_dotted,
    summary,
    validate_spec,
)
from metaplat.specs.schema import ExperimentSpec
from metaplat.specs.search_space import Domain
from metaplat.specs.typecheck import SpecError

if "toy" not in METHODS:
    METHODS.register("toy", ToyLoop)

FULL = textwrap.dedent(
    """
    name: quickstart
    seed: 3
    task: {family: sinusoid, config: {num_support: 5, amplitude: [0.5, 2]}}
    method: {name: toy, config: {lr: 0.05}}
    workers: {num_workers: 2, num_cpus: 1, num_gpus: 0.25}
    train: {iterations: 20, eval_every: 5, eval_tasks: 8, checkpoint_every: 5}
    tune:
      metric: val/loss
      mode: min
      num_samples: 2
      max_concurrent_trials: null
      search_space:
        method.config.lr: {loguniform: [0.001, 0.1]}
        method.config.meta_batch: {grid: [1, 4]}
        task.config.num_query: {randint: [5, 20]}
        seed: [0, 1, 2]
      search_alg: null
      scheduler: {name: asha, grace_period: 5}
    storage_path: /tmp/metaplat_results
    """
)


def base() -> dict[str, Any]:
    return yaml.safe_load(FULL)


def errors_of(data: dict[str, Any], deep: bool = True) -> list[str]:
    with pytest.raises(SpecError) as info:
        spec = parse_spec(data)
        if deep:
            validate_spec(spec)
    return info.value.errors


def test_full_spec_parses_with_types_coerced() -> None:
    spec = parse_spec(base())
    assert spec.seed == 3 and spec.workers.num_cpus == 1.0
    assert isinstance(spec.workers.num_cpus, float)
    assert spec.tune.search_space["seed"] == Domain("grid", (0, 1, 2))  # bare list = grid
    assert spec.tune.scheduler is not None and spec.tune.scheduler.options == {"grace_period": 5}
    assert spec.tune.num_trials() == 2 * 3 * 2
    resolved = validate_spec(spec)
    assert resolved.method_config == ToyConfig(lr=0.05)
    assert resolved.family.num_support == 5 and resolved.family.amplitude == (0.5, 2.0)
    assert "quickstart: toy on sinusoid, 12 trials" in summary(spec)


def test_round_trip_and_digest() -> None:
    spec = parse_spec(base())
    assert parse_spec(spec.to_dict()) == spec
    moved = parse_spec({**base(), "storage_path": "s3://bucket/x"})
    assert moved.digest() == spec.digest()  # where results go does not change them
    changed = parse_spec({**base(), "seed": 4})
    assert changed.digest() != spec.digest()


def test_defaults_fill_optional_sections() -> None:
    spec = parse_spec(
        {
            "name": "a",
            "task": {"family": "sinusoid"},
            "method": {"name": "toy"},
            "tune": {"metric": "val/loss"},
        }
    )
    assert spec.workers.num_workers == 0 and spec.train.iterations == 100
    assert spec.tune.mode == "min" and spec.storage_path == "~/metaplat_results"


def test_unknown_key_names_path_suggestion_and_allowed() -> None:
    data = base()
    data["train"]["iteration"] = 5
    (msg,) = errors_of(data, deep=False)
    assert msg.startswith("train: unknown key 'iteration'; did you mean 'iterations'?")
    assert "allowed: checkpoint_every, eval_every, eval_tasks, iterations, keep_checkpoints" in msg


def test_unknown_method_config_key() -> None:
    data = base()
    data["method"]["config"]["lrr"] = 0.1
    (msg,) = errors_of(data)
    assert msg.startswith("method.config: unknown key 'lrr'; did you mean 'lr'?")


def test_wrong_types_name_field_value_and_type() -> None:
    data = base()
    data["workers"]["num_workers"] = "two"
    data["train"]["iterations"] = True
    data["tune"]["mode"] = "minimize"
    errors = errors_of(data, deep=False)
    assert "workers.num_workers: got 'two' (str), expected int" in errors
    assert "train.iterations: got True (bool), expected int" in errors
    assert "tune.mode: got 'minimize', expected one of 'min', 'max'" in errors


def test_method_config_types_checked() -> None:
    data = base()
    data["method"]["config"]["lr"] = "fast"
    assert errors_of(data) == ["method.config.lr: got 'fast' (str), expected float"]


def test_required_field_missing() -> None:
    data = base()
    del data["tune"]["metric"]
    assert errors_of(data, deep=False) == ["tune.metric: required, expected str"]


def test_all_errors_reported_together() -> None:
    data = base()
    data["trian"] = {}
    data["workers"]["num_cpus"] = -1
    data["tune"]["num_samples"] = 0
    errors = errors_of(data, deep=False)
    assert len(errors) == 3
    assert any(e.startswith("spec: unknown key 'trian'; did you mean 'train'?") for e in errors)


def test_unknown_family_and_method_use_registry_messages() -> None:
    data = base()
    data["task"]["family"] = "sinusiod"
    data["method"]["name"] = "mamll"
    errors = errors_of(data)
    assert any(
        "task.family: unknown task family 'sinusiod'; did you mean 'sinusoid'?" in e for e in errors
    )
    assert any("method.name: unknown method 'mamll'; did you mean 'maml'?" in e for e in errors)


def test_method_as_import_path() -> None:
    assert resolve_method("toy_outer:ToyLoop") is ToyLoop
    with pytest.raises(SpecError, match="not an OuterLoop subclass"):
        resolve_method("toy_outer:ToyConfig")
    with pytest.raises(SpecError, match="cannot import 'nope:X'"):
        resolve_method("nope:X")


def test_family_config_validated_by_family() -> None:
    data = base()
    data["task"]["config"]["num_support"] = 0
    assert errors_of(data) == ["task.config: num_support and num_query must be >= 1, got 0, 10"]


@pytest.mark.parametrize(
    ("workers", "message"),
    [
        ({"num_workers": -1}, "num_workers must be >= 0, got -1"),
        ({"num_workers": 2, "num_gpus": 1.5}, "fraction below 1 or a whole number, got 1.5"),
        ({"num_workers": 0, "num_gpus": 1}, "num_workers is 0 (in-process)"),
        ({"num_workers": 1, "num_cpus": 0, "num_gpus": 0}, "need num_cpus > 0 or num_gpus > 0"),
    ],
)
def test_impossible_resources(workers: dict[str, Any], message: str) -> None:
    data = base()
    data["workers"] = workers
    (msg,) = errors_of(data, deep=False)
    assert msg.startswith("workers: ") and message in msg


def test_whole_and_fractional_gpus_allowed() -> None:
    for gpus in (0.5, 2):
        assert parse_spec({**base(), "workers": {"num_workers": 1, "num_gpus": gpus}})


def test_search_path_must_name_a_config_field() -> None:
    data = base()
    data["tune"]["search_space"]["method.config.inner_lr"] = {"uniform": [0.1, 0.2]}
    (msg,) = errors_of(data)
    assert msg.startswith(
        "tune.search_space['method.config.inner_lr']: method.config: unknown key 'inner_lr'"
    )
    assert "allowed: crash_at, crash_file, init, lr, meta_batch, nan_at" in msg


def test_search_path_roots() -> None:
    data = base()
    data["tune"]["search_space"]["train.iterations"] = [1, 2]
    (msg,) = errors_of(data, deep=False)
    assert "must be 'seed', 'method.config.<field>' or 'task.config.<field>'" in msg


def test_search_values_are_built_into_the_config() -> None:
    data = base()
    data["tune"]["search_space"]["method.config.lr"] = {"uniform": [-0.1, 0.1]}
    assert errors_of(data) == [
        "tune.search_space['method.config.lr']=-0.1: lr must be > 0, got -0.1"
    ]
    data = base()
    data["tune"]["search_space"]["task.config.num_query"] = {"grid": [5, 0]}
    assert errors_of(data) == [
        "tune.search_space['task.config.num_query']=0: "
        "num_support and num_query must be >= 1, got 5, 0"
    ]


def test_int_fields_need_integer_domains() -> None:
    data = base()
    data["tune"]["search_space"]["method.config.meta_batch"] = {"uniform": [1, 8]}
    (msg,) = errors_of(data)
    assert "field method.config.meta_batch is an int" in msg and "randint" in msg
    data["tune"]["search_space"]["method.config.meta_batch"] = {"qrandint": [1, 8, 1]}
    validate_spec(parse_spec(data))


def test_seed_domain_must_be_integer() -> None:
    data = base()
    data["tune"]["search_space"]["seed"] = {"uniform": [0, 1]}
    assert "seeds are integers" in errors_of(data, deep=False)[0]


@pytest.mark.parametrize(
    ("domain", "message"),
    [
        ({"loguniform": [0, 1]}, "loguniform needs low > 0"),
        ({"uniform": [1, 1]}, "needs low < high"),
        ({"uniform": [1]}, "uniform takes [low, high]"),
        ({"randint": [0.5, 3]}, "randint low must be an integer"),
        ({"grid": []}, "non-empty list"),
        ({"gird": [1]}, "unknown key 'gird'; did you mean 'grid'?"),
        ({"grid": [1], "choice": [2]}, "expected one domain"),
        (0.1, "expected one domain"),
    ],
)
def test_bad_domains(domain: Any, message: str) -> None:
    data = base()
    data["tune"]["search_space"]["method.config.lr"] = domain
    (msg,) = errors_of(data, deep=False)
    assert msg.startswith("tune.search_space['method.config.lr']") and message in msg


def test_domain_representatives() -> None:
    assert Domain("randint", (1, 5)).representatives() == [1, 4]  # Tune's high is exclusive
    assert Domain("qrandint", (1, 5, 2)).representatives() == [1, 5]
    assert Domain("loguniform", (1e-3, 1e-1)).representatives() == [1e-3, 1e-1]
    assert Domain("choice", ("a", "b")).representatives() == ["a", "b"]


def test_search_alg_and_scheduler_checked_against_factories() -> None:
    data = base()
    data["tune"]["search_alg"] = {"name": "optuan"}
    data["tune"]["scheduler"] = {"name": "asha", "grace": 5}
    errors = errors_of(data)
    assert (
        "tune.search_alg.name: unknown search algorithm 'optuan'; did you mean 'optuna'?"
        in errors[0]
    )
    assert errors[1].startswith("tune.scheduler: unknown key 'grace'; did you mean 'grace_period'?")
    data = base()
    data["tune"]["search_alg"] = {"name": "random", "max_concurrent": 0}
    data["tune"]["scheduler"] = {"name": "asha", "grace_period": "5"}
    errors = errors_of(data)
    assert errors == [
        "tune.search_alg.max_concurrent: got 0, expected an int >= 1 or null",
        "tune.scheduler.grace_period: got '5' (str), expected int",
    ]


def test_pbt_mutation_paths_checked() -> None:
    data = base()
    data["tune"]["scheduler"] = {
        "name": "pbt",
        "perturbation_interval": 5,
        "hyperparam_mutations": {"method.config.lrr": {"uniform": [0.01, 0.1]}},
    }
    (msg,) = errors_of(data)
    assert "method.config: unknown key 'lrr'; did you mean 'lr'?" in msg
    data["tune"]["scheduler"]["hyperparam_mutations"] = {"method.config.lr": [0.1, 0.2]}
    data["tune"]["scheduler"]["perturbation_interval"] = 2
    (msg,) = errors_of(data)
    assert msg.startswith("train.checkpoint_every: 5 is longer than pbt's perturbation_interval 2")
    data["train"]["checkpoint_every"] = 2
    validate_spec(parse_spec(data))


def test_load_spec_file_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(FULL)
    spec = load_spec(
        f,
        dict(
            [
                parse_override("train.iterations=7"),
                parse_override("tune.search_space.method.config.lr=[0.1, 0.2]"),
            ]
        ),
    )
    assert spec.train.iterations == 7
    assert spec.tune.search_space["method.config.lr"] == Domain("grid", (0.1, 0.2))
    f.write_text("name: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(f)
    with pytest.raises(SpecError, match="cannot read spec"):
        load_spec(tmp_path / "missing.yaml")


def test_set_dotted_creates_sections() -> None:
    d: dict[str, Any] = {}
    set_dotted(d, "workers.num_workers", 2)
    assert d == {"workers": {"num_workers": 2}}
    with pytest.raises(SpecError, match="expected key=value"):
        parse_override("train.iterations")


def test_replace_path() -> None:
    spec = parse_spec(base())
    out = spec.replace_path("method.config.meta_batch", 2).replace_path("seed", 9)
    assert out.method.config == {"lr": 0.05, "meta_batch": 2} and out.seed == 9
    assert spec.method.config == {"lr": 0.05}  # frozen original untouched
    assert isinstance(out, ExperimentSpec)
    with pytest.raises(SpecError):
        spec.replace_path("seed", 1.5)
    assert copy.deepcopy(spec) == spec


REPO_SPECS = sorted(SPECS.glob("*.yaml"))


@pytest.mark.parametrize("path", REPO_SPECS or [None], ids=lambda p: p.name if p else "none")
def test_repo_specs_validate(path: Path | None) -> None:
    """Every spec in tune_specs/ is reviewed like code: it must validate."""
    if path is None:
        pytest.skip("no tune_specs/*.yaml yet")
    validate_spec(load_spec(path))


@pytest.mark.parametrize("path", REPO_SPECS or [None], ids=lambda p: p.name if p else "none")
def test_repo_specs_fit_a_two_core_machine(path: Path | None) -> None:
    """One trial of every spec in tune_specs/ fits an embedded 2-CPU Ray, counted as
    ``metaplat run`` checks it before starting (the trial's whole placement group: driver,
    the method's own actors, pool workers; every searched resource value)."""
    from metaplat.tuning.runner import check_fits

    if path is None:
        pytest.skip("no tune_specs/*.yaml yet")
    spec = load_spec(path)
    check_fits(spec, validate_spec(spec).method_cls, {"CPU": 2.0, "GPU": 0.0})


def trainable_spec(**extra: Any) -> dict[str, Any]:
    return {
        "name": "nas",
        "trainable": "metaplat.tuning.controller_searcher:child_trainable",
        "tune": {
            "metric": "reward",
            "mode": "max",
            "search_alg": {"name": "controller", "space": {"kind": "nas_mlp"}, **extra},
        },
    }


def test_trainable_spec_replaces_task_and_method() -> None:
    spec = parse_spec(trainable_spec())
    resolved = validate_spec(spec)
    assert resolved.trainable.__name__ == "child_trainable" and resolved.method_cls is None
    assert parse_spec(spec.to_dict()) == spec


def test_trainable_spec_errors_name_the_field() -> None:
    typo = errors_of(trainable_spec(batchsize=3))
    assert any("batchsize" in e and "batch_size" in e for e in typo)
    assert any("seed" in e for e in errors_of(trainable_spec(seed=1)))  # the spec's seed is used
    bad = trainable_spec()
    bad["trainable"] = "metaplat.tuning.controller_searcher:no_such_function"
    assert any(e.startswith("trainable: cannot import") for e in errors_of(bad))
    both = {**trainable_spec(), **{k: v for k, v in base().items() if k in ("task", "method")}}
    assert any("not both" in e for e in errors_of(both))
    neither = {k: v for k, v in base().items() if k not in ("task", "method")}
    assert any("task and method required" in e for e in errors_of(neither))
    searched = trainable_spec()
    searched["tune"]["search_space"] = {"method.config.inner_lr": [0.1, 0.2]}
    assert any("can only search 'seed'" in e for e in errors_of(searched))
