"""Measured coverage of the report's intervals, its family-wise false-verdict rate and its power.

    python benchmarks/bench_coverage.py [--matrices 1000]

Simulated matrices with known truth (tests/report/coverage_sim.py: AR(1) windows, seed effects,
a step-by-window interaction common to the seeds, run noise) scored by the report's own functions
(report/noise.py, report/verdict.py). Prints markdown tables: per scenario the coverage of the
95% interval (what it claims to cover: Δ with 2 or more seeds, this seed's difference with one),
next to the former formulas' (main before issue 20) on the same draws; then, for a matrix of five
steps identical in truth, how often any of the report's 7 comparisons says better or worse, and
how often a step truly better by 2, 4 and 6 standard errors is called better; then the other
intervals the report prints (matched work, the compute multiplier, the model-size trend:
tests/report/coverage_sim_curves.py), now and before. The tests
(tests/report/test_report_coverage.py, test_report_coverage_curves.py) assert the bounds; this
prints the figures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "report"))
from coverage_sim import (  # noqa: E402
    Scenario,
    ar1,
    bounds,
    coverage,
    family_rates,
    former_half_width,
    grid,
    pivot_alone_half_width,
)
from coverage_sim_curves import bounds as curve_bounds  # noqa: E402
from coverage_sim_curves import grid as curve_grid  # noqa: E402
from coverage_sim_curves import scenario_coverage  # noqa: E402

from ablate.report.noise import parts_from_windows  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--matrices", type=int, default=1000, help="simulated matrices per scenario")
    ap.add_argument(
        "--extra",
        action="store_true",
        help="also the mixes off the tested grid (seed / window / run shares 0.03-1, lag-1 0.1-0.6)",
    )
    args = ap.parse_args(argv)
    R = args.matrices
    t0 = time.perf_counter()
    print(
        "| Seeds | Windows | Lag-1 | Variance mostly from | Coverage | Bounds | Uncalibrated pivot | Former formulas | Effective windows | Block |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for i, sc in enumerate(grid()):
        draws = 2 * R if sc.K == 1 else R
        got = coverage(sc, draws, np.random.default_rng([2025, i]))
        old = coverage(sc, draws, np.random.default_rng([2025, i]), half=former_half_width)
        piv = (
            f"{coverage(sc, draws, np.random.default_rng([2025, i]), half=pivot_alone_half_width)['coverage']:.3f}"
            if sc.K >= 2
            else "-"
        )
        lo, hi = bounds(sc)
        print(
            f"| {sc.K} | {sc.n} | {sc.rho} | {sc.name} | {got['coverage']:.3f} | {lo:.2f}-{hi:.2f} "
            f"| {piv} | {old['coverage']:.3f} | {got['median_n_eff']:.0f} | {got['median_block']:.0f} |"
        )
    print()
    print(
        "| Seeds | Windows | Lag-1 | Variance | False verdicts (7 comparisons, global null) | Unadjusted | Power at 2 / 4 / 6 SE |"
    )
    print("|---|---|---|---|---|---|---|")
    for sc in [
        Scenario(2, 256, 0.28, 1.0, 0.3, 0.3, "balanced"),
        Scenario(3, 256, 0.28, 1.0, 1.0, 1.0, "balanced"),
        Scenario(5, 256, 0.28, 1.0, 1.0, 1.0, "balanced"),
        Scenario(5, 256, 0.28, 0.1, 1.0, 0.1, "window interaction dominates"),
        Scenario(10, 256, 0.28, 1.0, 1.0, 1.0, "balanced"),
        Scenario(3, 108, 0.6, 1.0, 1.0, 1.0, "balanced"),
    ]:
        rng = np.random.default_rng([7, sc.K, sc.n])
        got = family_rates(sc, R, rng, [{"V16": k * sc.se} for k in (0, 2, 4, 6)])
        raw = family_rates(sc, R, np.random.default_rng([7, sc.K, sc.n]), adjust=False)[0]
        power = " / ".join(f"{g['called'][('V16', 'V0')]['better']:.2f}" for g in got[1:])
        print(
            f"| {sc.K} | {sc.n} | {sc.rho} | {sc.name} | {got[0]['false_verdict_rate']:.3f} "
            f"| {raw['false_verdict_rate']:.3f} | {power} |"
        )
    print()
    print(
        "Outside the AR(1) model (not asserted): one seed, short-range windows (lag-1 0.2) plus a"
    )
    print("slow drift (AR(1) with lag-1 0.98, SD relative to the short-range part):")
    print()
    print("| Windows | Drift SD | Coverage | Median block |")
    print("|---|---|---|---|")
    rng = np.random.default_rng(5)
    for sd in (0.1, 0.2, 0.3):
        for n in (108, 2048):
            x = ar1(rng, (2 * R,), n, 0.2, 1.0) + ar1(rng, (2 * R,), n, 0.98, sd)
            p = parts_from_windows(x[:, None, :])
            cov = float(np.mean(np.abs(p.est) <= p.half_width(0.95)))
            print(f"| {n} | {sd} | {cov:.3f} | {np.median(p.block_windows):.0f} |")
    curves_table(R)
    if args.extra:
        extra(R)
    print(f"\n{R} matrices per scenario; {time.perf_counter() - t0:.0f} s")
    return 0


def curves_table(R: int) -> None:
    """The other intervals the report prints (tests/report/coverage_sim_curves.py): matched work,
    the compute multiplier, the model-size trend; now and with the formulas of main at 060ede1."""
    print()
    print(
        "Matched work, compute multiplier and model-size trend (8 periodic windows; now / before; "
        "the difference also with the periodic part scaled by n / P, main at 4cfd21b):"
    )
    print()
    print(
        "| Seeds | Windows | Lag-1 | Variance mostly from | Diff at equal tokens (now / before / n/P) | Compute multiplier "
        "| Tokens to target | Seconds to target | Size trend | Bounds (every kind) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for i, sc in enumerate(curve_grid()):
        g = scenario_coverage(sc, R, np.random.default_rng([41, i]))
        b = "{:.2f}-{:.2f}".format(*curve_bounds(sc, "diff"))  # the same for every kind
        sec = f"{g['seconds']:.3f}" if "seconds" in g else "-"
        print(
            f"| {sc.K} | {sc.n} | {sc.rho} | {sc.name} | {g['diff']:.3f} / {g['diff_before']:.3f} "
            f"/ {g['diff_n_over_p']:.3f} "
            f"| {g['mult']:.3f} / {g['mult_before']:.3f} | {g['tokens']:.3f} | {sec} "
            f"| {g['trend']:.3f} / {g['trend_before']:.3f} | {b} |"
        )


EXTRA_MIXES = {
    "seeds": (1, 0.03, 0.03),
    "windows": (0.03, 1, 0.03),
    "run": (0.03, 0.03, 1),
    "seeds, windows 0.3": (1, 0.3, 0.03),
    "windows, seeds 0.3": (0.3, 1, 0.03),
    "seeds = windows": (1, 1, 0.03),
    "run, seeds = windows 0.3": (0.3, 0.3, 1),
    "seeds, windows 0.1": (1, 0.1, 0.03),
    "windows, seeds 0.1": (0.1, 1, 0.03),
}


def extra(R: int) -> None:
    """Mixes the tests do not assert (a guard against a calibration fitted to the grid)."""
    print()
    print("Off the tested grid (Var(a)/K, Var(b̄), Var(ē)/K as given; not asserted):")
    print()
    print(
        "| Seeds | Windows | Lag-1 | Shares seed / window / run | Coverage | Uncalibrated pivot |"
    )
    print("|---|---|---|---|---|---|")
    for j, (n, rho) in enumerate([(108, 0.1), (108, 0.6), (256, 0.28), (2048, 0.1), (2048, 0.6)]):
        for K in (2, 3, 5):
            for m, (name, (s, w, r)) in enumerate(EXTRA_MIXES.items()):
                sc = Scenario(K, n, rho, s, w, r, name)
                got = coverage(sc, R, np.random.default_rng([77, j, K, m]))
                piv = coverage(
                    sc, R, np.random.default_rng([77, j, K, m]), half=pivot_alone_half_width
                )
                print(
                    f"| {K} | {n} | {rho} | {s} / {w} / {r} | {got['coverage']:.3f} "
                    f"| {piv['coverage']:.3f} |"
                )


if __name__ == "__main__":
    sys.exit(main())
