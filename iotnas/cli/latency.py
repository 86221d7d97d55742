"""`iotnas latency ...` (measure, calibrate, predict, explain, score) and `iotnas agent serve`."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from iotnas.cli._common import console, err_console, print_json
from iotnas.cli.main import app
from iotnas.errors import ConfigError

latency_app = typer.Typer(help="Time models on a device, calibrate and use latency predictors.", no_args_is_help=True)
agent_app = typer.Typer(help="The device agent that times models on the target board.", no_args_is_help=True)
app.add_typer(latency_app, name="latency")
app.add_typer(agent_app, name="agent")

DEVICE = typer.Option(None, "--device", help="Device agent URL (http://HOST:PORT); default: this machine.")
TOKEN_FILE = typer.Option(None, "--token-file", help="File holding the agent token (else $IOTNAS_AGENT_TOKEN).")
JSON = typer.Option(False, "--json", help="Print JSON instead of a table.")
SESSIONS = typer.Option(
    None, "--sessions", min=1, help="Runtime sessions per network, one after another; the figure is the mean of "
    "their medians (default 1, or the study's [device] sessions). More steady a noisy machine, at that many times the cost.")
NUM_CLASSES = typer.Option(10, "--num-classes", min=1, help="Classifier width (the dataset's classes).")
IN_CHANNELS = typer.Option(3, "--in-channels", min=1, help="Image channels (1 for MNIST-like data).")
PREDICTED_CHANNELS = typer.Option(
    None, "--in-channels", min=1, help="Image channels of the predicted network (default: the predictor's)."
)
PREDICTED_CLASSES = typer.Option(
    None, "--num-classes", min=1, help="Classifier width of the predicted network (default: the predictor's)."
)


def _arch_key(space: str, law: str, id: int) -> str:
    from iotnas.arch import Arch

    return Arch.parse(f"{space}/{law}/{id}").key


def _client(device: str | None, token_file: Path | None):
    if device is None:
        if token_file is not None:
            raise ConfigError("--token-file needs --device")
        return None
    from iotnas.latency.agent import AgentClient

    return AgentClient.connect(device, token_file=token_file)


def _shaped(predictor, in_channels: int | None, num_classes: int | None):
    """The predictor, predicting networks with the asked channels and classes (default: those it was calibrated for)."""
    shape = predictor.input_shape
    asked = dataclasses.replace(shape, channels=shape.channels if in_channels is None else in_channels,
                                classes=shape.classes if num_classes is None else num_classes)
    return predictor if asked == shape else predictor.with_input(asked)


def _released_shape(in_channels: int | None, num_classes: int | None) -> None:
    """Refuse another shape for the released timings, which are of RGB CIFAR-10 networks."""
    from iotnas.latency.predictor import DEFAULT_INPUT

    if in_channels not in (None, DEFAULT_INPUT.channels) or num_classes not in (None, DEFAULT_INPUT.classes):
        raise ConfigError(f"--released: the released timings are of networks for {DEFAULT_INPUT.describe()}; "
                          "leave out --in-channels and --num-classes")


@contextlib.contextmanager
def _progress() -> Iterator:
    """A progress callback ``(stage, done, total)``; the bar appears only once something reports."""
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=err_console, transient=True)
    tasks: dict[str, object] = {}

    def update(stage: str, done: int, total: int) -> None:
        if not tasks:
            bar.start()
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done)

    try:
        yield update
    finally:
        if tasks:
            bar.stop()


@latency_app.command("measure")
def measure(
    space: str = typer.Argument(..., help="Search space, e.g. mobilenetv2."),
    law: str = typer.Argument(..., help="Sampling law, e.g. s4."),
    id: int = typer.Argument(..., help="Sample id."),  # noqa: A002 - the released data's name
    runtime: str = typer.Option("onnxruntime", "--runtime", help="onnxruntime or torch (eager; local only)."),
    threads: int = typer.Option(1, "--threads", help="Intra-op threads, 1 to the cores of the machine that times."),
    min_s: float = typer.Option(1.0, "--min-s", min=0.0, help="Seconds of timed runs, at least (and >= 50 runs)."),
    sessions: int | None = SESSIONS,
    device: str | None = DEVICE,
    token_file: Path | None = TOKEN_FILE,
    num_classes: int = NUM_CLASSES,
    in_channels: int = IN_CHANNELS,
    as_json: bool = JSON,
) -> None:
    """Time one architecture per the protocol (median, p90, IQR, CV) on this machine or a device."""
    from iotnas.latency import Protocol, check_threads, measure_latency

    check_threads(threads, field="--threads", remote=device is not None)
    protocol = Protocol.timing_for(min_s, sessions)
    m = measure_latency(_arch_key(space, law, id), runtime=runtime, threads=threads,
                        device=_client(device, token_file), protocol=protocol,
                        num_classes=num_classes, in_channels=in_channels)
    if as_json:
        print_json(m.to_dict())
        return
    table = Table(title=m.key, show_header=False)
    for name, value in [("median", f"{m.median_ms:.4f} ms"), ("p90", f"{m.p90_ms:.4f} ms"),
                        ("IQR", f"{m.iqr_ms:.4f} ms"), ("CV", f"{m.cv:.1%}"), ("runs", f"{m.n_runs} (+{m.n_warmup} warm-up) in {m.n_sessions} session(s)"),
                        ("CPU", str(dict(m.environment).get("cpu")))]:
        table.add_row(name, value)
    console.print(table)


@latency_app.command("calibrate")
def calibrate(
    out: Path = typer.Option(..., "--out", help="Where to write the predictor (JSON)."),
    kind: str = typer.Option(
        "nodes", "--kind", help="nodes (optimised-graph nodes timed in context; this machine) or kernels."
    ),
    study: Path | None = typer.Option(
        None, "--study", help="Draw calibration networks from this study's laws (default: the five families)."
    ),
    device: str | None = DEVICE,
    token_file: Path | None = TOKEN_FILE,
    networks: int = typer.Option(120, "--networks", min=5, help="Calibration networks (nodes: over all rounds)."),
    held_out: int = typer.Option(40, "--held-out", min=0, help="nodes: other networks timed to score the fit."),
    rounds: int = typer.Option(3, "--rounds", min=1, help="nodes: rounds; later ones sample where the error is high."),
    sessions: int | None = SESSIONS,
    max_kernels: int | None = typer.Option(None, "--max-kernels", min=20, help="kernels: time at most this many."),
    seed: int = typer.Option(0, "--seed", help="Seed for choosing calibration networks."),
    statistic: str = typer.Option(
        "median_ms", "--statistic", help="median_ms (wall clock) or cpu_median_ms (thread CPU time; shared machines)."
    ),
    released: Path | None = typer.Option(
        None, "--released", help="Instead, fit the whole-network model on released results_RaspPi.json."
    ),
    in_channels: int | None = typer.Option(
        None, "--in-channels", min=1, help="Image channels of the networks (default: the study's data, else 3)."
    ),
    num_classes: int | None = typer.Option(
        None, "--num-classes", min=1, help="Classifier width of the networks (default: the study's data, else 10)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing predictor file."),
) -> None:
    """Time networks on the device and fit a predictor (or fit on released Pi timings); prints time and score."""
    import json
    import time

    from iotnas.files import check_target, write_new
    from iotnas.latency import Protocol
    from iotnas.latency import calibrate as cal

    if kind not in ("nodes", "kernels"):
        raise ConfigError(f"--kind must be nodes or kernels, got {kind!r}")
    if kind == "nodes" and device is not None:
        raise ConfigError("--kind nodes profiles graphs on this machine; time an agent's device with --kind kernels")
    check_target(out, what="predictor", overwrite=overwrite)  # before the timing, which takes minutes
    start = time.perf_counter()
    warnings: list[str] = []
    held_score = None
    if released is not None:
        if device is not None:
            raise ConfigError("--released fits on stored timings; leave out --device")
        _released_shape(in_channels, num_classes)
    else:
        plan = _calibration_plan(study, in_channels=in_channels, num_classes=num_classes)
        laws, shape = plan.laws, plan.shape
        protocol = Protocol.timing_for(None, plan.sessions if sessions is None else sessions)
    with _progress() as update:
        if released is not None:
            predictor = cal.fit_released(released, seed=seed, progress=lambda i, n: update("tracing", i, n))
        elif kind == "nodes":
            predictor, calibration = cal.calibrate_nodes(
                laws, networks=networks, held_out=held_out, rounds=rounds, statistic=statistic, shape=shape,
                protocol=protocol, seed=seed, progress=update)
            warnings, held_score = calibration.warnings(), calibration.score
        else:
            by_family: dict[str, list[str]] = {}
            for ref in laws:  # the study's laws (else every law of the five families), evenly over families
                space, law = ref.split("/")
                by_family.setdefault(space, []).append(law)
            archs = cal.sample_archs(networks, seed=seed, families=tuple(by_family), laws=by_family)
            predictor, _ = cal.calibrate(archs, device=_client(device, token_file), network_protocol=protocol,
                                         max_kernels=max_kernels, statistic=statistic, shape=shape, seed=seed,
                                         progress=update)
    write_new(out, json.dumps(predictor.to_dict()), what="predictor", overwrite=overwrite)
    console.print(f"wrote {predictor.kind} predictor for {predictor.input_shape.describe()} to {out} "
                  f"in {time.perf_counter() - start:.0f} s")
    if held_score is not None:
        console.print(f"held-out: {held_score.n} networks, {held_score.within_10:.1%} within ±10 %, "
                      f"RMSPE {held_score.rmspe:.1%}, median error {held_score.median_ape:.1%}")
    for line in warnings:
        err_console.print(f"warning: {line}")


class CalibrationPlan(NamedTuple):
    """What to calibrate on: ``space/law`` names, the input shape, and the sessions per timing (None: unset)."""

    laws: list[str]
    shape: Any  # an InputShape
    sessions: int | None


def _calibration_plan(study: Path | None, *, in_channels: int | None, num_classes: int | None) -> CalibrationPlan:
    """A study's laws, data and ``[device] sessions``, or the five families of the released timings with the
    given shape (default: RGB, 10 classes) and no sessions setting.

    Raises:
        ConfigError: an option contradicts the study's data.
    """
    from iotnas.latency.calibrate import RELEASED_FAMILIES
    from iotnas.latency.predictor import DEFAULT_INPUT
    from iotnas.search.pool import expand_laws
    from iotnas.study import load_study

    if study is None:
        laws = [str(ref) for ref in expand_laws(list(RELEASED_FAMILIES))]
        return CalibrationPlan(laws, dataclasses.replace(
            DEFAULT_INPUT, channels=DEFAULT_INPUT.channels if in_channels is None else in_channels,
            classes=DEFAULT_INPUT.classes if num_classes is None else num_classes), None)
    from iotnas.search.training import load_study_dataset

    loaded = load_study(study)
    dataset = load_study_dataset(loaded)  # the channels and classes its networks are built for
    for option, given, found in (("--in-channels", in_channels, dataset.in_channels),
                                 ("--num-classes", num_classes, dataset.num_classes)):
        if given is not None and given != found:
            raise ConfigError(f"{option} {given} contradicts the study's data ({dataset.describe()}); "
                              "leave it out to calibrate for the study's data")
    shape = dataclasses.replace(DEFAULT_INPUT, channels=dataset.in_channels, classes=dataset.num_classes)
    return CalibrationPlan([str(ref) for ref in expand_laws(loaded.laws)], shape, loaded.device.sessions)


@latency_app.command("predict")
def predict(
    predictor_path: Path = typer.Argument(..., metavar="PREDICTOR", help="A predictor file."),
    space: str = typer.Argument(...),
    law: str = typer.Argument(...),
    id: int = typer.Argument(...),  # noqa: A002
    in_channels: int | None = PREDICTED_CHANNELS,
    num_classes: int | None = PREDICTED_CLASSES,
    as_json: bool = JSON,
) -> None:
    """Predict one architecture's latency (ms), built for the predictor's input shape unless overridden."""
    from iotnas.latency.predictor import LatencyPredictor

    key = _arch_key(space, law, id)
    predictor = _shaped(LatencyPredictor.load(predictor_path), in_channels, num_classes)
    ms = predictor.predict(key)
    if as_json:
        print_json({"arch": key, "latency_ms": ms, "input": predictor.input_shape.to_dict()})
    else:
        console.print(f"{key}: {ms:.4f} ms (predicted, {predictor.input_shape.describe()})")


@latency_app.command("explain")
def explain(
    predictor_path: Path = typer.Argument(..., metavar="PREDICTOR", help="A node predictor file (--kind nodes)."),
    key: str = typer.Argument(..., metavar="KEY", help="Architecture key, e.g. mobilenetv2/s4/39."),
    in_channels: int | None = PREDICTED_CHANNELS,
    num_classes: int | None = PREDICTED_CLASSES,
    as_json: bool = JSON,
) -> None:
    """Per-node predicted time of one architecture: where its latency goes."""
    from iotnas.arch import Arch
    from iotnas.errors import LatencyError
    from iotnas.latency.predictor import LatencyPredictor, NodePredictor

    predictor = LatencyPredictor.load(predictor_path)
    if not isinstance(predictor, NodePredictor):
        raise LatencyError(f"{predictor_path} is a {predictor.kind} predictor; explain needs a nodes predictor "
                           "(iotnas latency calibrate --kind nodes)")
    arch_key = Arch.parse(key).key
    predictor = _shaped(predictor, in_channels, num_classes)
    costs, overhead_ms = predictor.explain(arch_key)
    total = sum(c.ms for c in costs) + overhead_ms
    if as_json:
        print_json({"arch": arch_key, "latency_ms": total, "overhead_ms": overhead_ms,
                    "input": predictor.input_shape.to_dict(),
                    "nodes": [{"name": c.name, "op": c.op, "out_shape": list(c.out_shape), "ms": c.ms}
                              for c in costs]})
        return
    table = Table(title=f"{arch_key}: {total:.4f} ms predicted")
    for column in ("#", "node", "type", "output", "ms", "share"):
        table.add_column(column, justify="right" if column in ("#", "ms", "share") else "left")
    for i, c in enumerate(costs):
        table.add_row(str(i), c.name, c.op, "x".join(map(str, c.out_shape[1:])), f"{c.ms:.4f}", f"{c.ms / total:.1%}")
    table.add_row("", "rest of the network term", "", "", f"{overhead_ms:.4f}", f"{overhead_ms / total:.1%}")
    console.print(table)


@latency_app.command("score")
def score_cmd(
    predictor_path: Path = typer.Argument(..., metavar="PREDICTOR", help="A predictor file."),
    device: str | None = DEVICE,
    token_file: Path | None = TOKEN_FILE,
    networks: int = typer.Option(20, "--networks", min=1, help="Held-out networks to time and predict."),
    seed: int = typer.Option(1, "--seed", help="Seed for the held-out networks."),
    released: Path | None = typer.Option(None, "--released", help="Score against released Pi timings instead."),
    in_channels: int | None = PREDICTED_CHANNELS,
    num_classes: int | None = PREDICTED_CLASSES,
    as_json: bool = JSON,
) -> None:
    """Share of held-out networks predicted within +-10 % of their measured median, and RMSPE."""
    from iotnas.latency import calibrate as cal
    from iotnas.latency.measure import Protocol
    from iotnas.latency.predictor import DEFAULT_INPUT, LatencyPredictor, score
    from iotnas.latency.runtimes import OrtSettings

    predictor = LatencyPredictor.load(predictor_path)
    if released is not None:  # the released timings are of RGB CIFAR-10 networks, whatever the predictor's shape
        _released_shape(in_channels, num_classes)
        predictor = predictor.with_input(DEFAULT_INPUT)
    else:
        predictor = _shaped(predictor, in_channels, num_classes)
    with _progress() as update:
        if released is not None:
            rows = cal.released_timings(released)
            keys, measured = [k for k, _, _ in rows], [ms for _, ms, _ in rows]
        else:
            exclude = set(getattr(predictor, "info", {}).get("calibration_archs", []))
            keys = cal.sample_archs(networks, seed=seed, exclude=exclude)
            settings = OrtSettings.from_dict(getattr(predictor, "settings", {}) or {})
            timed = cal.time_networks(keys, device=_client(device, token_file), settings=settings,
                                      protocol=Protocol(), shape=predictor.input_shape, progress=update)
            statistic = getattr(predictor, "info", {}).get("statistic", "median_ms")
            keys, measured = list(timed), [getattr(m, statistic) for m in timed.values()]
        predicted = predictor.predict_many(keys, progress=lambda i, n: update("predicting", i, n))
    result = score(predicted, measured)
    if as_json:
        print_json(result.to_dict())
    else:
        console.print(f"{result.n} networks: {result.within_10:.1%} within ±10 %, RMSPE {result.rmspe:.1%}, "
                      f"median error {result.median_ape:.1%}")


@agent_app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port (0: any free port)."),
    token_file: Path = typer.Option(..., "--token-file", help="File holding the secret clients must send."),
    max_request_mb: float = typer.Option(128.0, "--max-request-mb", help="Largest request accepted (MiB)."),
    time_limit_s: float = typer.Option(300.0, "--time-limit-s", help="Time limit per timing process."),
    memory_limit_mb: int | None = typer.Option(
        None, "--memory-limit-mb", help="Address-space limit per timing process (MiB); default: half the RAM, 1-4 GiB."
    ),
    read_deadline_s: float = typer.Option(30.0, "--read-deadline-s", help="Seconds a client has to send a request."),
    max_connections: int = typer.Option(32, "--max-connections", help="Connections served at once; more get 503."),
) -> None:
    """Serve timing requests on this device until interrupted; logs one line per request."""
    import logging

    from iotnas.latency.agent import serve_from_options

    logging.getLogger("iotnas.latency.agent").setLevel(logging.INFO)
    server = serve_from_options(host=host, port=port, token_file=token_file, max_request_mb=max_request_mb,
                                time_limit_s=time_limit_s, memory_limit_mb=memory_limit_mb,
                                read_deadline_s=read_deadline_s, max_connections=max_connections)
    bound_host, bound_port = server.address
    typer.echo(f"listening on http://{bound_host}:{bound_port}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
