"""`iotnas report` and `iotnas export`: read a finished (or running) study's store and hand results on."""

from __future__ import annotations

from pathlib import Path

import typer

from iotnas.cli._common import STORE, STUDY, console, print_json
from iotnas.cli.main import app


@app.command("report")
def report_command(
    store: str = STORE,
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="The HTML file to write (self-contained)."),
    static: Path | None = typer.Option(None, "--static", help="Also write PNG and SVG figures into this folder."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing report and figure files."),
    study_name: str | None = STUDY,
) -> None:
    """Write an HTML report: interactive trade-off plots, Pareto fronts, settings and provenance."""
    from iotnas.report import write_report
    from iotnas.search import locate_store
    from iotnas.store import Store

    ref = locate_store(store, study_name)
    with Store.open(ref.url, study_name=ref.study_name, read_only=True) as s:
        files = write_report(s, out, static_dir=static, overwrite=overwrite)
    console.print(f"wrote {files.html} ({files.n_points:,} model points)")
    for path in files.static:
        console.print(f"wrote {path}")


@app.command("export")
def export_command(
    store: str = STORE,
    model_key: str | None = typer.Argument(
        None, help="The model to export, e.g. mobilenetv2/s4/39 (default: the study's winner)."),
    fmt: str | None = typer.Option(
        None, "--format", "-f", help="Number format of the stored weights, e.g. e4m3, int8 (default: the one the "
        "study chose for the model)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to create for the exported files (must not exist)."),
    data: str | None = typer.Option(
        None, "--data", help="The study's dataset, where it lives now (default: the study's own setting)."),
    check_data: str | None = typer.Option(
        None, "--check-data", help="Check the export on this other dataset (same classes and channels) instead."),
    images: int = typer.Option(256, "--images", help="Test images the ONNX model is checked on."),
    force: bool = typer.Option(False, "--force", help="Export a model over the study's limits or at chance level."),
    c: bool = typer.Option(False, "--c", help="Also write a standalone C99 library (c/) for microcontrollers."),
    tflite: bool = typer.Option(True, "--tflite/--no-tflite", help="Also write model_int8.tflite, the full-integer "
                                "int8 TFLite model, checked in the LiteRT interpreter."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    study_name: str | None = STUDY,
) -> None:
    """Export a trained model: ONNX with the weights in their format, packed weights, a C header and a model card."""
    from iotnas.export import export_model
    from iotnas.search import locate_store
    from iotnas.store import Store

    ref = locate_store(store, study_name)
    with Store.open(ref.url, study_name=ref.study_name, read_only=True) as s:
        result = export_model(s, model_key, format_name=fmt, out_dir=out, dataset=data, check_dataset=check_data,
                              check_images=images, force=force, c=c, tflite=tflite)
    if json_out:
        print_json(result.to_dict())
        return
    console.print(f"exported {result.model_key} in {result.format_name} to {result.out_dir}")
    if result.forced:
        console.print(f"  forced although {'; '.join(result.forced)}")
    for name, size in result.files.items():
        console.print(f"  {name:<22} {size:>12,} bytes")
    console.print(f"  weights: {result.weight_bytes:,} bytes deployed, {result.promised_bytes:,} promised; "
                  f"model.onnx {result.onnx_bytes:,} bytes ({result.onnx_overhead_bytes:,} of graph and tables)")
    console.print(f"  ONNX vs PyTorch on {result.onnx_check.images} test images: max |difference| "
                  f"{result.onnx_check.max_abs_diff:.2e}, same class for {result.onnx_check.agreement:.2%}")
    if result.c_library is not None:
        lib, budget = result.c_library, result.c_library.budget
        console.print(f"  C ({lib.arithmetic}) vs {lib.check.reference} on {lib.check.images} test images: max "
                      f"|difference| {lib.check.max_abs_diff:.2e}; arena {lib.arena_bytes:,} bytes")
        if budget is not None:
            console.print(f"  {budget.target}: flash {budget.flash_bytes:,} bytes, RAM {budget.ram_bytes:,} bytes")
    if result.tflite is not None:
        check = result.tflite.check
        console.print(f"  model_int8.tflite in LiteRT on {check.images} test images: accuracy {check.accuracy:.2%} "
                      f"(int8-emulated {check.int8_accuracy:.2%}), same class for {check.agreement:.2%}")
