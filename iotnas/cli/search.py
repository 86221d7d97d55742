"""`iotnas init | search | status | show`: run a study and read its store."""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Optional

import typer
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from iotnas.cli._common import STUDY, console, print_json
from iotnas.cli.main import app

EXAMPLE_STUDY = '''\
# An iotnas study: the most accurate network that fits the limits below.
# Paths are relative to this file. Run it with: iotnas search {name}
name = "{stem}"
seed = 0
store = "{stem}.db"            # a SQLite file, or a SQLAlchemy URL (postgresql+psycopg://...)
mode = "train"                 # "train", or "tabular" (answers from the released models, no training)
formats = ["float32"]          # number formats a model may be stored in

[data]
dataset = "digits"             # "digits" (embedded, no files), or a path to CIFAR-10 / MNIST / an image folder
# layout = "cifar10-bin"       # detected from the files when omitted
# limit = 5000                 # train on the first N images only

[device]
kind = "local"                 # local | agent | predictor | released (tabular mode)
runtime = "onnxruntime"        # torch | onnxruntime: the runtime is part of a latency figure's identity
threads = 1
# url = "http://192.168.1.20:8765"   # kind = "agent": a device running 'iotnas agent serve'
# predictor = "pi-predictor.json"    # kind = "predictor": made by 'iotnas latency calibrate'

[constraints]
max_weight_bytes = 32768       # 32 KiB of weights
max_latency_ms = 5.0           # on the device above, batch 1
# max_activation_bytes = 65536 # peak activation memory, batch 1, float32

[space]
laws = ["mobilenetv2/s5", "mobilenetv2/s6", "densenet/s3"]   # "space/law", "space", or "all"
pool_per_law = 40              # ids 0..N-1 of each law form the candidate pool

[strategy]
name = "surrogate"             # laws | random | evolution | optuna | surrogate
# [strategy.settings]          # e.g. kappa = 1.0 (surrogate), population = 8 (evolution), sampler = "tpe" (optuna)

[budget]
candidates = 500               # most candidates drawn and costed (cheap)
trainings = 6                  # most models trained at the lowest fidelity
epochs = [2, 6]                # fidelities; the best 1/eta of each go on to the next
eta = 3
'''


@app.command("init")
def init_command(
    path: Path = typer.Argument(Path("study.toml"), help="Where to write the example study."),
    overwrite: bool = typer.Option(False, "--overwrite", "--force", help="Replace an existing file."),
) -> None:
    """Write a commented example study file to edit."""
    from iotnas.files import write_new

    write_new(path, EXAMPLE_STUDY.format(name=path.name, stem=path.stem), what="study file", overwrite=overwrite)
    console.print(f"wrote {path}; edit it, then run: iotnas search {path}")


