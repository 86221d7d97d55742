"""A study: what the user asks for, read from a TOML file and validated on load.

Every key is checked; an unknown or malformed key raises :class:`ConfigError`
naming it (``constraints.max_weight_bytes: expected a positive integer``).
Nothing is silently dropped or clamped.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from iotnas.errors import ConfigError
from iotnas.latency.measure import MAX_SESSIONS
from iotnas.results.limits import Limits
from iotnas.strategies import STRATEGY_NAMES

MODES = ("train", "tabular")
#: How the winner is picked among feasible (model, format) pairs: ``fewest_bytes`` within
#: ``precision.tolerance`` of the most accurate (the default), or simply ``most_accurate``.
WINNER_RULES = ("fewest_bytes", "most_accurate")

# Bounds on what a study may ask for: beyond them a value is a typo, and would size memory,
# processes or storage past what any device or machine here needs.
MAX_SEED = 2**63 - 1  # torch and NumPy seeds
MAX_CLASSES = 100_000
MAX_IMAGES = 100_000_000
MAX_THREADS = 1024
MAX_BYTES = 2**40  # 1 TiB of weights or activations
MAX_LATENCY_MS = 3_600_000.0  # an hour
MAX_SECONDS = 86_400.0  # a day
MAX_CANDIDATES = 100_000  # drawn and costed; held in memory while the pool is built
MAX_TRAININGS = 100_000
MAX_EPOCHS = 10_000.0
MAX_ETA = 1_000
MAX_NAME = 100
DEVICE_KINDS = ("local", "agent", "predictor", "released")
MAX_TIMING_S = 600.0  # [device] min_s: a candidate timed for longer would stall a study
#: What the hybrid device mode measures: the candidates its predictor cannot decide, or every proposal.
HYBRID_MEASURE = ("undecided", "every")
#: How successive halving promotes: the best 1/eta of all models, or of each storage tier (the models
#: whose widest fitting listed format is float32, half, int8...), so that every format keeps contenders.
PROMOTE = ("overall", "per_format")
# Settings that never change a result, left out of the fingerprint and of study_changes: where the
# store and the study file are, how workers pace themselves, and how the device is reached (a board
# whose DHCP address changed is the same board; kind, runtime and threads are its identity), and how
# long each candidate is timed (a longer timing measures the same latency, more steadily).
_VOLATILE = ("store", "base_dir", "workers", "device.url", "device.token_file", "device.min_s", "device.sessions")
# Settings added after stores were made, hashed only when set to something else than their default
# (a whole table where the key has no dot), so that a store made before they existed keeps its fingerprint.
_ADDED_LATER: dict[str, Any] = {"precision.winner": "fewest_bytes", "precision.test_images": None,
                                "device.measure": None, "device.margin": None, "final": {"epochs": 0.0, "top": 0},
                                "budget.promote": "overall",
                                "constraints.max_flash_bytes": None, "constraints.max_ram_bytes": None}


def _runtimes() -> tuple[str, ...]:
    """The registered runtimes, read on use: :mod:`iotnas.latency` is slow to import."""
    from iotnas.latency.runtimes import RUNTIMES

    return RUNTIMES.names()


@dataclass(frozen=True, slots=True)
class DataSpec:
    dataset: str = "digits"  # an embedded dataset name, or a path
    layout: str | None = None  # detected from the files when omitted
    num_classes: int | None = None  # taken from the data when omitted
    limit: int | None = None  # train on the first N training images only; the test split stays whole


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    kind: str = "local"
    runtime: str = "onnxruntime"
    threads: int = 1
    url: str | None = None  # kind = "agent"
    predictor: str | None = None  # kind = "predictor": path of a saved predictor
    token_file: str | None = None  # kind = "agent": file holding the agent's token (else $IOTNAS_AGENT_TOKEN)
    # kind = "local" or "agent" with a predictor: the hybrid mode. The predictor screens the pool; the
    # device measures the candidates it cannot decide ("undecided": predicted within the margin of the
    # latency limit) or every proposal ("every"); margin is the predictor's trusted relative error.
    measure: str | None = None  # hybrid: "undecided" (default) or "every"
    margin: float | None = None  # hybrid: 0.15 by default
    # kind = "local" or "agent": seconds of timed runs per candidate, at least (and >= 50 runs); 1.0 by
    # default. Shorter times a pool faster and each figure more noisily; longer steadies a noisy board.
    min_s: float | None = None
    # kind = "local" or "agent": runtime sessions each candidate is timed in, one after another, min_s each;
    # its figure is the mean of their medians (1 by default). On some machines an ONNX Runtime session runs
    # fast or slow for its whole life; there more sessions steady a figure, at that many times the cost.
    sessions: int | None = None

    @property
    def hybrid(self) -> bool:
        """A device that measures, helped by a predictor that screens the pool first."""
        return self.kind in ("local", "agent") and self.predictor is not None

    @property
    def key(self) -> str:
        """Identity of a latency figure: the same model is faster on another runtime."""
        if self.kind == "released":
            return "released:raspberry-pi-3b+:torch"
        if self.kind == "agent":
            return f"agent:{self.url}:{self.runtime}:t{self.threads}"
        if self.kind == "predictor":
            return f"predictor:{Path(self.predictor or '').name}"
        return f"local:{self.runtime}:t{self.threads}"


@dataclass(frozen=True, slots=True)
class Budget:
    candidates: int = 2000  # most candidates drawn and costed (cheap)
    trainings: int = 20  # most models trained at the lowest fidelity
    epochs: tuple[float, ...] = (1.0,)  # training fidelities, ascending (successive halving)
    eta: int = 3  # keep the best 1/eta at each fidelity step
    promote: str = "overall"  # "overall": the best 1/eta of all; "per_format": of each storage tier (see PROMOTE)


@dataclass(frozen=True, slots=True)
class PrecisionSpec:
    grid: bool = False  # also search an (e, m) grid of float formats (bisection over m per e)
    exp_bits: tuple[int, int] = (2, 8)  # grid: exponent widths, inclusive
    man_bits: tuple[int, int] = (0, 10)  # grid: mantissa widths, inclusive
    tolerance: float = 0.01  # accuracy a format may lose against float32 and count as "within"
    finetune_epochs: float = 0.0  # format-aware fine-tuning of the best models (0 = off)
    finetune_top: int = 1  # how many of the best models are fine-tuned
    finetune_formats: tuple[str, ...] = ()  # formats to fine-tune for; default: every non-float32 study format
    winner: str = "fewest_bytes"  # "fewest_bytes" within tolerance of the most accurate, or "most_accurate"
    test_images: int | None = None  # score formats on this many test images (a fixed draw); None: all


@dataclass(frozen=True, slots=True)
class FinalSpec:
    epochs: float = 0.0  # after successive halving, train the chosen models on to this many epochs (0 = skip)
    top: int = 0  # the models: 0 = the best of each allowed format family; N = the N most accurate


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    heartbeat_s: float = 10.0  # seconds between heartbeats of a running training
    stale_after_s: float = 60.0  # a training without a heartbeat for this long is taken over
    poll_s: float = 1.0  # seconds between looks at the store while waiting for other workers
    threads: int | None = None  # torch threads of each worker's trainings; None: its share of the cores


@dataclass(frozen=True, slots=True)
class StrategySpec:
    name: str = "surrogate"
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Study:
    name: str
    mode: str = "train"
    seed: int = 0
    store: str = "study.db"
    data: DataSpec = DataSpec()
    device: DeviceSpec = DeviceSpec()
    constraints: Limits = Limits()
    formats: tuple[str, ...] = ("float32",)
    laws: tuple[str, ...] = ("all",)  # "space/law", "space", "all", or "auto" (laws with candidates under the limits)
    pool_per_law: int = 200  # open spaces: ids drawn per law to form the candidate pool
    strategy: StrategySpec = StrategySpec()
    budget: Budget = Budget()
    released: str | None = None  # folder of the released model set (tabular mode)
    training: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig settings (recipe)
    precision: PrecisionSpec = PrecisionSpec()
    final: FinalSpec = FinalSpec()
    workers: WorkerSettings = WorkerSettings()
    base_dir: str = "."  # relative paths in the file are resolved against its folder

    @property
    def fingerprint(self) -> str:
        """Hash of everything that decides results, so a store is never mixed with another study."""
        payload = asdict(self)
        for key in _VOLATILE:
            table, _, name = key.rpartition(".")
            (payload[table] if table else payload).pop(name)
        payload["device"]["url"] = None  # hashed (as null) before it was volatile: keeps URL-less fingerprints
        for key, default in _ADDED_LATER.items():
            table, _, name = key.rpartition(".")
            holder = payload[table] if table else payload
            if holder.get(name) == default:
                holder.pop(name)
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def resolve(self, path: str) -> Path:
        """A path from the study file, relative to the file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    def to_dict(self) -> dict[str, Any]:
        """The study as the TOML tables :func:`parse_study` reads (``base_dir`` aside); nulls dropped.

        The store keeps this form, so a stored study is read back by the same code as a file.
        """
        flat = asdict(self)
        flat.pop("base_dir")
        flat["space"] = {"laws": flat.pop("laws"), "pool_per_law": flat.pop("pool_per_law")}
        return _without_nulls(flat)


