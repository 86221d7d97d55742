"""The final stage: the chosen models trained on to [final] epochs, precision on their final weights,
a kill -9 in the middle resumed without retraining what is done; chance-level models never promoted."""

import time
from pathlib import Path

import pytest
from search_process import kill_when, rows, start_search

from iotnas.errors import ConfigError
from iotnas.results.points import study_points
from iotnas.search import run_search
from iotnas.search.final import final_models
from iotnas.store import Store
from iotnas.study import parse_study

STUDY = {
    "name": "final", "seed": 3,
    "data": {"dataset": "digits", "limit": 256},
    "device": {"kind": "local", "min_s": 0.05},
    "constraints": {"max_weight_bytes": 8192},
    "formats": ["float32", "half", "int8"],
    "space": {"laws": ["probenet/s2"], "pool_per_law": 6},
    "strategy": {"name": "random"},
    "budget": {"trainings": 3, "epochs": [2]},
    "training": {"batch_size": 64},
    "final": {"epochs": 6, "top": 2},
}


@pytest.fixture(scope="module")
def final_store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("final")
    study = parse_study({**STUDY, "store": str(folder / "final.db")})
    summary = run_search(study)
    return study, folder / "final.db", summary


def test_the_chosen_models_are_trained_on_and_their_formats_scored_on_the_final_weights(final_store):
    study, path, summary = final_store
    with Store.open(str(path), create=False) as store:
        chosen = final_models(store, study, num_classes=10)
        trainings = store.trainings(status="done")
        results = store.precision_results()
        points = study_points(store)
    assert len(chosen) == 2
    at = {(t.arch_key, t.epochs) for t in trainings}
    assert {(k, 6.0) for k in chosen} <= at
    assert sum(e == 6.0 for _, e in at) == 2  # only the chosen go on
    finals = {(r.arch_key, r.format_name) for r in results if r.epochs == 6.0}
    assert {k for k, _ in finals} == set(chosen) and {f for _, f in finals} >= {"float32", "float16", "int8"}
    final_training = {t.arch_key: t for t in trainings if t.epochs == 6.0}
    for key in chosen:  # the float32 figure of the final weights is the final training's
        f32 = next(r for r in results if r.arch_key == key and r.epochs == 6.0 and r.format_name == "float32")
        assert f32.accuracy == pytest.approx(final_training[key].accuracy)
    assert summary.best[0].key in chosen and summary.best[0].epochs == 6.0
    assert all(p.epochs == 6.0 for p in points if p.key in chosen)


def test_the_choice_does_not_change_once_the_final_results_exist(final_store):
    study, path, _ = final_store
    with Store.open(str(path), create=False) as store:
        before = final_models(store, study, num_classes=10)
    rerun = run_search(study)  # everything stored: nothing trained again
    with Store.open(str(path), create=False) as store:
        assert final_models(store, study, num_classes=10) == before
        assert len(store.trainings()) == 3 + 2
    assert rerun.best[0].key in before


def test_by_default_the_best_of_each_format_family_goes_on(final_store):
    _, path, _ = final_store
    default = parse_study({**STUDY, "store": str(path), "final": {"epochs": 6}})
    with Store.open(str(path), create=False) as store:
        chosen = final_models(store, default, num_classes=10)
        rung = [p for p in study_points(store, finetuned=False, epochs=2.0) if p.from_precision and p.feasible]
    best = {}
    for p in rung:
        if p.format_name not in best or p.accuracy > best[p.format_name].accuracy:
            best[p.format_name] = p
    assert set(chosen) == {p.key for p in best.values()}


@pytest.mark.parametrize("final, match", [({"epochs": 2}, "above the last budget.epochs"),
                                          ({"epochs": 6, "top": -1}, "final.top"),
                                          ({"epochs": 6, "rounds": 2}, "final.rounds")])
def test_bad_final_settings_are_refused_on_load(final, match):
    with pytest.raises(ConfigError, match=match):
        parse_study({**STUDY, "final": final})


def test_an_unchanged_final_table_leaves_the_fingerprint_alone():
    plain = {k: v for k, v in STUDY.items() if k != "final"}
    assert parse_study(plain).fingerprint == parse_study({**plain, "final": {"epochs": 0}}).fingerprint
    assert parse_study(plain).fingerprint != parse_study(STUDY).fingerprint


