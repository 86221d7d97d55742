"""A small real store for the commands that read one."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

MODEL = "mobilenetv2/s6/3"


@pytest.fixture
def one_model_store(tmp_path) -> Path:
    """A SQLite store whose study trained one feasible model (its checkpoint is not kept)."""
    from iotnas.arch import Arch
    from iotnas.store import FEASIBLE, Candidate, Latency, Store
    from iotnas.study import parse_study

    arch = Arch.parse(MODEL)
    db = tmp_path / "study.db"
    with Store.open(str(db), study_name="one") as store:
        store.set_study(parse_study({"name": "one", "data": {"dataset": "digits"}}, base_dir=str(tmp_path)))
        store.add_candidates([Candidate(
            key=arch.key, arch_json=arch.to_json(), space=arch.space, law=arch.law, arch_id=arch.id, n_values=1000,
            macs=5000, flops=10000, peak_activation_bytes=4096, status=FEASIBLE, reason=None, proposed_index=0,
        )])
        store.add_latency(Latency(arch.key, "local:onnxruntime:t1", "measured", 1.5, {"runs": 50}))
        assert store.claim_training(arch.key, 1.0, worker="test", stale_before=datetime.min)
        store.finish_training(arch.key, 1.0, accuracy=0.5, checkpoint=str(tmp_path / "runs" / "checkpoint.pt"),
                              seconds=1.0)
    return db
