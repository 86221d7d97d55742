"""The precision stage: formats per trained model, memory per format, format choice, fine-tuning."""

import math
from pathlib import Path

import pytest

from iotnas.errors import ConfigError, SearchError
from iotnas.search import run_search
from iotnas.precision.grid import GridSpec, evaluate_model_formats
from iotnas.store import Store
from iotnas.study import parse_study


def _name(fmt):
    from iotnas.formats import parse_format

    return parse_format(fmt).name



def test_bisection_finds_the_narrowest_mantissa_with_fewer_evaluations():
    import torch

    torch.manual_seed(0)
    model = torch.nn.Linear(64, 4)
    x = torch.randn(256, 64)
    reference = model(x).argmax(1)

    def agreement(m):  # accuracy stand-in: agreement with the float32 predictions
        with torch.no_grad():
            return float((m(x).argmax(1) == reference).float().mean())

    grid = GridSpec(exp_bits=(3, 5), man_bits=(0, 10), tolerance=0.02)
    result = evaluate_model_formats(lambda: model, agreement, formats=[], grid=grid)
    found = result.accuracy
    assert result.evaluations < 3 * 11  # a blind sweep of the grid
    for e in range(3, 6):
        passing = [m for m in range(0, 11) if f"e{e}m{m}" in found and found[f"e{e}m{m}"] >= 1.0 - 0.02]
        if passing:
            smallest = min(passing)
            if smallest > 0:  # the next narrower mantissa was checked and fails
                assert found[f"e{e}m{smallest - 1}"] < 1.0 - 0.02


def test_each_evaluation_is_reported_once_as_it_is_made():
    import torch

    from iotnas.formats import parse_format

    torch.manual_seed(0)
    model = torch.nn.Linear(16, 4)
    x = torch.randn(64, 16)

    def accuracy(m):
        with torch.no_grad():
            return float((m(x).argmax(1) == 0).float().mean())

    calls, seen = [], []
    result = evaluate_model_formats(
        lambda: model, accuracy, formats=[parse_format("half"), parse_format("e4m3")],
        grid=GridSpec(exp_bits=(3, 4), man_bits=(0, 4), tolerance=0.05), known={_name("half"): 0.5},
        on_result=lambda r: calls.append((r.fmt.name, r.accuracy, r.evaluations)) or seen.append(r.model),
    )
    assert len(calls) == result.evaluations > 2
    assert [n for _, _, n in calls] == list(range(1, result.evaluations + 1))
    assert len({name for name, _, _ in calls}) == len(calls) and _name("half") not in {name for name, _, _ in calls}
    assert all(result.accuracy[name] == acc for name, acc, _ in calls)
    assert all(m is model for m in seen)  # the trained model, for the caller to size the format's bytes


