import pytest

from iotnas.errors import ConfigError
from iotnas.study import load_study, parse_study


def test_defaults_and_fingerprint_stable():
    a = parse_study({"name": "x"})
    b = parse_study({"name": "x"})
    assert a.mode == "train" and a.data.dataset == "digits" and a.device.kind == "local"
    assert a.fingerprint == b.fingerprint
    c = parse_study({"name": "x", "constraints": {"max_weight_bytes": 100}})
    assert c.fingerprint != a.fingerprint


def test_store_path_does_not_change_fingerprint():
    assert parse_study({"name": "x", "store": "a.db"}).fingerprint == parse_study({"name": "x", "store": "b.db"}).fingerprint


@pytest.mark.parametrize(
    "raw, needle",
    [
        ({"nmae": "typo"}, "nmae"),
        ({"constraints": {"max_weight_byte": 3}}, "constraints.max_weight_byte"),
        ({"constraints": {"max_weight_bytes": -1}}, "constraints.max_weight_bytes"),
        ({"constraints": {"max_latency_ms": "fast"}}, "constraints.max_latency_ms"),
        ({"budget": {"epochs": [3, 1]}}, "budget.epochs"),
        ({"budget": {"trainings": 0}}, "budget.trainings"),
        ({"strategy": {"name": "magic"}}, "strategy.name"),
        ({"device": {"kind": "agent"}}, "device.url"),
        ({"device": {"kind": "predictor"}}, "device.predictor"),
        ({"data": "digits"}, "data"),
        ({"formats": []}, "formats"),
        ({"mode": "tabular", "device": {"kind": "local"}}, "device.kind"),
    ],
)
def test_bad_keys_are_named(raw, needle):
    with pytest.raises(ConfigError) as info:
        parse_study(raw)
    assert needle in str(info.value)


def test_load_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_study(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_study(bad)


def test_paths_resolve_against_the_study_file(tmp_path):
    f = tmp_path / "sub" / "s.toml"
    f.parent.mkdir()
    f.write_text('name = "s"\nstore = "s.db"\n')
    study = load_study(f)
    assert study.resolve(study.store) == tmp_path / "sub" / "s.db"
