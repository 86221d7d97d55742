"""Pareto fronts: iotnas.pareto against paretoset (when installed) and a naive O(n^2) reference.

Points are random: "uniform" (independent objectives, small fronts) and
"trade-off" (accuracy rises with memory and latency as in a search, larger
fronts). Every method's mask is checked against iotnas's before its time counts.
The O(n^2) reference runs in blocks of rows (vectorised, bounded memory).

    python benchmarks/bench_pareto.py [--sizes 10000 100000] [--repeats 3] [--report]

With ``--report``, also times the report of all 1,617 released models (a tabular
search without constraints builds the store first, about 3 minutes): writing the
HTML, then loading it in headless chromium (Playwright) until both plots are drawn,
and redrawing after a zoom and after hiding a family.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from iotnas.pareto import nondominated, pareto_ranks


def naive_front(costs: np.ndarray, *, rows: int = 256) -> np.ndarray:
    """Every point compared with every other point (all objectives minimised)."""
    mask = np.empty(len(costs), dtype=bool)
    for start in range(0, len(costs), rows):
        block = costs[start:start + rows]
        le = (costs[None, :, :] <= block[:, None, :]).all(axis=2)
        lt = (costs[None, :, :] < block[:, None, :]).any(axis=2)
        mask[start:start + rows] = ~(le & lt).any(axis=1)
    return mask


def make_points(kind: str, n: int, k: int, seed: int) -> np.ndarray:
    """(n, k) costs to minimise: -accuracy, weight bytes[, latency]."""
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.random((n, k))
    size = rng.lognormal(10, 2, n)  # weight bytes, spread over decades like the search spaces
    accuracy = 1 - 1 / (1 + 0.2 * np.log(size)) + rng.normal(0, 0.02, n)
    cols = [-np.round(accuracy, 4), np.round(size)]
    if k == 3:
        cols.append(np.round(size ** 0.8 * rng.lognormal(0, 0.5, n), 1))
    return np.column_stack(cols)


def timed(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-max", type=int, default=20_000, help="skip the O(n^2) reference above this size")
    parser.add_argument("--peel-max", type=int, default=20_000,
                        help="skip ranks in 3 objectives (repeated peeling) above this size")
    parser.add_argument("--report", action="store_true", help="also time the 1,617-model report in chromium")
    parser.add_argument("--released", default=str(Path(__file__).resolve().parents[2] / "shared/data/iotnets"))
    args = parser.parse_args()
    try:
        import paretoset
    except ImportError:
        paretoset = None

    print(f"python {platform.python_version()}, numpy {np.__version__}, "
          f"paretoset {getattr(paretoset, '__version__', 'not installed')}; best of {args.repeats} runs\n")
    if paretoset is not None:  # compile its numba kernels before timing
        for k in (2, 3):
            paretoset.paretoset(make_points("uniform", 100, k, 0), sense=["min"] * k, distinct=False)
    print("| points | objectives | data | front size | iotnas front (ms) | iotnas ranks (ms) | paretoset (ms) "
          "| naive O(n²) (ms) | speed-up vs naive |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for n in args.sizes:
        for k in (2, 3):
            for kind in ("uniform", "trade-off"):
                costs = make_points(kind, n, k, seed=n + k)
                t_ours, mask = timed(lambda: nondominated(costs), args.repeats)
                t_ranks = "-"
                if k == 2 or n <= args.peel_max:
                    t, ranks = timed(lambda: pareto_ranks(costs), 1)
                    if not np.array_equal(ranks == 0, mask):
                        raise SystemExit("ranks disagree with the front")
                    t_ranks = f"{t * 1e3:.0f}"
                t_lib = "-"
                if paretoset is not None:
                    t, lib_mask = timed(lambda: paretoset.paretoset(costs, sense=["min"] * k, distinct=False),
                                        args.repeats)
                    if not np.array_equal(lib_mask, mask):
                        raise SystemExit(f"paretoset disagrees on {kind} n={n} k={k}")
                    t_lib = f"{t * 1e3:.1f}"
                t_naive, ratio = "-", "-"
                if n <= args.naive_max:
                    t, ref = timed(lambda: naive_front(costs), 1)
                    if not np.array_equal(ref, mask):
                        raise SystemExit(f"naive reference disagrees on {kind} n={n} k={k}")
                    t_naive, ratio = f"{t * 1e3:.0f}", f"{t / t_ours:.0f}x"
                print(f"| {n:,} | {k} | {kind} | {int(mask.sum())} | {t_ours * 1e3:.1f} | {t_ranks} "
                      f"| {t_lib} | {t_naive} | {ratio} |", flush=True)

    if args.report:
        report_timings(Path(args.released))


STUDY = """name = "released"\nmode = "tabular"\nstore = "released.db"\nreleased = "{released}"
[space]\nlaws = ["all"]\n[strategy]\nname = "laws"\n[budget]\ncandidates = 2000\ntrainings = 1617\n"""

DRAWN = "document.querySelectorAll('.js-plotly-plot .scatterlayer .points path').length >= 2 * {n}"


def report_timings(released: Path) -> None:
    """Time the report of every released model: writing it, and using it in a real browser."""
    from playwright.sync_api import sync_playwright

    from iotnas.report import write_report
    from iotnas.search import run_search
    from iotnas.store import Store
    from iotnas.study import load_study

    folder = Path(tempfile.mkdtemp(prefix="bench-report-"))
    try:
        (folder / "study.toml").write_text(STUDY.format(released=released))
        run_search(load_study(folder / "study.toml"))
        with Store.open(str(folder / "released.db"), create=False) as store:
            t_write, files = timed(lambda: write_report(store, folder / "report.html"), 1)
        size_mb = (folder / "report.html").stat().st_size / 1e6
        executable = shutil.which("chromium") or shutil.which("chromium-browser")
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=executable, args=args)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            start = time.perf_counter()
            page.goto((folder / "report.html").as_uri())
            page.wait_for_function(DRAWN.format(n=files.n_points), timeout=120_000)
            t_load = time.perf_counter() - start
            t_zoom = page.evaluate("""async () => { const d = document.getElementById('plot-accuracy-latency');
                const t = performance.now(); await Plotly.relayout(d, {'xaxis.range': [1, 2]});
                return performance.now() - t; }""")
            t_hide = page.evaluate("""async () => { const d = document.getElementById('plot-accuracy-memory');
                const t = performance.now(); await Plotly.restyle(d, {visible: 'legendonly'}, [0, 1]);
                return performance.now() - t; }""")
            browser.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\n| report of {files.n_points:,} models | write HTML (s) | file (MB) | chromium load until both plots are "
          "drawn (s) | zoom redraw (ms) | hide a family (ms) |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| SVG scatter, {files.n_points:,} markers per plot | {t_write:.2f} | {size_mb:.1f} | {t_load:.2f} "
          f"| {t_zoom:.0f} | {t_hide:.0f} |")


if __name__ == "__main__":
    main()