def _stand_in(scale: float = 1.0, *, big: float | None = None):
    """A linear classifier and an accuracy stand-in (agreement with its float32 predictions), real rounding."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Linear(64, 4)
    with torch.no_grad():
        model.weight.mul_(scale)
        model.bias.mul_(scale)
        if big is not None:
            model.weight[0, 0] = big
    x = torch.randn(256, 64)
    with torch.no_grad():
        reference = model(x).argmax(1)
    def agreement(m):
        with torch.no_grad():
            return float((m(x).argmax(1) == reference).float().mean())

    return model, agreement


def test_formats_that_cannot_hold_the_weights_are_skipped_before_any_evaluation():
    from iotnas.formats import FloatFormat
    from iotnas.precision.grid import unfit_reason

    model, agreement = _stand_in(big=100.0)  # one weight beyond e3's largest finite value, 15.5 (e3m4)
    assert "beyond its largest finite value 15.5" in unfit_reason(FloatFormat(3, 4), model.parameters())
    assert unfit_reason(FloatFormat(4, 3), model.parameters()) is None  # e4m3 reaches 240
    seen = []
    result = evaluate_model_formats(lambda: model, lambda m: seen.append(1) or agreement(m), formats=[],
                                    grid=GridSpec(exp_bits=(2, 5), man_bits=(0, 6), tolerance=0.02),
                                    on_result=lambda r: seen.append(r.fmt.name))
    evaluated = [name for name in seen if isinstance(name, str)]
    assert not any(name.startswith(("e2m", "e3m")) for name in evaluated)
    assert set(result.skipped) >= {"e2m6", "e3m6"} and "beyond its largest finite value" in result.skipped["e3m6"]
    tiny, _ = _stand_in(scale=1e-4)  # below half of e4m3's smallest subnormal, 2^-9
    why = unfit_reason(FloatFormat(4, 3), tiny.parameters())
    assert why is not None and "100% of the nonzero stored values" in why and "would become zero" in why
    assert unfit_reason(FloatFormat(5, 10), tiny.parameters()) is None


def test_a_collapsed_row_ends_the_grid_and_says_why():
    model, agreement = _stand_in()
    names = []
    # e4m6 already scored at chance (a stored result, as in a resumed stage): narrower exponents are not tried
    result = evaluate_model_formats(lambda: model, agreement, formats=[], known={"e4m6": 0.25},
                                    grid=GridSpec(exp_bits=(2, 5), man_bits=(0, 6), tolerance=0.02),
                                    on_result=lambda r: names.append(r.fmt.name), num_classes=4)
    assert names and all(name == "float32" or name.startswith("e5m") for name in names)
    assert result.skipped["e3m6"] == result.skipped["e2m6"]
    assert "e4m6 collapsed to 25.0%" in result.skipped["e3m6"]
    # without the class count, a row keeping under half of float32's accuracy has collapsed too
    again = evaluate_model_formats(lambda: model, agreement, formats=[], known={"e4m6": 0.45},
                                   grid=GridSpec(exp_bits=(3, 4), man_bits=(0, 6), tolerance=0.02))
    assert "e4m6 collapsed to 45.0%" in again.skipped["e3m6"]


def test_formats_are_scored_on_a_fixed_draw_of_test_images():
    from iotnas.data import load_dataset
    from iotnas.precision.runner import scoring_subset

    digits = load_dataset("digits")
    assert scoring_subset(digits, images=None, seed=0) is digits
    assert scoring_subset(digits, images=10**6, seed=0) is digits
    one, two = scoring_subset(digits, images=100, seed=0), scoring_subset(digits, images=100, seed=0)
    assert len(one.test_labels) == 100 and one.test_images.equal(two.test_images)
    assert one.train_images is digits.train_images  # training data untouched
    assert len(set(one.test_labels.tolist())) == digits.num_classes  # a draw, not the first few classes
    assert not scoring_subset(digits, images=100, seed=1).test_labels.equal(one.test_labels)


STUDY = {
    "name": "prec", "seed": 0,
    "data": {"dataset": "digits", "limit": 256},
    "device": {"kind": "local", "min_s": 0.05},
    "constraints": {"max_weight_bytes": 8192},
    "formats": ["float32", "half", "e4m3", "int8"],
    "space": {"laws": ["probenet/s2"], "pool_per_law": 4},
    "strategy": {"name": "laws"},
    "budget": {"trainings": 1, "epochs": [3]},
    "training": {"batch_size": 64},
    "precision": {"grid": True, "exp_bits": [3, 4], "man_bits": [0, 4], "tolerance": 0.05, "finetune_epochs": 1,
                  "test_images": 200},
}


@pytest.fixture(scope="module")
def prec_store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prec")
    study = parse_study({**STUDY, "store": str(folder / "prec.db")})
    summary = run_search(study)
    return folder / "prec.db", summary


def test_stage_stores_every_format_with_its_exact_bytes(prec_store):
    from iotnas.cost import cost

    path, summary = prec_store
    with Store.open(str(path), create=False) as store:
        results = store.precision_results()
        (training,) = store.trainings(status="done")
    plain = {r.format_name: r for r in results if not r.finetuned}
    assert {_name("float32"), _name("half"), _name("e4m3"), _name("int8")} <= set(plain)
    assert any(name.startswith("e3m") for name in plain) and any(name.startswith("e4m") for name in plain)
    n_values = cost(training.arch_key, num_classes=10, in_channels=1).n_values
    for r in plain.values():
        if not r.format_name.startswith("int"):
            assert r.weight_bytes == math.ceil(n_values * r.bits / 8)
    assert plain[_name("int8")].weight_bytes > n_values  # per-channel scales are counted
    assert summary.best[0].weight_bytes <= 8192


def test_formats_are_scored_on_test_images_and_the_winner_on_all(prec_store):
    from iotnas.results.classes import study_classes
    from iotnas.results.points import study_points
    from iotnas.results.winners import WinnerRule, winners

    path, _ = prec_store
    with Store.open(str(path), create=False) as store:
        results = store.precision_results()
        (training,) = store.trainings(status="done")
        assert study_classes(store) == 10  # from the checkpoint: the study does not say
        plain_winner = winners(study_points(store, finetuned=False), rule=WinnerRule.of(store.study()))[0]
    plain = {r.format_name: r for r in results if not r.finetuned}
    assert all(r.test_images == 200 for r in plain.values())  # every format ranked on the same 200 images
    rescored = [r for r in plain.values() if r.full_accuracy is not None]
    assert [r.format_name for r in rescored] == [plain_winner.format_name]  # the winner, on every test image too
    assert plain_winner.reported_accuracy == rescored[0].full_accuracy
    if plain_winner.format_name == _name("float32"):
        assert rescored[0].full_accuracy == pytest.approx(training.accuracy)  # the training scored all 450 too
    assert all(r.test_images is None for r in results if r.finetuned)


def test_finetuning_is_stored_beside_never_over(prec_store):
    path, _ = prec_store
    with Store.open(str(path), create=False) as store:
        results = store.precision_results()
        (training,) = store.trainings(status="done")
    tuned = [r for r in results if r.finetuned]
    assert {r.format_name for r in tuned} == {_name("half"), _name("e4m3"), _name("int8")}
    for r in tuned:
        assert r.checkpoint != training.checkpoint
        plain = next(p for p in results if p.format_name == r.format_name and not p.finetuned)
        assert plain.checkpoint == training.checkpoint


def test_no_fine_tuning_in_a_format_the_model_does_not_fit(tmp_path):
    """At 1,200 bytes no model of the pool fits in half (647 values and more): only int8 is fine-tuned."""
    study = parse_study({**STUDY, "store": str(tmp_path / "x.db"), "constraints": {"max_weight_bytes": 1200},
                         "formats": ["float32", "half", "int8"],
                         "precision": {"grid": False, "finetune_epochs": 1, "finetune_top": 1}})
    run_search(study)
    with Store.open(str(tmp_path / "x.db"), create=False) as store:
        results = store.precision_results()
    plain = {r.format_name: r.weight_bytes for r in results if not r.finetuned}
    assert plain[_name("half")] > 1200 >= plain[_name("int8")]
    assert {r.format_name for r in results if r.finetuned} == {_name("int8")}


def test_a_format_the_study_cannot_store_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="formats"):  # when the study is loaded, before any work
        parse_study({**STUDY, "store": str(tmp_path / "x.db"), "formats": ["float32", "e0m3"]})


def test_budget_below_every_model_in_every_format(tmp_path):
    study = parse_study({**STUDY, "store": str(tmp_path / "x.db"), "constraints": {"max_weight_bytes": 16}})
    with pytest.raises(SearchError, match="at 8 bits"):
        run_search(study)


@pytest.mark.parametrize("damage", ["deleted", "garbage"])
def test_a_lost_checkpoint_is_trained_again_and_the_study_goes_on(tmp_path, damage):
    """Every result is stored: a study whose checkpoint is gone re-runs; what needs the weights retrains them."""
    quick = {**STUDY["precision"], "finetune_epochs": 0}
    study = parse_study({**STUDY, "store": str(tmp_path / "p.db"), "precision": quick})
    run_search(study)
    with Store.open(str(tmp_path / "p.db"), create=False) as store:
        (training,) = store.trainings(status="done")
        before = len(store.precision_results())
    path = Path(training.checkpoint)
    if damage == "deleted":
        path.unlink()
    else:
        path.write_bytes(b"not a checkpoint")
    assert run_search(study).best  # everything it needs is stored: the checkpoint is not read
    # a new format needs the weights: the model is trained again, then evaluated
    wider = parse_study({**STUDY, "store": str(tmp_path / "p.db"), "precision": quick,
                         "formats": [*STUDY["formats"], "bfloat16"], "name": "prec"})
    with Store.open(str(tmp_path / "p.db"), create=False) as store:  # the same study, one format more
        store.set_meta("study_fingerprint", wider.fingerprint)
    summary = run_search(wider)
    with Store.open(str(tmp_path / "p.db"), create=False) as store:
        (again,) = store.trainings(status="done")
        formats = {r.format_name for r in store.precision_results()}
    assert Path(again.checkpoint).is_file() and again.accuracy is not None
    assert "bfloat16" in formats and len(formats) > 0 and summary.best
    assert before > 0


def test_an_interrupted_grid_keeps_every_format_it_evaluated(tmp_path, monkeypatch):
    """Each format's result is stored as it is made: a stage stopped mid-model resumes where it stopped."""
    from iotnas.precision.runner import PrecisionRunner

    study = parse_study({**STUDY, "store": str(tmp_path / "p.db"), "precision": {**STUDY["precision"],
                                                                                "finetune_epochs": 0}})
    real_score, scored = PrecisionRunner._score, []

    def stopped_after_four(self, model, *, whole=False):
        if len(scored) == 4:
            raise KeyboardInterrupt
        scored.append(1)
        return real_score(self, model, whole=whole)

    monkeypatch.setattr(PrecisionRunner, "_score", stopped_after_four)
    with pytest.raises(KeyboardInterrupt):
        run_search(study)
    with Store.open(str(tmp_path / "p.db"), create=False) as store:
        kept = {r.format_name for r in store.precision_results()}
        held = [j.name for j in store.jobs() if j.status == "running"]
    assert len(kept) == 4  # the four made before the stop
    assert not held  # the stopped model's job was given back: a restart takes it at once
    monkeypatch.setattr(PrecisionRunner, "_score", real_score)
    counted = []
    monkeypatch.setattr(PrecisionRunner, "_score", lambda self, m, *, whole=False: (whole or counted.append(1))
                        or real_score(self, m, whole=whole))
    run_search(study)
    with Store.open(str(tmp_path / "p.db"), create=False) as store:
        plain = {r.format_name for r in store.precision_results() if not r.finetuned}
    assert kept < plain and len(counted) == len(plain) - len(kept)  # none of the four evaluated again


