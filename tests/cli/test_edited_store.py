"""A store edited by hand (or by another program) gives one clear line, never a traceback."""

from __future__ import annotations

import sqlite3

import pytest

MODEL = "mobilenetv2/s6/3"  # the model of the one_model_store fixture

EDITS = {
    "study-not-json": ("UPDATE iotnas_study_meta SET value = '{not json' WHERE key = 'study'",
                       "the recorded study cannot be read"),
    "study-not-a-table": ("UPDATE iotnas_study_meta SET value = '[1, 2]' WHERE key = 'study'",
                          "the recorded study cannot be read"),
    "accuracy-text": ("UPDATE iotnas_trainings SET accuracy = 'high'",
                      f"iotnas_trainings.accuracy of {MODEL} is 'high', not a number"),
    "latency-text": ("UPDATE iotnas_latencies SET median_ms = 'fast'",
                     f"iotnas_latencies.median_ms of {MODEL} is 'fast', not a number"),
    "latency-detail": ("UPDATE iotnas_latencies SET detail_json = '{'", "detail_json of mobilenetv2/s6/3 is not JSON"),
    "macs-text": ("UPDATE iotnas_candidates SET macs = 'many'", "iotnas_candidates.macs"),
    "date-text": ("UPDATE iotnas_trainings SET started_at = 'yesterday'", "'yesterday'"),
}


@pytest.mark.parametrize("edit", EDITS, ids=list(EDITS))
def test_an_edited_value_is_one_clear_line(one_model_store, cli, tmp_path, edit):
    statement, needle = EDITS[edit]
    with sqlite3.connect(one_model_store) as connection:
        connection.execute(statement)
    connection.close()
    for command in (("status",), ("show",), ("show", "--json"), ("report", "--out", str(tmp_path / "r.html"))):
        code, out, err = cli(command[0], str(one_model_store), *command[1:])
        assert code == 2 and err.startswith("iotnas: error:") and len(err.strip().splitlines()) == 1, (command, err)
        assert needle in err and str(one_model_store) in err, (command, err)
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("edit", ["accuracy-text", "date-text"])
def test_export_of_an_edited_training_is_one_clear_line(one_model_store, cli, tmp_path, edit):
    statement, needle = EDITS[edit]
    with sqlite3.connect(one_model_store) as connection:
        connection.execute(statement)
    connection.close()
    code, _, err = cli("export", str(one_model_store), MODEL, "--out", str(tmp_path / "x"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "x").exists()