def test_chance_level_models_are_never_promoted(tmp_path):
    """A learning rate too small to learn anything leaves every model at chance: none goes on."""
    study = parse_study({**STUDY, "store": str(tmp_path / "c.db"), "formats": ["float32"], "final": {},
                         "budget": {"trainings": 2, "epochs": [1, 2], "eta": 2},
                         "training": {"batch_size": 64, "lr": 1e-9}})
    events = []
    summary = run_search(study, callbacks=[events.append])
    with Store.open(str(tmp_path / "c.db"), create=False) as store:
        epochs = {t.epochs for t in store.trainings(status="done")}
    assert epochs == {1.0}
    assert any(e.stage == "promote" and "chance level" in e.message for e in events)
    assert any("chance level" in e.message for e in events if e.stage == "train")
    assert summary.trainings == 2


# ------------------------------------------------------------------ kill -9 during the final stage

def _write(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "final.toml").write_text(
        'name = "final"\nstore = "final.db"\nseed = 3\nformats = ["float32", "half"]\n'
        '[data]\ndataset = "digits"\nlimit = 256\n[device]\nkind = "local"\nmin_s = 0.05\n'
        '[constraints]\nmax_weight_bytes = 8192\n[space]\nlaws = ["probenet/s2"]\npool_per_law = 6\n'
        '[strategy]\nname = "random"\n[budget]\ntrainings = 2\nepochs = [2]\n'
        '[training]\nbatch_size = 64\n[final]\nepochs = 40\ntop = 1\n')
    return folder / "final.toml"


def _done(db: Path) -> list[tuple]:
    return rows(db, "SELECT arch_key, epochs, accuracy FROM iotnas_trainings WHERE status = 'done' "
                     "ORDER BY arch_key, epochs")


def test_a_killed_final_stage_resumes_without_retraining_what_is_done(tmp_path):
    reference = _write(tmp_path / "reference")
    proc = start_search(reference, "--workers", "1")
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    expected = _done(reference.parent / "final.db")
    assert [e for _, e, _ in expected].count(40.0) == 1

    study = _write(tmp_path / "killed")
    db = study.parent / "final.db"
    proc = start_search(study, "--workers", "1")

    def final_running() -> bool:
        found = rows(db, "SELECT count(*) FROM iotnas_trainings WHERE status='running' AND epochs=40")
        if not found or not found[0][0]:
            return False
        time.sleep(0.3)  # let it write a checkpoint or two past the rung
        return True

    killed = kill_when(proc, final_running)
    assert killed, "the search finished before its final stage could be interrupted"
    rung_done = rows(db, "SELECT arch_key, seconds FROM iotnas_trainings WHERE status='done' AND epochs=2")

    proc = start_search(study, "--workers", "1")
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    assert _done(db) == expected  # the same models, the same accuracies: resumed exactly
    assert rows(db, "SELECT arch_key, seconds FROM iotnas_trainings WHERE epochs=2") == rung_done  # not retrained
    assert rows(db, "SELECT count(*) FROM iotnas_precision WHERE epochs=40")[0][0] >= 2


# ------------------------------------------------------------------ --workers auto

def test_by_default_a_search_runs_one_single_threaded_training_per_core(tmp_path, cli, monkeypatch):
    from iotnas.executors import LocalExecutor, cores, parse_workers
    from iotnas.train import load_checkpoint

    assert parse_workers("auto", LocalExecutor()) == cores()
    assert parse_workers("auto", LocalExecutor(), trains=False) == 1  # tabular: lookups, nothing to share out
    monkeypatch.delenv("IOTNAS_WORKERS")  # the command's own default: auto
    study = _write(tmp_path / "auto")
    text = study.read_text().replace("[final]\nepochs = 40\ntop = 1\n", "")
    study.write_text(text)
    code, _, err = cli("search", str(study))
    assert code == 0, err
    checkpoints = list((study.parent / "final-runs").glob("*/checkpoint.pt"))
    assert len(checkpoints) == 2
    expected = 1  # each worker's share of the cores: one core each
    assert {load_checkpoint(p).config["threads"] for p in checkpoints} == {expected}