@app.command("search")
def search_command(
    study_file: Path = typer.Argument(..., help="The study file (TOML); 'iotnas init' writes an example."),
    store: Optional[str] = typer.Option(None, "--store", help="Store URL or SQLite path (overrides the study file)."),
    top: int = typer.Option(5, "--top", help="How many winners to list."),
    workers: int = typer.Option(1, "--workers", min=1, help="Workers sharing the study (processes or Ray tasks)."),
    executor: str = typer.Option("local", "--executor", help="Where workers run: local (processes) or ray."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="An existing Ray cluster ('auto', 'ray://host:10001'); default: a local Ray."),
    cpus_per_worker: float = typer.Option(1.0, "--cpus-per-worker", min=0.0, help="CPUs Ray reserves per worker."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", min=0.0, help="GPUs Ray reserves per worker."),
    token_file: Optional[Path] = typer.Option(None, "--token-file", help="File holding the device agent's token (overrides [device] token_file; else $IOTNAS_AGENT_TOKEN)."),
) -> None:
    """Run a constrained search, or resume it where it stopped."""
    from iotnas.search import run_search
    from iotnas.study import load_study

    study = load_study(study_file, token_file=token_file)
    if workers > 1 or executor != "local":
        _search_with_workers(study, store, top=top, workers=workers, executor=executor,
                             address=ray_address, cpus=cpus_per_worker, gpus=gpus_per_worker)
        return
    with _progress_view() as on_event:
        summary = run_search(study, store_url=store, callbacks=[on_event])
    console.print(_summary_table(summary, top=top, title=f"{study.name}: best feasible models"))
    if not summary.best:
        console.print("no feasible model was trained; see 'iotnas status' for the stage counts")


def _search_with_workers(study, store: Optional[str], *, top: int, workers: int, executor: str,
                         address: Optional[str], cpus: float, gpus: float) -> None:
    """Prepare the pool here, then let ``workers`` workers share the training; poll the store meanwhile."""
    import threading

    from iotnas.executors import make_executor
    from iotnas.search import SearchEvent, prepare_search, store_location, summarize
    from iotnas.search.workers import abandoned
    from iotnas.store import Store

    runner = make_executor(executor, address=address, cpus_per_worker=cpus, gpus_per_worker=gpus)
    runner.check(workers)  # before anything is created
    url = store_location(study, store)
    with _progress_view() as on_event:
        prepare_search(study, store_url=url, callbacks=[on_event])
        outcome: dict = {}

        def target() -> None:
            try:
                outcome["results"] = runner.run(study, url, workers=workers)
            except BaseException as exc:  # handed to the main thread, which raises it
                outcome["error"] = exc

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        with Store.open(url, study_name=study.name, create=False) as s:
            while thread.is_alive():
                summary = summarize(s, study, top=top)
                running = sum(not abandoned(t, study.workers) for t in s.trainings(status="running"))
                on_event(SearchEvent("workers", f"{workers} {executor} workers: {summary.trainings} trainings done, "
                                                f"{running} running"))
                time.sleep(1.0)
    if "error" in outcome:
        raise outcome["error"]
    with Store.open(url, study_name=study.name, create=False) as s:
        summary = summarize(s, study, top=top)
    console.print(_summary_table(summary, top=top, title=f"{study.name}: best feasible models"))


@dataclass(frozen=True, slots=True)
class _Step:
    """What one search event says, as both views show it."""

    stage: str
    text: str
    completed: int | None
    total: int | None
    elapsed: float  # seconds since the search started
    eta: float | None  # seconds left in the stage, once it has a total and some progress
    line: bool  # whether it deserves a line of its own in a log

    @property
    def counts(self) -> str:
        return f"{self.completed}/{self.total}" if self.completed is not None and self.total is not None else ""


class _Narrator:
    """Decides what each search event says, for the live view and the log alike.

    A log gets every event a person follows a search by, but not every tick: a pool or latency
    counter gets its first and last value and one line per ``TICK_S``; a wait, or the workers'
    poll saying the same again, one line per ``QUIET_S``; and no stage repeats its last line.
    """

    TICK_S = 30.0
    QUIET_S = 60.0
    COUNTERS = ("pool", "latency")
    POLLS = ("wait", "workers")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started = clock()
        self._progress: dict[str, tuple[int, float, float, float]] = {}  # stage: total, since, from, last
        self._printed: dict[str, tuple[str, float]] = {}  # stage: its last line (times aside), when

    def tell(self, event) -> _Step:
        now = self._clock()
        step = _Step(event.stage, _describe(event), event.completed, event.total, now - self._started,
                     self._eta(event, now), line=False)
        said = f"{step.counts} {step.text}"
        last = self._printed.get(event.stage)
        if last is None:
            line = True
        elif event.stage in self.POLLS:
            line = said != last[0] or now - last[1] >= self.QUIET_S
        elif event.stage in self.COUNTERS and step.total and 0 < (step.completed or 0) < step.total:
            line = now - last[1] >= self.TICK_S
        else:
            line = said != last[0]
        if line:
            self._printed[event.stage] = (said, now)
        return replace(step, line=line)

    def _eta(self, event, now: float) -> float | None:
        """Time left at the stage's pace since its count (or its total) last started over."""
        if event.total is None or event.completed is None:
            return None
        done = event.completed + _epoch_fraction(event.detail)
        known = self._progress.get(event.stage)
        if known is None or known[0] != event.total or done < known[3]:
            self._progress[event.stage] = (event.total, now, done, done)
            return None
        total, since, start, _ = known
        self._progress[event.stage] = (total, since, start, done)
        if done <= start or done >= total:
            return None
        return (now - since) / (done - start) * (total - done)


def _epoch_fraction(detail: object) -> float:
    """How far a training reporting ``detail`` (its epoch stats) has come, so that an ETA moves between trainings."""
    done, total = getattr(detail, "epochs_done", None), getattr(detail, "total_epochs", None)
    return min(done / total, 1.0) if done is not None and total else 0.0


def _describe(event) -> str:
    """An event's message, with a training's epoch figures when it carries them."""
    detail = event.detail
    if detail is None or not hasattr(detail, "epoch"):
        return event.message
    parts = [f"epoch {detail.epoch:g}"]
    for name, fmt in (("loss", "loss {:.3f}"), ("test_accuracy", "test {:.2%}"), ("images_per_s", "{:.0f} img/s")):
        value = getattr(detail, name, None)
        if value is not None:
            parts.append(fmt.format(value))
    return f"{event.message}: " + ", ".join(parts)


def _duration(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}:{m:02d}:{s:02d}" if hours else f"{m}:{s:02d}"


class _SearchDisplay:
    """The terminal view: a progress bar for the current stage plus the latest training line."""

    def __init__(self) -> None:
        self.narrator = _Narrator()
        self.progress = Progress(
            SpinnerColumn(), TextColumn("[bold]{task.fields[stage]:<8}"),
            TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}"), console=console,
        )
        self.task = self.progress.add_task("starting", stage="", eta="", total=None)
        self.last = ""

    def update(self, event) -> None:
        step = self.narrator.tell(event)
        self.progress.update(self.task, description=step.text, stage=step.stage, completed=step.completed or 0,
                             total=step.total, eta="" if step.eta is None else f"ETA {_duration(step.eta)}")
        if event.stage in ("train", "promote") and "%" in event.message:
            self.last = event.message

    def render(self):
        from rich.console import Group

        return Group(self.progress, self.last) if self.last else self.progress


