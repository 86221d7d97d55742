"""Real study stores from the tabular mode (released models), and a real headless browser."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts"
BROWSER_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]

STUDY = """\
name = "{name}"
mode = "tabular"
seed = 0
store = "{name}.db"
released = "{released}"
formats = ["float32"]

[constraints]
{limits}

[space]
laws = {laws}

[strategy]
name = "laws"

[budget]
candidates = 2000
trainings = 1617
"""


def tabular_store(folder: Path, released: Path, *, name: str, laws: list[str], max_weight_bytes: int | None,
                  max_latency_ms: float | None) -> Path:
    """Run the tabular search (released accuracy and Raspberry Pi latency) into a new store."""
    from iotnas.search import run_search
    from iotnas.study import load_study

    study_file = folder / f"{name}.toml"
    limits = "\n".join(f"{k} = {v}" for k, v in (("max_weight_bytes", max_weight_bytes),
                                                   ("max_latency_ms", max_latency_ms)) if v is not None)
    laws_toml = "[" + ", ".join(f'"{law}"' for law in laws) + "]"
    study_file.write_text(STUDY.format(name=name, released=released, limits=limits, laws=laws_toml))
    run_search(load_study(study_file))
    return folder / f"{name}.db"


@pytest.fixture(scope="session")
def small_store(tmp_path_factory, released_dir: Path) -> Path:
    """Three laws of two families: about 220 models, some over the limits."""
    return tabular_store(tmp_path_factory.mktemp("tabular"), released_dir, name="small",
                         laws=["mobilenetv2/s5", "mobilenetv2/s6", "densenet/s3"], max_weight_bytes=32768,
                         max_latency_ms=20.0)


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium driven by Playwright; skipped only when no browser can be found."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install playwright)")
    executable = os.environ.get("IOTNAS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("no chromium found (apt-get install chromium, or set IOTNAS_CHROMIUM)")
    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=executable, args=BROWSER_ARGS)
        try:
            yield instance
        finally:
            instance.close()
