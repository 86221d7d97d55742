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

from iotnas.cli._common import STORE, STUDY, console, print_json
from iotnas.cli.main import app

EXAMPLE_STUDY = '''\
# An iotnas study: the best network that fits the limits below, in the narrowest number format that keeps
# its accuracy. Paths are relative to this file. Run it with: iotnas search {name}
# A line "# key = value" shows a setting at its default: uncomment it to change it.
name = "{stem}"
# seed = 0
store = "{stem}.db"            # a SQLite file, or a SQLAlchemy URL (postgresql+psycopg://...)
# mode = "train"               # "train", or "tabular" (answers from the released models, no training)
formats = ["float32", "half", "int8"]   # number formats a model may be stored in (default: float32 only)
# released = ...               # tabular mode: folder of the released model set (NetConfigs.json, results_RaspPi.json)

[data]
dataset = "digits"             # "digits" (embedded, no files), or a path to CIFAR-10 / MNIST / an image folder
# layout = ...                 # cifar10-bin | cifar10-python | idx | folder: detected from the files when omitted
# num_classes = ...            # taken from the data when omitted; given, it is checked against the data
# limit = ...                  # train on the first N training images only (the test split stays whole)

[device]
# kind = "local"               # local | agent | predictor | released (tabular mode)
# runtime = "onnxruntime"      # torch | onnxruntime: the runtime is part of a latency figure's identity
# threads = 1
# min_s = ...                  # local | agent: seconds of timed runs per candidate (and >= 50 runs); 1.0
# sessions = ...               # local | agent: runtime sessions per candidate, the mean of their medians; 1
# kind = "agent" needs: url = "http://192.168.1.20:8765" (a device running 'iotnas agent serve'), and
#   token_file = "agent.token" (else $IOTNAS_AGENT_TOKEN); kind = "predictor" needs: predictor = "pi.json"
#   (made by 'iotnas latency calibrate')

[constraints]                  # no limit unless given
max_weight_bytes = 32768       # 32 KiB of weights, in the format the model is stored in
max_latency_ms = 5.0           # on the device above, batch 1
# max_activation_bytes = ...   # peak activation memory, batch 1, float32
# max_flash_bytes = ...        # the C library on a Cortex-M4F (needs arm-none-eabi-gcc); max_ram_bytes too

[space]
laws = ["mobilenetv2/s5", "mobilenetv2/s6", "densenet/s3"]   # "space/law", "space", or "all" (the default)
pool_per_law = 40              # ids 0..N-1 of each law form the candidate pool (default 200)

[strategy]
# name = "surrogate"           # laws | random | evolution | optuna | surrogate
# [strategy.settings]          # e.g. kappa = 1.0 (surrogate), population = 8 (evolution), sampler = "tpe" (optuna)

[budget]
# candidates = 2000            # most candidates drawn and costed (cheap)
trainings = 6                  # most models trained at the lowest fidelity (default 20)
epochs = [2, 6]                # fidelities (default [1]); the best 1/eta of each go on to the next
# eta = 3
# promote = "overall"          # or "per_format": the best 1/eta of each storage tier (float32-sized, half-sized...)

[training]                     # the recipe (see docs/training.md)
# batch_size = 128
# lr = 0.2                     # peak learning rate, SGD with Nesterov momentum
# momentum = 0.9
# weight_decay = 0.0005
# label_smoothing = 0.1
# warmup_fraction = 0.2        # linear warm-up over this fraction of the budget, then decay to 0
# warmup_epochs = ...          # a fixed warm-up in epochs instead
# crop_padding = 2             # pixels of random translation
# alternating_flip = true      # flips (where the dataset allows them) on alternate epochs
# ema_decay = 0.0              # weight averaging; 0 = off
# tta = false
# eval_every = 0               # evaluate every N epochs (0: at the end)
# channels_last = true
# threads = ...                # default: every core this process may use

[precision]                    # accuracy of each trained model in narrower formats
# grid = false                 # also search the (e, m) float formats below
# exp_bits = [2, 8]            # grid: exponent widths, inclusive
# man_bits = [0, 10]           # grid: mantissa widths, inclusive
# tolerance = 0.01             # accuracy a format may lose and still count as "as good"
# winner = "fewest_bytes"      # fewest bytes within tolerance of the most accurate, or "most_accurate"
# test_images = ...            # score formats on this many test images (a fixed draw); default all; the winner
#                              # is always re-scored on every test image
# finetune_epochs = 0.0        # format-aware fine-tuning of the best models (0 = off)
# finetune_top = 1
# finetune_formats = []        # default: every study format but float32

[final]                        # train the best models on after successive halving
# epochs = 0.0                 # to this many epochs (0 = skip; above the last budget.epochs)
# top = 0                      # 0: the best of each format family; N: the N most accurate

[workers]                      # several workers sharing one store ('iotnas search --workers N')
# heartbeat_s = 10.0
# stale_after_s = 60.0         # a training silent this long is taken over by another worker
# poll_s = 1.0
# threads = ...                # torch threads per worker's training; default: its share of the cores
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
    workers: str = typer.Option("auto", "--workers", envvar="IOTNAS_WORKERS", help="Workers sharing the study (processes or Ray tasks): a number, or 'auto' (the default): one single-threaded training per core, one in tabular mode."),
    executor: str = typer.Option("local", "--executor", help="Where workers run: local (processes) or ray."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="An existing Ray cluster, from one of its nodes ('auto', or the head's HOST:6379); default: a local Ray."),
    cpus_per_worker: float = typer.Option(1.0, "--cpus-per-worker", min=0.0, help="CPUs Ray reserves per worker."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", min=0.0, help="GPUs Ray reserves per worker."),
    token_file: Optional[Path] = typer.Option(None, "--token-file", help="File holding the device agent's token (overrides [device] token_file; else $IOTNAS_AGENT_TOKEN)."),
) -> None:
    """Run a constrained search, or resume it where it stopped."""
    from iotnas.search import run_search
    from iotnas.study import load_study

    from iotnas.executors import make_executor, parse_workers

    study = load_study(study_file, token_file=token_file)
    runner = make_executor(executor, address=ray_address, cpus_per_worker=cpus_per_worker,
                           gpus_per_worker=gpus_per_worker)
    count = parse_workers(workers, runner, trains=study.mode == "train")
    if count > 1 or executor != "local":
        _search_with_workers(study, store, top=top, workers=count, executor=executor, runner=runner)
        return
    with _progress_view() as on_event:
        summary = run_search(study, store_url=store, callbacks=[on_event])
    console.print(_summary_table(summary, top=top, title=f"{study.name}: best feasible models"))
    if not summary.best:
        console.print("no feasible model was trained; see 'iotnas status' for the stage counts")


_POLL_S = 5.0  # how often the launcher of several workers counts their trainings in the store


def _search_with_workers(study, store: Optional[str], *, top: int, workers: int, executor: str, runner) -> None:
    """Prepare the pool here, then let ``workers`` workers share the training; show what they report (local
    processes) and poll the store meanwhile."""
    import queue
    import threading

    from iotnas.search import SearchEvent, prepare_search, store_location, summarize
    from iotnas.search.workers import abandoned
    from iotnas.store import Store

    runner.check(workers)  # before anything is created
    url = store_location(study, store)
    with _progress_view() as on_event:
        prepare_search(study, store_url=url, callbacks=[on_event])
        outcome: dict = {}
        events: queue.SimpleQueue = queue.SimpleQueue()  # the workers' progress, shown by this thread alone

        def target() -> None:
            try:
                outcome["results"] = runner.run(study, url, workers=workers, on_event=events.put)
            except BaseException as exc:  # handed to the main thread, which raises it
                outcome["error"] = exc

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        polled = float("-inf")  # when the store was last polled (one query: this process costs the workers nothing)
        try:
            with Store.open(url, study_name=study.name, create=False) as s:
                while thread.is_alive() or not events.empty():
                    while not events.empty():
                        on_event(events.get())
                    if time.monotonic() - polled >= _POLL_S and thread.is_alive():
                        polled = time.monotonic()
                        trainings = s.trainings()
                        done = sum(t.status == "done" for t in trainings)
                        running = sum(t.status == "running" and not abandoned(t, study.workers) for t in trainings)
                        on_event(SearchEvent("workers", f"{workers} {executor} workers: {done} trainings done, "
                                                        f"{running} running"))
                    time.sleep(0.1)
        except BaseException:  # stopped (SIGINT, SIGTERM): the workers stop with their launcher
            runner.stop()
            raise
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
    Each local worker's stages are followed apart (their lines say which worker), so that one
    worker's lines and ETA do not hide or reset another's.
    """

    TICK_S = 30.0
    QUIET_S = 60.0
    COUNTERS = ("pool", "latency")
    POLLS = ("wait", "workers")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started = clock()
        self._progress: dict[tuple, tuple[int, float, float, float]] = {}  # (worker, stage): total, since, from, last
        self._resumed: dict[tuple, dict[int, float]] = {}  # (worker, stage): unit -> progress found in its checkpoint
        self._printed: dict[tuple, tuple[str, float]] = {}  # (worker, stage): its last line (times aside), when

    def tell(self, event) -> _Step:
        now = self._clock()
        key = (event.worker, event.stage)
        text = _describe(event) if event.worker is None else f"worker {event.worker}: {_describe(event)}"
        step = _Step(event.stage, text, event.completed, event.total, now - self._started, self._eta(key, event, now),
                     line=False)
        said = f"{step.counts} {step.text}"
        last = self._printed.get(key)
        if last is None:
            line = True
        elif event.stage in self.POLLS:
            line = said != last[0] or now - last[1] >= self.QUIET_S
        elif event.stage in self.COUNTERS and step.total and 0 < (step.completed or 0) < step.total:
            line = now - last[1] >= self.TICK_S
        else:
            line = said != last[0]
        if line:
            self._printed[key] = (said, now)
        return replace(step, line=line)

    def _eta(self, key: tuple, event, now: float) -> float | None:
        """Time left at the pace of ``key`` (a worker's stage) since its count (or its total) last started over.

        A training resumed from a checkpoint reports the epochs of its earlier run at once; they were
        not made at this pace, so they count as already done when it started (else an 80-epoch training
        resumed at epoch 51 would promise its last 29 epochs in minutes)."""
        if event.total is None or event.completed is None:
            return None
        done = event.completed + _epoch_fraction(event.detail)
        known = self._progress.get(key)
        if known is None or known[0] != event.total or done < known[3]:
            self._progress[key] = (event.total, now, done, done)
            self._resumed[key] = {event.completed: 0.0} if _epoch_fraction(event.detail) else {}  # in ``start``
            return None
        total, since, start, _ = known
        resumed = self._resumed[key]
        if event.completed not in resumed and _epoch_fraction(event.detail):
            resumed[event.completed] = _epoch_fraction(event.detail, resumed_only=True)
        self._progress[key] = (total, since, start, done)
        made_here = done - start - sum(resumed.values())
        if made_here <= 0 or done >= total:
            return None
        return (now - since) / made_here * (total - done)


def _epoch_fraction(detail: object, *, resumed_only: bool = False) -> float:
    """How far a training reporting ``detail`` (its epoch stats) has come, so that an ETA moves between
    trainings; with ``resumed_only``, how far it had come in an earlier run, before this one resumed it."""
    name = "resumed_from_epochs" if resumed_only else "epochs_done"
    done, total = getattr(detail, name, None), getattr(detail, "total_epochs", None)
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
    rule = summary.rule
    order = ("most accurate first" if rule.pick == "most_accurate"
             else f"fewest bytes within {rule.tolerance:.1%} of the most accurate first")
    table = Table(title=title, caption=f"{order}; acc.: test accuracy (* on [precision] test_images "
                                       "only; the winner's on every test image); "
                                       "bytes: weights in that format; ms: latency, batch 1")
    for column in ("#", "model", "format", "acc.", "epochs", "values", "bytes", "ms"):
        table.add_column(column, justify="left" if column in ("model", "format") else "right",
                         no_wrap=column in ("model", "format"), min_width=18 if column == "model" else None)
    for i, r in enumerate(summary.best[:top], 1):
        fmt = f"{r.format_name} (fine-tuned)" if r.finetuned else r.format_name
        subset = r.test_images is not None and r.full_accuracy is None
        accuracy = f"{r.reported_accuracy:.2%}" + ("*" if subset else "")
        table.add_row(str(i), r.key, fmt, accuracy, f"{r.epochs:g}", str(r.n_values), str(r.weight_bytes),
                      "-" if r.latency_ms is None else f"{r.latency_ms:.2f}")
    return table


@app.command("upgrade")
def upgrade_command(store: str = STORE) -> None:
    """Migrate a store written by an older iotnas to this version's schema (a search does it too)."""
    from iotnas.search import locate_store
    from iotnas.store import SCHEMA_VERSION, Store

    store = locate_store(store).url

    if Store.upgrade(store):
        console.print(f"migrated {store} to schema {SCHEMA_VERSION}")
        return
    console.print(f"{store} is already at schema {SCHEMA_VERSION}")


@app.command("studies")
def studies_command(
    store: str = STORE,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """The studies a store holds: stage counts and best feasible accuracy of each."""
    from iotnas.results.studies import study_overviews
    from iotnas.search import locate_store

    store = locate_store(store).url
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
def status_command(store: str = STORE, study_name: str | None = STUDY) -> None:
    """Stage counts, trainings running or interrupted, best feasible model and time spent."""
    from iotnas.errors import StoreError
    from iotnas.search import locate_store, summarize
    from iotnas.search.workers import abandoned
    from iotnas.store import Store
    from iotnas.study import WorkerSettings

    ref = locate_store(store, study_name)
    with Store.open(ref.url, study_name=ref.study_name, read_only=True) as s:
        summary = summarize(s, top=1)
        meta = s.meta()
        seconds = sum(t.seconds or 0.0 for t in s.trainings(status="done"))
        held = s.trainings(status="running")
        jobs = [j for j in s.jobs() if j.status == "running"]
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
    table.add_row("trainings at chance level", str(len(summary.chance_level)))
    console.print(table)
    for training, interrupted in zip(held, stopped):
        state = "interrupted (resume with: iotnas search STUDY.toml)" if interrupted else "running"
        console.print(f"{training.arch_key} to {training.epochs:g} epochs: {state}", soft_wrap=True, markup=False)
    for job in jobs:  # the precision stage's units: a model's formats, a fine-tuning
        state = "interrupted (resume with: iotnas search STUDY.toml)" if abandoned(job, settings) else "running"
        console.print(f"{job.name}: {state}", soft_wrap=True, markup=False)
    _print_chance_level(summary)
    console.print(f"training time: {seconds / 60:.1f} min")
    if summary.best:
        b = summary.best[0]
        console.print(f"winner: {b.key} in {b.format_name} at {b.reported_accuracy:.2%} ({b.epochs:g} epochs, "
                      f"{b.weight_bytes} weight bytes)", soft_wrap=True, markup=False)


def _print_chance_level(summary) -> None:
    """Name the trainings that ended no better than guessing: kept in the store, never a winner or on a front."""
    found = summary.chance_level
    if not found:
        return
    console.print(f"{len(found)} training(s) at chance level (never a winner, never on a front):", markup=False)
    for t in found:
        console.print(f"  {t.arch_key} to {t.epochs:g} epochs: {t.accuracy:.2%}", soft_wrap=True, markup=False)


@app.command("show")
def show_command(
    store: str = STORE,
    top: int = typer.Option(10, "--top", min=1, help="How many models to list."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    study_name: str | None = STUDY,
) -> None:
    """The best feasible models of a study."""
    from iotnas.search import locate_store, summarize
    from iotnas.store import Store

    ref = locate_store(store, study_name)
    with Store.open(ref.url, study_name=ref.study_name, read_only=True) as s:
        summary = summarize(s, top=top)
        skipped = s.skipped_formats()
    if as_json:
        print_json({"study": summary.study, "counts": summary.counts, "trainings": summary.trainings,
                    "winner_rule": asdict(summary.rule), "best": [asdict(r) for r in summary.best],
                    "chance_level": [{"arch_key": t.arch_key, "epochs": t.epochs, "accuracy": t.accuracy}
                                     for t in summary.chance_level],
                    "skipped_formats": [asdict(k) for k in skipped]})
        return
    console.print(_summary_table(summary, top=top, title=f"{summary.study}: best feasible models"))
    _print_chance_level(summary)
    if skipped:
        console.print(f"{len(skipped)} grid format(s) not evaluated:", markup=False)
        for k in skipped:
            console.print(f"  {k.arch_key} {k.format_name}: {k.reason}", soft_wrap=True, markup=False)