class _SearchLog:
    """The view for a file, a pipe or CI: one line per event worth one, written as it happens."""

    def __init__(self) -> None:
        self.narrator = _Narrator()

    def update(self, event) -> None:
        step = self.narrator.tell(event)
        if not step.line:
            return
        eta = "" if step.eta is None else f"  (ETA {_duration(step.eta)})"
        console.file.write(f"{_duration(step.elapsed):>7}  {step.stage:<9} {step.counts:>7}  {step.text}{eta}\n")
        console.file.flush()


@contextlib.contextmanager
def _progress_view() -> Iterator[Callable]:
    """The callback that shows search events: the live view on a terminal, lines anywhere else."""
    if not console.is_terminal:
        yield _SearchLog().update
        return
    display = _SearchDisplay()
    with Live(display.render(), console=console, refresh_per_second=4, transient=False) as live:
        def on_event(event) -> None:
            display.update(event)
            live.update(display.render())

        yield on_event


def _summary_table(summary, *, top: int, title: str) -> Table:
    table = Table(title=title, caption="acc.: test accuracy; bytes: weights in that format; ms: latency, batch 1")
    for column in ("#", "model", "format", "acc.", "epochs", "values", "bytes", "ms"):
        table.add_column(column, justify="left" if column in ("model", "format") else "right",
                         no_wrap=column in ("model", "format"), min_width=18 if column == "model" else None)
    for i, r in enumerate(summary.best[:top], 1):
        fmt = f"{r.format_name} (fine-tuned)" if r.finetuned else r.format_name
        table.add_row(str(i), r.key, fmt, f"{r.accuracy:.2%}", f"{r.epochs:g}", str(r.n_values), str(r.weight_bytes),
                      "-" if r.latency_ms is None else f"{r.latency_ms:.2f}")
    return table