def study_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The settings that decide results and differ between two :meth:`Study.to_dict` forms.

    Each as ``"budget.trainings: 20 -> 30"`` (``unset`` for a key one side lacks), sorted by key,
    so a store that refuses a changed study can say what changed. Values are compared as the
    fingerprint hashes them (JSON text).
    """
    defaults = {k: v for k, v in _flatten(_unflatten(_ADDED_LATER)).items() if v is not None}
    before, after = {**defaults, **_flatten(old)}, {**defaults, **_flatten(new)}
    changed = sorted(k for k in before.keys() | after.keys()
                     if not _is_volatile(k) and _shown(before.get(k)) != _shown(after.get(k)))
    return [f"{k}: {_shown(before.get(k), 60)} -> {_shown(after.get(k), 60)}" for k in changed]


def _is_volatile(key: str) -> bool:
    return any(key == v or key.startswith(f"{v}.") for v in _VOLATILE)


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables as one mapping of dotted keys (``budget.trainings``), the names errors use."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys (``precision.winner``) back into nested tables."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *tables, name = key.split(".")
        holder = nested
        for table in tables:
            holder = holder.setdefault(table, {})
        holder[name] = value
    return nested


def _shown(value: Any, limit: int | None = None) -> str:
    text = "unset" if value is None else json.dumps(value, sort_keys=True, default=str)
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


def _without_nulls(value: Any) -> Any:
    """Drop None values at every level and turn tuples into lists (TOML has neither null nor tuple)."""
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_without_nulls(v) for v in value]
    return value


# --------------------------------------------------------------------------- loading


def load_study(path: str | Path, *, token_file: str | Path | None = None) -> Study:
    """Read and validate a study file.

    Args:
        token_file: replaces ``[device] token_file``; relative to the working directory, as a
            command line gives it (the study file's own is relative to the file).

    Raises:
        ConfigError: the file is missing, not TOML, or a key is unknown or malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file {path} not found; create one with 'iotnas init {path}'")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read study file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"study file {path} is not valid TOML: {exc}") from None
    study = parse_study(raw, base_dir=str(path.resolve().parent), default_name=path.stem)
    if token_file is None:
        return study
    if study.device.kind != "agent":
        raise ConfigError(f"--token-file: a token is for device.kind = \"agent\"; "
                          f"this study's is \"{study.device.kind}\"")
    return replace(study, device=replace(study.device, token_file=str(Path(token_file).expanduser().absolute())))


_DEFAULT = Study(name="")  # the dataclass fields' defaults, in one place


def parse_study(raw: Mapping[str, Any], *, base_dir: str = ".", default_name: str = "study") -> Study:
    """Validate a study given as a mapping (the parsed TOML, or :meth:`Study.to_dict`).

    Defaults are the dataclass fields' own; every table, ``[training]``, ``[precision]``
    and ``[strategy.settings]`` included, is checked here, so a study that loads runs.
    """
    top = _Table(raw, "")
    name = top.str("name", default_name)
    if len(name) > MAX_NAME or any(c in name for c in "/\\"):
        raise ConfigError(f"name: {name[:40]!r} is not a study name: at most {MAX_NAME} characters, no / or \\ "
                          "(it names the store and the run folder)")
    mode = top.choice("mode", MODES, _DEFAULT.mode)
    seed = top.int("seed", _DEFAULT.seed, minimum=0, maximum=MAX_SEED)
    store = top.str("store", f"{name}.db")
    released = top.str("released", _DEFAULT.released)
    formats = tuple(top.str_list("formats", list(_DEFAULT.formats)))
    if not formats:
        raise ConfigError("formats: give at least one number format, e.g. formats = [\"float32\"]")
    _check_formats(formats, "formats")

    data_t, d = top.table("data"), DataSpec()
    data = DataSpec(
        dataset=data_t.str("dataset", "cifar10" if mode == "tabular" else d.dataset),
        layout=data_t.str("layout", d.layout),
        num_classes=data_t.int("num_classes", d.num_classes, minimum=2, maximum=MAX_CLASSES),
        limit=data_t.int("limit", d.limit, minimum=2, maximum=MAX_IMAGES),
    )
    data_t.done()

    dev_t, d = top.table("device"), DeviceSpec()
    device = DeviceSpec(
        kind=dev_t.choice("kind", DEVICE_KINDS, "released" if mode == "tabular" else d.kind),
        runtime=dev_t.choice("runtime", _runtimes(), d.runtime),
        threads=dev_t.int("threads", d.threads, minimum=1, maximum=MAX_THREADS),
        url=dev_t.str("url", d.url),
        predictor=dev_t.str("predictor", d.predictor),
        token_file=dev_t.str("token_file", d.token_file),
        measure=dev_t.str("measure", d.measure),
        margin=dev_t.float("margin", d.margin, positive=True, maximum=1.0),
        min_s=dev_t.float("min_s", d.min_s, positive=True, maximum=MAX_TIMING_S),
        sessions=dev_t.int("sessions", d.sessions, minimum=1, maximum=MAX_SESSIONS),
    )
    dev_t.done()
    _check_device(device, mode)

    con_t = top.table("constraints")
    constraints = Limits(
        max_weight_bytes=con_t.int("max_weight_bytes", None, minimum=1, maximum=MAX_BYTES),
        max_latency_ms=con_t.float("max_latency_ms", None, positive=True, maximum=MAX_LATENCY_MS),
        max_activation_bytes=con_t.int("max_activation_bytes", None, minimum=1, maximum=MAX_BYTES),
        max_flash_bytes=con_t.int("max_flash_bytes", None, minimum=1, maximum=MAX_BYTES),
        max_ram_bytes=con_t.int("max_ram_bytes", None, minimum=1, maximum=MAX_BYTES),
    )
    con_t.done()

    space_t = top.table("space")
    laws = tuple(space_t.str_list("laws", list(_DEFAULT.laws)))
    pool_per_law = space_t.int("pool_per_law", _DEFAULT.pool_per_law, minimum=1, maximum=MAX_CANDIDATES)
    space_t.done()
    if not laws:
        raise ConfigError("space.laws: give at least one law (\"mobilenetv2/s4\"), a space (\"densenet\"), \"all\" "
                          "or \"auto\"")

    strat_t = top.table("strategy")
    strategy_name = strat_t.choice("name", STRATEGY_NAMES, StrategySpec().name)
    strategy = StrategySpec(name=strategy_name, settings=_strategy_settings(strategy_name, strat_t.raw_table("settings")))
    strat_t.done()

    training = dict(top.raw_table("training"))
    batch_size = _check_training(training).batch_size
    if data.limit is not None and data.limit < batch_size:
        raise ConfigError(f"data.limit: {data.limit} training images are fewer than one batch "
                          f"(training.batch_size = {batch_size}); give at least {batch_size} or a smaller batch_size")

    work_t, d = top.table("workers"), WorkerSettings()
    workers = WorkerSettings(
        heartbeat_s=work_t.float("heartbeat_s", d.heartbeat_s, positive=True, maximum=MAX_SECONDS),
        stale_after_s=work_t.float("stale_after_s", d.stale_after_s, positive=True, maximum=MAX_SECONDS),
        poll_s=work_t.float("poll_s", d.poll_s, positive=True, maximum=MAX_SECONDS),
        threads=work_t.int("threads", d.threads, minimum=1, maximum=MAX_THREADS),
    )
    work_t.done()
    if workers.stale_after_s <= workers.heartbeat_s:
        raise ConfigError("workers.stale_after_s: must be longer than workers.heartbeat_s")

    prec_t, d = top.table("precision"), PrecisionSpec()
    precision = PrecisionSpec(
        grid=prec_t.bool("grid", d.grid),
        exp_bits=tuple(prec_t.int_pair("exp_bits", d.exp_bits)),
        man_bits=tuple(prec_t.int_pair("man_bits", d.man_bits)),
        tolerance=prec_t.float("tolerance", d.tolerance),
        finetune_epochs=prec_t.float("finetune_epochs", d.finetune_epochs, maximum=MAX_EPOCHS),
        finetune_top=prec_t.int("finetune_top", d.finetune_top, minimum=1, maximum=MAX_TRAININGS),
        finetune_formats=tuple(prec_t.str_list("finetune_formats", list(d.finetune_formats))),
        winner=prec_t.choice("winner", WINNER_RULES, d.winner),
        test_images=prec_t.int("test_images", d.test_images, minimum=1, maximum=MAX_IMAGES),
    )
    prec_t.done()
    _check_precision(precision)

    bud_t, d = top.table("budget"), Budget()
    epochs = tuple(bud_t.float_list("epochs", list(d.epochs)))
    budget = Budget(
        candidates=bud_t.int("candidates", d.candidates, minimum=1, maximum=MAX_CANDIDATES),
        trainings=bud_t.int("trainings", d.trainings, minimum=1, maximum=MAX_TRAININGS),
        epochs=epochs,
        eta=bud_t.int("eta", d.eta, minimum=2, maximum=MAX_ETA),
        promote=bud_t.choice("promote", PROMOTE, d.promote),
    )
    bud_t.done()
    if not epochs or any(e <= 0 or e > MAX_EPOCHS for e in epochs) or list(epochs) != sorted(set(epochs)):
        raise ConfigError(f"budget.epochs: expected strictly increasing positive numbers up to {MAX_EPOCHS:,}, "
                          "e.g. [1, 3, 9]")

    fin_t, d = top.table("final"), FinalSpec()
    final = FinalSpec(
        epochs=fin_t.float("epochs", d.epochs, maximum=MAX_EPOCHS),
        top=fin_t.int("top", d.top, minimum=0, maximum=MAX_TRAININGS),
    )
    fin_t.done()
    _check_final(final, budget, mode)
    top.done()
    return Study(
        name=name, mode=mode, seed=seed, store=store, data=data, device=device,
        constraints=constraints, formats=formats, laws=laws, pool_per_law=pool_per_law,
        strategy=strategy, budget=budget, released=released, training=training, precision=precision, final=final,
        workers=workers, base_dir=base_dir,
    )


def _check_final(final: FinalSpec, budget: Budget, mode: str) -> None:
    if final.epochs == 0:
        return
    if mode == "tabular":
        raise ConfigError("final.epochs: tabular mode trains nothing; remove [final] or use mode = \"train\"")
    if final.epochs <= budget.epochs[-1]:
        raise ConfigError(f"final.epochs: {final.epochs:g} must be above the last budget.epochs "
                          f"({budget.epochs[-1]:g}), or 0 to skip the final training")


def _check_device(device: DeviceSpec, mode: str) -> None:
    """Refuse ``[device]`` keys that cannot go together, before anything is built (else a search fails midway)."""
    if mode == "tabular" and device.kind != "released":
        raise ConfigError("device.kind: tabular mode answers latency from the released Raspberry Pi timings; "
                          "use kind = \"released\" or mode = \"train\"")
    if mode == "train" and device.kind == "released":
        raise ConfigError("device.kind: \"released\" timings exist only for the released models; "
                          "use mode = \"tabular\"")
    if device.kind == "local":  # threads beyond this machine's cores only oversubscribe them
        from iotnas.latency.measure import check_threads

        check_threads(device.threads, field="device.threads", error=ConfigError)
    if device.kind == "agent" and not device.url:
        raise ConfigError("device.url: required when device.kind = \"agent\" (e.g. \"http://192.168.1.20:8765\")")
    if device.kind == "agent" and device.runtime != "onnxruntime":
        raise ConfigError(f"device.runtime: the agent times ONNX graphs only, not {device.runtime!r}; "
                          "use runtime = \"onnxruntime\" with kind = \"agent\"")
    if device.kind == "predictor" and not device.predictor:
        raise ConfigError("device.predictor: required when device.kind = \"predictor\" (path of a saved predictor)")
    if device.predictor is not None and device.kind in ("local", "agent") and mode != "train":
        raise ConfigError("device.predictor: the hybrid mode (a predictor beside a measuring device) is for "
                          "mode = \"train\"")
    if device.predictor is not None and device.kind == "released":
        raise ConfigError("device.predictor: the released timings need no predictor; remove the key")
    if device.measure is not None and device.measure not in HYBRID_MEASURE:
        raise ConfigError(f"device.measure: {device.measure!r} is not one of {', '.join(HYBRID_MEASURE)}")
    for key in ("measure", "margin"):
        if getattr(device, key) is not None and not device.hybrid:
            raise ConfigError(f"device.{key}: only for the hybrid mode (kind = \"local\" or \"agent\" with a "
                              "predictor); add device.predictor or remove the key")
    for key in ("min_s", "sessions"):
        if getattr(device, key) is not None and device.kind not in ("local", "agent"):
            raise ConfigError(f"device.{key}: only for a device that measures (kind = \"local\" or \"agent\"), and "
                              f"this study's device.kind is \"{device.kind}\"; remove the key or change the kind")
    for key, kind in (("url", "agent"), ("token_file", "agent")):
        if getattr(device, key) is not None and device.kind != kind:
            raise ConfigError(f"device.{key}: only for kind = \"{kind}\", and this study's device.kind is "
                              f"\"{device.kind}\"; remove the key or change the kind")


def _check_formats(names: Sequence[str], key: str) -> None:
    from iotnas.errors import FormatError
    from iotnas.formats import parse_format

    for name in names:
        try:
            parse_format(name)
        except FormatError as exc:
            raise ConfigError(f"{key}: {exc}") from None


def _check_training(settings: Mapping[str, Any]):
    """The ``[training]`` recipe, checked as the training will read it; returns it (a TrainConfig)."""
    from iotnas.train._config import recipe_for

    config = recipe_for(Study(name="check", training=settings), 1.0)
    if config.distill_weight > 0:
        raise ConfigError("training.distill_weight: a search trains without a teacher; distil a chosen model with "
                          "'iotnas train ... --teacher CHECKPOINT'")
    return config


def _check_precision(spec: PrecisionSpec) -> None:
    from iotnas.precision.grid import GridSpec

    GridSpec(spec.exp_bits, spec.man_bits, spec.tolerance)  # raises ConfigError naming the key
    if spec.finetune_epochs < 0:
        raise ConfigError("precision.finetune_epochs: expected a number >= 0")
    _check_formats(spec.finetune_formats, "precision.finetune_formats")


def _strategy_settings(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """``[strategy.settings]`` checked against what strategy ``name`` reads (as given: the fingerprint hashes it)."""
    from iotnas.strategies import check_strategy_settings

    check_strategy_settings(name, settings)
    return dict(settings)


MAX_TEXT = 4096  # characters: paths, URLs, names


def _check_text(value: str, name: str) -> None:
    """No control characters (a NUL in a path is an OS error later) and a sane length."""
    if len(value) > MAX_TEXT:
        raise ConfigError(f"{name}: {len(value):,} characters; at most {MAX_TEXT:,}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigError(f"{name}: contains a control character; give plain text")


def _number(value: Any, name: str) -> float:
    """A finite number (TOML's nan and inf are refused: no setting of a study means them)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:
        raise ConfigError(f"{name}: {value} is too large") from None
    if not math.isfinite(number):
        raise ConfigError(f"{name}: expected a finite number, got {value}")
    return number


class _Table:
    """Typed, key-tracking access to one TOML table, so unknown keys are reported."""

    def __init__(self, raw: Any, prefix: str):
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{prefix.rstrip('.') or 'study'}: expected a table")
        self._raw = raw
        self._prefix = prefix
        self._seen: set[str] = set()

    def _get(self, key: str) -> Any:
        self._seen.add(key)
        return self._raw.get(key)

    def _name(self, key: str) -> str:
        return f"{self._prefix}{key}"

    def table(self, key: str) -> _Table:
        value = self._get(key)
        return _Table({} if value is None else value, f"{self._name(key)}.")

    def raw_table(self, key: str) -> Mapping[str, Any]:
        value = self._get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{self._name(key)}: expected a table")
        return value

    def str(self, key: str, default: str | None) -> str | None:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{self._name(key)}: expected a non-empty string, got {value!r}")
        _check_text(value, self._name(key))
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.str(key, default)
        if value not in choices:
            raise ConfigError(f"{self._name(key)}: {value!r} is not one of {', '.join(choices)}")
        return value

    def int(self, key: str, default: int | None, *, minimum: int | None = None,
            maximum: int | None = None) -> int | None:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self._name(key)}: expected an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{self._name(key)}: expected an integer >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{self._name(key)}: {value} is above the largest value iotnas accepts, {maximum:,}")
        return value

    def float(self, key: str, default: float | None, *, positive: bool = False,
              maximum: float | None = None) -> float | None:
        value = self._get(key)
        if value is None:
            return default
        value = _number(value, self._name(key))
        if positive and not value > 0:
            raise ConfigError(f"{self._name(key)}: expected a positive number, got {value}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{self._name(key)}: {value:g} is above the largest value iotnas accepts, {maximum:,g}")
        return value

    def bool(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(f"{self._name(key)}: expected true or false, got {value!r}")
        return value

    def int_pair(self, key: str, default: tuple[int, int]) -> tuple[int, int]:
        value = self._get(key)
        if value is None:
            return default
        if (not isinstance(value, list) or len(value) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
            raise ConfigError(f"{self._name(key)}: expected [low, high] (two integers), got {value!r}")
        return value[0], value[1]

    def str_list(self, key: str, default: list[str]) -> list[str]:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{self._name(key)}: expected a list of strings, got {value!r}")
        for v in value:
            _check_text(v, self._name(key))
        return value

    def float_list(self, key: str, default: list[float]) -> list[float]:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{self._name(key)}: expected a list of numbers, got {value!r}")
        return [_number(v, self._name(key)) for v in value]

    def done(self) -> None:
        unknown = sorted(set(self._raw) - self._seen)
        if unknown:
            where = self._prefix.rstrip(".") or "the top level"
            raise ConfigError(
                f"{self._name(unknown[0])}: unknown key in {where}; check the spelling "
                "('iotnas init' writes a commented example)"
            )