@pytest.mark.parametrize("given", ["zero", "0", "-2", "1.5"])
def test_a_bad_worker_count_is_one_line_and_exit_2(tmp_path, cli, given):
    study = _write(tmp_path / "bad")
    code, _, err = cli("search", str(study), "--workers", given)
    assert code == 2 and "--workers" in err and "Traceback" not in err
    assert not (study.parent / "final.db").exists()


def test_per_format_promotion_keeps_the_best_of_each_storage_tier(tmp_path):
    """With promote = "per_format", a float32-sized model goes on beside the int8-sized ones that beat it."""
    from iotnas.results.chance import is_chance_level
    from iotnas.search.pool import storage_tier

    study = parse_study({**STUDY, "store": str(tmp_path / "t.db"), "formats": ["float32", "int8"], "final": {},
                         "data": {"dataset": "digits"},
                         "constraints": {"max_weight_bytes": 32768},  # float32 up to 8,192 values, int8 32,768
                         "space": {"laws": ["probenet/s1"], "pool_per_law": 12},  # 5,200 to 29,460 values
                         "budget": {"trainings": 6, "epochs": [2, 3], "eta": 6, "promote": "per_format"}})
    run_search(study)
    with Store.open(str(tmp_path / "t.db"), create=False) as store:
        values = {c.key: c.n_values for c in store.candidates()}
        done = store.trainings(status="done")
    rung = sorted(((t.accuracy, t.arch_key) for t in done if t.epochs == 2.0), key=lambda r: (-r[0], r[1]))
    best_of_tier: dict[int, str] = {}
    for acc, key in rung:
        if not is_chance_level(acc, 10):
            best_of_tier.setdefault(storage_tier(values[key], study), key)
    assert set(best_of_tier) == {32, 8}, rung  # both tiers learned something, so the rule is exercised
    assert {t.arch_key for t in done if t.epochs == 3.0} == set(best_of_tier.values())


def test_promote_is_checked_and_its_default_leaves_the_fingerprint_alone():
    with pytest.raises(ConfigError, match="budget.promote"):
        parse_study({**STUDY, "budget": {"trainings": 3, "epochs": [2], "promote": "per_tier"}})
    default = parse_study({**STUDY, "budget": {**STUDY["budget"], "promote": "overall"}})
    assert default.fingerprint == parse_study(STUDY).fingerprint


def test_a_worker_scores_the_finished_final_models_while_another_trains(tmp_path, monkeypatch):
    """With no final training left to take, a worker scores the formats of the finished ones instead
    of waiting; fine-tuning still waits for every final model."""
    import os
    import socket
    from datetime import datetime, timedelta

    from iotnas.search.workers import Coordinator

    study = parse_study({**STUDY, "store": str(tmp_path / "f.db"), "workers": {"stale_after_s": 600}})
    other = f"{socket.gethostname()}:{os.getpid()}:other"  # this process: alive, never taken over
    real_claim, real_wait, held, events, waits = Coordinator.claim, Coordinator.wait, [], [], []

    def claim(self, key, epochs):
        if epochs == 6.0 and not held:  # another worker takes the first final training
            held.append(key)
            assert self.store.claim_training(key, epochs, worker=other,
                                             stale_before=datetime.now() - timedelta(days=1))
            return False
        return real_claim(self, key, epochs)

    def wait(self):
        waits.append(1)
        scored = {r.arch_key for r in self.store.precision_results() if r.epochs == 6.0}
        if held and (scored or len(waits) > 5):  # the other worker stops: its training is free again
            self.store.release_training(held[0], 6.0, worker=other)
        real_wait(self)

    monkeypatch.setattr(Coordinator, "claim", claim)
    monkeypatch.setattr(Coordinator, "wait", wait)
    run_search(study, callbacks=[events.append])
    said = [e.message for e in events]
    final = next(i for i, m in enumerate(said) if m.startswith("training 2 model(s) on to 6 epochs"))
    first = said.index(f"training {held[0]} to 6 epochs")  # by this worker, once the other had stopped
    early = [m for m in said[final:first] if m.startswith("number formats of ") and held[0] not in m]
    assert early  # the finished final model was scored while the other worker held the first
    with Store.open(str(tmp_path / "f.db"), create=False) as store:
        finals = {r.arch_key for r in store.precision_results() if r.epochs == 6.0}
        assert len(finals) == 2 and held[0] in finals
        assert {t.status for t in store.trainings()} == {"done"}