@app.command("upgrade")
def upgrade_command(store: str = typer.Argument(..., help="Store URL or SQLite file.")) -> None:
    """Migrate a store written by an older iotnas to this version's schema (a search does it too)."""
    from iotnas.store import SCHEMA_VERSION, Store

    if Store.upgrade(store):
        console.print(f"migrated {store} to schema {SCHEMA_VERSION}")
        return
    console.print(f"{store} is already at schema {SCHEMA_VERSION}")


@app.command("studies")
def studies_command(
    store: str = typer.Argument(..., help="Store URL or SQLite file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """The studies a store holds: stage counts and best feasible accuracy of each."""
    from iotnas.results.studies import study_overviews

    overviews = study_overviews(store)
    if as_json:
        print_json([o.to_dict() for o in overviews])
        return
    table = Table(title=f"studies in {store}")
    for column in ("study", "candidates", "trainings done", "best feasible", "accuracy"):
        table.add_column(column, justify="right" if column in ("candidates", "trainings done", "accuracy") else "left")
    for o in overviews:
        counts = ", ".join(f"{status} {n}" for status, n in sorted(o.counts.items())) or "0"
        best = "-" if o.best_key is None else f"{o.best_key} ({o.best_format})"
        table.add_row(o.name, counts, str(o.trainings), best,
                      "-" if o.best_accuracy is None else f"{o.best_accuracy:.2%}")
    console.print(table)
    if not overviews:
        console.print("no study yet; run: iotnas search STUDY.toml --store STORE")


@app.command("status")
def status_command(store: str = typer.Argument(..., help="Store URL or SQLite file."),
                   study_name: str | None = STUDY) -> None:
    """Stage counts, trainings running or interrupted, best feasible model and time spent."""
    from iotnas.errors import StoreError
    from iotnas.search import summarize
    from iotnas.search.workers import abandoned
    from iotnas.store import Store
    from iotnas.study import WorkerSettings

    with Store.open(store, study_name=study_name, read_only=True) as s:
        summary = summarize(s, top=1)
        meta = s.meta()
        seconds = sum(t.seconds or 0.0 for t in s.trainings(status="done"))
        held = s.trainings(status="running")
        try:
            study = s.study()
        except StoreError:  # a study this version cannot read: its heartbeat limit is the default's
            study = None
    settings = study.workers if study is not None else WorkerSettings()
    stopped = [abandoned(t, settings) for t in held]
    table = Table(title=f"study {meta.get('study_name', '?')}")
    table.add_column("stage")
    table.add_column("count", justify="right")
    for status, n in sorted(summary.counts.items()):
        table.add_row(status, str(n))
    table.add_row("trainings done", str(summary.trainings))
    table.add_row("trainings running", str(stopped.count(False)))
    table.add_row("trainings interrupted", str(stopped.count(True)))
    console.print(table)
    for training, interrupted in zip(held, stopped):
        state = "interrupted (resume with: iotnas search STUDY.toml)" if interrupted else "running"
        console.print(f"{training.arch_key} to {training.epochs:g} epochs: {state}", soft_wrap=True, markup=False)
    console.print(f"training time: {seconds / 60:.1f} min")
    if summary.best:
        b = summary.best[0]
        console.print(f"best feasible: {b.key} at {b.accuracy:.2%} ({b.epochs:g} epochs, {b.weight_bytes} weight bytes)")


@app.command("show")
def show_command(
    store: str = typer.Argument(..., help="Store URL or SQLite file."),
    top: int = typer.Option(10, "--top", min=1, help="How many models to list."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    study_name: str | None = STUDY,
) -> None:
    """The best feasible models of a study."""
    from iotnas.search import summarize
    from iotnas.store import Store

    with Store.open(store, study_name=study_name, read_only=True) as s:
        summary = summarize(s, top=top)
    if as_json:
        print_json({"study": summary.study, "counts": summary.counts, "trainings": summary.trainings,
                    "best": [asdict(r) for r in summary.best]})
        return
    console.print(_summary_table(summary, top=top, title=f"{summary.study}: best feasible models"))
