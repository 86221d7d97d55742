"""A real study store holding one model trained (briefly) on real CIFAR-10 images, with its checkpoint."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from iotnas.arch import Arch

MODEL = "mobilenetv2/s6/3"  # a tiny released architecture: trains in seconds on 2 cores


@pytest.fixture(scope="session")
def cifar_small(shared_data: Path):
    from iotnas.data import load_dataset

    return load_dataset(shared_data / "cifar10").subset(train=2048, test=128)


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory, cifar_small, shared_data: Path) -> Path:
    """Path of a SQLite store with MODEL trained four short epochs (well above chance), as the search leaves it."""
    import torch

    from iotnas.cost import cost
    from iotnas.spaces import build
    from iotnas.store import FEASIBLE, Candidate, Latency, Store
    from iotnas.train import TrainConfig, train

    folder = tmp_path_factory.mktemp("study")
    arch = Arch.parse(MODEL)
    torch.manual_seed(0)
    model = build(arch, num_classes=10, in_channels=3)
    run_dir = folder / "runs" / arch.key.replace("/", "_")
    result = train(model, cifar_small, TrainConfig(epochs=4, batch_size=128, threads=1), checkpoint_dir=run_dir,
                   seed=0, meta={"arch": arch.to_json()}, device="cpu")
    c = cost(arch)
    db = folder / "study.db"
    with Store.open(str(db), study_name="export-test") as store:
        store.set_meta("study", json.dumps({
            "name": "export-test", "mode": "train", "formats": ["float32", "e4m3", "int8"],
            "data": {"dataset": str(shared_data / "cifar10")}, "constraints": {"max_weight_bytes": 65536},
        }))
        store.add_candidates([Candidate(
            key=arch.key, arch_json=arch.to_json(), space=arch.space, law=arch.law, arch_id=arch.id,
            n_values=c.n_values, macs=c.macs, flops=c.flops, peak_activation_bytes=c.peak_activation_bytes(bits=32),
            status=FEASIBLE, reason=None, proposed_index=0,
        )])
        store.add_latency(Latency(arch_key=arch.key, device_key="local:onnxruntime:t1", source="measured",
                                  median_ms=1.25, detail={"repeats": 20}))
        assert store.claim_training(arch.key, 4.0, worker="test", stale_before=datetime.min)
        store.finish_training(arch.key, 4.0, accuracy=result.test_accuracy,
                              checkpoint=str(run_dir / "checkpoint.pt"), seconds=1.0)  # absolute, as the search writes it
    return db
