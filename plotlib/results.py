"""Read a finished run's results in the terminal: ``plotlib show [results]`` prints, per benchmark, the
method table of ``summary.csv`` (test IIA and counted CPU seconds, mean +- std over seeds, speedups; the
same table the report prints) and where PLOT and Full DAS found each variable."""
from __future__ import annotations

from pathlib import Path

import pandas as pd


def site_locations(sites: str) -> list[str]:
    """The coarse locations a handle's or a DAS answer's ``sites`` label touches, in order."""
    return list(dict.fromkeys(part.strip().split("/")[0] for part in sites.split(" + ")))


def found_rows(accuracy: pd.DataFrame, bench: str):
    """Per (method, variable) of PLOT and Full DAS on ``bench``: their test answers' (seed, locations,
    combined IIA), the rows that say where each variable was found."""
    rows = accuracy[(accuracy.benchmark == bench) & (accuracy.split == "test") & (accuracy.metric == "combined")
                    & accuracy.method.isin(["PLOT", "Full DAS"])]
    for (method, variable), part in rows.groupby(["method", "variable"], sort=True):
        yield method, variable, [(seed, site_locations(sites), value) for seed, sites, value in zip(part.seed, part.sites, part.value)]


def _pm(mean: float, std: float, digits: int = 3) -> str:
    """``mean +- std`` (just the mean where one seed gives no spread)."""
    return f"{mean:.{digits}f}" if pd.isna(std) else f"{mean:.{digits}f} +- {std:.{digits}f}"


def method_table(part: pd.DataFrame) -> pd.DataFrame:
    """One benchmark's summary rows as a table for reading: IIA and counted seconds as mean +- std, wall
    seconds, the speedup and IIA difference against Full DAS, and the speedup against Full Boundless DAS
    where the benchmark runs it."""
    table = pd.DataFrame({"method": part.method, "seeds": part.n_seeds,
                          "test IIA": [_pm(m, s) for m, s in zip(part.iia, part.iia_std)],
                          "counted CPU s": [_pm(m, s, 2) for m, s in zip(part.seconds, part.seconds_std)],
                          "wall s": [f"{w:.2f}" for w in part.seconds_wall],
                          "speedup vs Full DAS": [f"{x:.1f}x" for x in part.speedup_vs_full_das],
                          "IIA minus Full DAS": [f"{d:+.3f}" for d in part.delta_iia_vs_full_das]})
    if "speedup_vs_full_boundless_das" in part and part.speedup_vs_full_boundless_das.notna().any():
        table["speedup vs Full Boundless DAS"] = [f"{x:.1f}x" for x in part.speedup_vs_full_boundless_das]
    return table


def show(output_dir: str | Path, benchmarks: list[str] | None = None) -> str:
    """The text ``plotlib show`` prints for ``output_dir`` (raises FileNotFoundError before a report exists)."""
    out = Path(output_dir)
    summary_file = out / "summary.csv"
    if not summary_file.exists():
        raise FileNotFoundError(f"no {summary_file}: run the workflow first (snakemake --cores 2), or name its output_dir")
    summary = pd.read_csv(summary_file)
    accuracy = pd.read_parquet(out / "accuracy.parquet")
    known = sorted(summary.benchmark.unique())
    unknown = sorted(set(benchmarks or []) - set(known))
    if unknown:
        raise FileNotFoundError(f"no results for {unknown} in {out}; it has {known}")
    lines = []
    for bench in benchmarks or known:
        part = summary[summary.benchmark == bench]
        table = method_table(part)
        lines += [f"== {bench}", table.to_string(index=False), ""]
        for method, variable, answers in found_rows(accuracy, bench):
            where = ", ".join(f"seed {seed}: {' + '.join(locations)}" for seed, locations, _ in answers)
            lines.append(f"  {method} found {variable} at {where}")
        lines.append("")
    return "\n".join(lines)
