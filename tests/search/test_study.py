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
        # non-finite numbers and sizes past their bounds are refused where they enter
        ({"budget": {"epochs": [float("nan")]}}, "budget.epochs"),
        ({"budget": {"epochs": [float("inf")]}}, "budget.epochs"),
        ({"seed": 2**64}, "seed"),
        ({"constraints": {"max_weight_bytes": 10**23}}, "constraints.max_weight_bytes"),
        ({"constraints": {"max_latency_ms": float("inf")}}, "constraints.max_latency_ms"),
        ({"space": {"pool_per_law": 10**9}}, "space.pool_per_law"),
        ({"budget": {"candidates": 10**9}}, "budget.candidates"),
        ({"device": {"threads": 1_000_000}}, "device.threads"),
        ({"device": {"threads": 2.5}}, "device.threads"),
        ({"workers": {"poll_s": float("nan")}}, "workers.poll_s"),
        # [training], [precision] and [strategy.settings] are checked on load too, types included
        ({"training": {"lr": "0.1"}}, "lr"),
        ({"training": {"threads": 1.5}}, "threads"),
        ({"training": {"batch_size": 64.5}}, "batch_size"),
        ({"training": {"momentum": {"a": 1}}}, "momentum"),
        ({"training": {"channels_last": "no"}}, "channels_last"),
        ({"training": {"tta": "yes"}}, "tta"),
        ({"training": {"flip": 3}}, "flip"),
        ({"training": {"warmup": 1}}, "warmup"),
        ({"training": {"distill_weight": 0.5}}, "training.distill_weight"),  # a search has no teacher
        ({"strategy": {"settings": {"kapa": 1.0}}}, "strategy.settings.kapa"),
        ({"precision": {"finetune_formats": ["bogus"]}}, "precision.finetune_formats"),
        ({"precision": {"tolerance": 2.0}}, "precision.tolerance"),
        ({"formats": ["e0m3"]}, "formats"),
        ({"data": {"limit": 1}}, "data.limit"),
        ({"data": {"limit": 100}}, "data.limit"),  # fewer than one batch of 128
        ({"name": "a/b"}, "name"),
        ({"data": {"dataset": "cifar\x00"}}, "data.dataset"),
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


def test_nothing_is_created_before_the_study_is_valid(tmp_path, cli):
    study = tmp_path / "typo.toml"
    study.write_text('name = "typo"\n[strategy]\nname = "surrogate"\n[strategy.settings]\nkapa = 2.0\n')
    code, _, err = cli("search", str(study))
    assert code == 2 and "strategy.settings.kapa" in err
    assert list(tmp_path.iterdir()) == [study]  # no store, no run folder


def test_every_stored_and_example_study_reads_back_as_itself():
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.toml")):
        study = load_study(path)
        assert parse_study(study.to_dict(), base_dir=study.base_dir, default_name="other") == study


def _random_value(rng, depth=0):
    choices = [
        lambda: None, lambda: rng.choice([True, False]),
        lambda: rng.choice([0, 1, -1, 2, 7, 64, 2**31, 2**63, 10**30, -(10**30)]),
        lambda: rng.choice([0.0, -0.0, 0.5, 1e-300, 1e308, float("nan"), float("inf"), -float("inf")]),
        lambda: rng.choice(["", "x", "all", "densenet/s2", "float32", "int8", "\x00", "é" * 3, "a" * 10_000]),
    ]
    if depth < 2:
        choices += [lambda: [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))],
                    lambda: {rng.choice(["a", "lr", "name", "kind"]): _random_value(rng, depth + 1)}]
    return rng.choice(choices)()


def test_fuzzed_study_files_load_or_say_what_is_wrong():
    """Random types and values for every key of a full study: a Study or one ConfigError, nothing else."""
    import random

    full = parse_study({
        "name": "fuzz", "released": "r", "formats": ["float32", "int8"],
        "data": {"dataset": "digits", "layout": "idx", "num_classes": 10, "limit": 100},
        "device": {"kind": "agent", "url": "http://127.0.0.1:1"},
        "constraints": {"max_weight_bytes": 1, "max_latency_ms": 1.0, "max_activation_bytes": 1},
        "training": {"lr": 0.1, "batch_size": 64, "channels_last": True},
        "strategy": {"name": "evolution", "settings": {"population": 8}},
    }).to_dict()
    keys = [(table, key) for table, value in full.items() if isinstance(value, dict) for key in value]
    keys += [(None, key) for key, value in full.items() if not isinstance(value, dict)]
    rng = random.Random(0)
    outcomes = {"study": 0, "refused": 0}
    for _ in range(400):
        raw = {t: dict(v) if isinstance(v, dict) else v for t, v in full.items()}
        for table, key in rng.sample(keys, rng.randrange(1, 4)):
            value = _random_value(rng)
            target = raw if table is None else raw[table]
            if value is None:
                target.pop(key, None)
            else:
                target[key] = value
        try:
            parse_study(raw)
            outcomes["study"] += 1
        except ConfigError as exc:
            assert str(exc) and "\n" not in str(exc)
            outcomes["refused"] += 1
    assert outcomes["study"] > 0 and outcomes["refused"] > 200
