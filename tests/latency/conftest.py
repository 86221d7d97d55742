"""Small real models and a real device agent on 127.0.0.1 for the latency tests."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from iotnas.latency.measure import Protocol

#: Short enough for tests, still the real protocol (structure is checked, never speed).
FAST = Protocol(warmup_runs=2, warmup_s=0.0, min_runs=10, min_s=0.0, max_s=2.0)
TOKEN = "s3cret-token-for-tests"


def tiny_module(channels: int = 8):
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, 10),
    ).eval()


@pytest.fixture(scope="session")
def tiny_onnx() -> bytes:
    from iotnas.latency.runtimes import export_onnx

    return export_onnx(tiny_module(), input_shape=(1, 3, 32, 32))


class RunningAgent:
    """``python -m iotnas.latency.agent`` on an ephemeral port; its log (stderr) goes to a file."""

    def __init__(self, tmp: Path, *, max_request_mb: float, options: tuple[str, ...] = ()) -> None:
        token_file = tmp / "token"
        token_file.write_text(TOKEN + "\n")
        self.log_path = tmp / "agent.log"
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "iotnas.latency.agent", "--host", "127.0.0.1", "--port", "0",
                 "--token-file", str(token_file), "--max-request-mb", str(max_request_mb), "--time-limit-s", "60",
                 *options],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        line = self.process.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.process.kill()
            raise RuntimeError(f"agent did not start: {line!r} {self.log()}")
        self.url = line.removeprefix("listening on ")
        self.port = int(self.url.rsplit(":", 1)[1])

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def raw_post(port: int, body: bytes, *, token: str = TOKEN, length: int | str | None = None) -> tuple[int, dict]:
    """POST ``body`` to /measure as it is (a lying Content-Length too); the status and JSON reply."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Content-Length": str(len(body) if length is None else length)}
    conn.request("POST", "/measure", body=body, headers=headers)
    response = conn.getresponse()
    status, payload = response.status, json.loads(response.read())
    conn.close()
    return status, payload


@pytest.fixture(scope="module")
def agent(tmp_path_factory) -> Iterator[RunningAgent]:
    running = RunningAgent(tmp_path_factory.mktemp("agent"), max_request_mb=0.0625)  # 64 KiB
    yield running
    running.stop()
