"""The registry every name table is built on, and strategy settings checked through it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from iotnas.errors import ConfigError, FormatError
from iotnas.registry import Registry
from iotnas.strategies import STRATEGY_NAMES, check_strategy_settings


def test_names_aliases_and_unknown_names():
    registry: Registry[int] = Registry("number", error=FormatError)
    registry.register("one", 1, aliases=("uno",))

    @registry.register("two")
    def two() -> int:  # pragma: no cover - never called
        return 2

    assert registry.names() == ("one", "two") and registry.aliases() == ("uno",)
    assert registry.get("uno") == 1 and registry.get("two") is two and registry.canonical("uno") == "one"
    assert "uno" in registry and "three" not in registry and ["one"] not in registry
    with pytest.raises(FormatError, match="unknown number 'three'; known: one, two"):
        registry.get("three")


@pytest.mark.parametrize("name", ["one", "uno"])
def test_a_taken_name_or_alias_is_refused_naming_both(name):
    registry: Registry[object] = Registry("thing")
    registry.register("one", "first", aliases=("uno",))
    with pytest.raises(ValueError, match=rf"thing name '{name}' is already registered to 'one' \('first'\)"):
        registry.register(name, "second")
    with pytest.raises(ValueError, match="already registered"):

        @registry.register("fresh", aliases=(name,))
        class Late:  # pragma: no cover - refused before it is built
            pass

    assert registry.names() == ("one",) and registry.get("one") == "first"


def test_a_lazy_entry_is_listed_first_and_imported_on_first_use():
    registry: Registry[type] = Registry("strategy", name_attr="name")
    registry.register_lazy("later", "json")
    assert registry.names() == ("later",)
    with pytest.raises(ValueError, match="already registered"):
        registry.register_lazy("later", "json")
    with pytest.raises(ImportError, match="json does not register the strategy 'later'"):
        registry.get("later")

    class Later:
        pass

    registry.register("later", Later)  # what the listed module does when imported
    assert registry.get("later") is Later and Later.name == "later"


def test_checking_strategy_settings_imports_neither_optuna_nor_scikit_learn():
    code = (
        "import sys\n"
        "from iotnas.strategies import STRATEGY_NAMES, check_strategy_settings\n"
        "assert check_strategy_settings('optuna', {'sampler': 'nsga2'})['startup_trials'] == 5\n"
        "assert check_strategy_settings('surrogate', {'kappa': 2})['kappa'] == 2.0\n"
        "assert 'optuna' in STRATEGY_NAMES\n"
        "print(sorted({'optuna', 'sklearn', 'torch'} & sys.modules.keys()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_every_strategy_refuses_unknown_settings_naming_the_key(name):
    defaults = check_strategy_settings(name, {})
    assert check_strategy_settings(name, defaults) == defaults
    with pytest.raises(ConfigError, match=rf"^strategy\.settings\.no_such_key: unknown setting for strategy '{name}'"):
        check_strategy_settings(name, {**defaults, "no_such_key": 1})


@pytest.mark.parametrize(
    "name, settings, message",
    [
        ("evolution", {"population": 2.5}, r"strategy\.settings\.population: expected int"),
        ("surrogate", {"initial": True}, r"strategy\.settings\.initial: expected int"),
        ("optuna", {"sampler": "cmaes"}, r"strategy\.settings\.sampler: 'cmaes' is not one of tpe, nsga2"),
        ("bayes", {}, r"strategy\.name: 'bayes' is not one of laws, random, evolution, surrogate, optuna"),
    ],
)
def test_malformed_strategy_settings_are_refused(name, settings, message):
    with pytest.raises(ConfigError, match=message):
        check_strategy_settings(name, settings)
