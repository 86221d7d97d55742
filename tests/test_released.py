"""Reading the released model set, and clear errors for missing or corrupt files."""

from __future__ import annotations

import json
import shutil

import pytest

from iotnas.arch import Arch
from iotnas.errors import DataError
from iotnas.released import load_released


def test_load_released(released_dir):
    models = load_released(released_dir)
    assert len(models) == 1617
    m = models[64]
    assert m.arch == Arch("densenet", "s1", 66) and m.index == 64
    assert (m.params, m.flops, round(m.accuracy, 4)) == (8945582, 2419196738, 0.946)
    assert len({x.arch.key for x in models}) == 1617
    assert all(x.latency_ms is not None and x.latency_ms > 0 for x in models)
    assert models[687].arch.key == "mobilenetv2/s6/10" and 5 < models[687].latency_ms < 7


def test_default_folder_from_environment(released_dir, monkeypatch):
    monkeypatch.setenv("IOTNAS_RELEASED_DIR", str(released_dir))
    assert len(load_released()) == 1617


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="NetConfigs.json"):
        load_released(tmp_path / "nowhere")


def test_without_pi_file_latency_is_none(released_dir, tmp_path):
    shutil.copy(released_dir / "NetConfigs.json", tmp_path)
    models = load_released(tmp_path)
    assert len(models) == 1617 and models[0].latency_ms is None


@pytest.mark.parametrize("content", ["{not json", '{"a": 1}', '[{"acc": 0.5}]',
                                     '[{"acc":0.5,"flops":1.5,"id":0,"law":"s1","params":1,"runid":"x","spacename":"random_net_densenet"}]',
                                     '[{"acc":0.5,"flops":1.0,"id":0,"law":"s9","params":1,"runid":"x","spacename":"random_net_densenet"}]'])
def test_corrupt_configs(tmp_path, content):
    (tmp_path / "NetConfigs.json").write_text(content)
    with pytest.raises(DataError):
        load_released(tmp_path)


def test_files_that_disagree(released_dir, tmp_path):
    shutil.copy(released_dir / "NetConfigs.json", tmp_path)
    pi = json.loads((released_dir / "results_RaspPi.json").read_text())
    pi[5]["params"] += 1
    (tmp_path / "results_RaspPi.json").write_text(json.dumps(pi))
    with pytest.raises(DataError, match="record 5"):
        load_released(tmp_path)
