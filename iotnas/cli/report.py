"""`iotnas report` and `iotnas export`: read a finished (or running) study's store and hand results on."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from iotnas.cli._common import STUDY, console, print_json
from iotnas.cli.main import app


@app.command("report")
def report_command(
    store: str = typer.Argument(..., help="Store URL or SQLite file of the study."),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="The HTML file to write (self-contained)."),
    static: Optional[Path] = typer.Option(None, "--static", help="Also write PNG and SVG figures into this folder."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing report and figure files."),
    study_name: str | None = STUDY,
) -> None:
    """Write an HTML report: interactive trade-off plots, Pareto fronts, settings and provenance."""
    from iotnas.report import write_report
    from iotnas.store import Store

    with Store.open(store, study_name=study_name, read_only=True) as s:
        files = write_report(s, out, static_dir=static, overwrite=overwrite)
    console.print(f"wrote {files.html} ({files.n_points:,} model points)")
    for path in files.static:
        console.print(f"wrote {path}")


@app.command("export")
def export_command(
    store: str = typer.Argument(..., help="Store URL or SQLite file of the study."),
    model_key: str = typer.Argument(..., help="The model to export, e.g. mobilenetv2/s4/39."),
    fmt: str = typer.Option("float32", "--format", "-f", help="Number format of the packed weights, e.g. e4m3, int8."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to create for the exported files (must not exist)."),
    data: Optional[str] = typer.Option(
        None, "--data", help="Dataset to check the export on (default: the study's dataset)."),
    images: int = typer.Option(256, "--images", help="Test images the ONNX model is checked on."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    study_name: str | None = STUDY,
) -> None:
    """Export a trained model: ONNX, packed weights in a number format, a C header and a model card."""
    from iotnas.export import export_model
    from iotnas.store import Store

    with Store.open(store, study_name=study_name, read_only=True) as s:
        result = export_model(s, model_key, format_name=fmt, out_dir=out, dataset=data, check_images=images)
    if json_out:
        print_json(result.to_dict())
        return
    console.print(f"exported {result.model_key} in {result.format_name} to {result.out_dir}")
    for name, size in result.files.items():
        console.print(f"  {name:<22} {size:>12,} bytes")
    console.print(f"  ONNX vs PyTorch on {result.onnx_check.images} test images: max |difference| "
                  f"{result.onnx_check.max_abs_diff:.2e}, same class for {result.onnx_check.agreement:.2%}")