def test_a_worker_never_evaluates_a_model_another_worker_is_training_again(tmp_path, monkeypatch):
    """Between reading the finished models and scoring one, another worker may have found its
    checkpoint lost and begun training it again: this worker neither scores that worker's partial
    weights nor undoes its claim, and takes the training over only once that worker is gone."""
    import shutil
    import socket
    import subprocess
    from datetime import datetime, timedelta

    from iotnas.precision.runner import PrecisionRunner
    from iotnas.search.workers import Coordinator

    quick = {**STUDY["precision"], "finetune_epochs": 0}
    study = parse_study({**STUDY, "store": str(tmp_path / "p.db"), "precision": quick})
    run_search(study)
    wider = parse_study({**STUDY, "store": str(tmp_path / "p.db"), "precision": quick,
                         "formats": [*STUDY["formats"], "bfloat16"], "name": "prec"})
    with Store.open(str(tmp_path / "p.db"), create=False) as store:
        store.set_meta("study_fingerprint", wider.fingerprint)
        (training,) = store.trainings(status="done")
    checkpoint = Path(training.checkpoint)
    partial = tmp_path / "first-epoch.pt"  # stands in for the other worker's first epoch
    shutil.copy(checkpoint, partial)
    gone = subprocess.Popen(["true"])
    gone.wait()
    other = f"{socket.gethostname()}:{gone.pid}:other"  # a worker whose process has ended since
    real_claim_job, real_evaluate, acted, seen = Coordinator.claim_job, PrecisionRunner.evaluate, [], []

    def the_other_worker_acts_first(self, name):
        if not acted:  # the checkpoint was lost; the other worker marked the training and began it again
            acted.append(name)
            checkpoint.unlink()
            with Store.open(str(tmp_path / "p.db"), create=False) as store:
                assert store.fail_training(training.arch_key, training.epochs)
                assert store.claim_training(training.arch_key, training.epochs, worker=other,
                                            stale_before=datetime.now() - timedelta(days=1))
                assert not store.fail_training(training.arch_key, training.epochs)  # a claim is not undone
            shutil.copy(partial, checkpoint)
        return real_claim_job(self, name)

    def evaluate(self, arch, checkpoint_path, **kwargs):
        with Store.open(str(tmp_path / "p.db"), create=False) as store:
            seen.append(store.training(training.arch_key, training.epochs))
        return real_evaluate(self, arch, checkpoint_path, **kwargs)

    monkeypatch.setattr(Coordinator, "claim_job", the_other_worker_acts_first)
    monkeypatch.setattr(PrecisionRunner, "evaluate", evaluate)
    summary = run_search(wider)
    with Store.open(str(tmp_path / "p.db"), create=False) as store:
        (again,) = store.trainings(status="done")
        formats = {r.format_name for r in store.precision_results()}
    assert acted and summary.best and seen
    assert all(t.status == "done" and t.worker != other for t in seen)  # never the other worker's weights
    assert again.worker != other and checkpoint.is_file()  # taken over once that worker was gone
    assert "bfloat16" in formats
