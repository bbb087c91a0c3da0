"""Read a finished run's results in the terminal: ``plotlib show [results]`` prints, per benchmark, the
method table of ``summary.csv`` (test IIA and counted CPU seconds, mean +- std over seeds, speedup over
Full DAS) and where PLOT and Full DAS found each variable."""
from __future__ import annotations

from pathlib import Path

import pandas as pd


def site_locations(sites: str) -> list[str]:
    """The coarse locations a handle's or a DAS answer's ``sites`` label touches, in order."""
    return list(dict.fromkeys(part.strip().split("/")[0] for part in sites.split(" + ")))


def _pm(mean: float, std: float, digits: int) -> str:
    return f"{mean:.{digits}f} +- {0.0 if pd.isna(std) else std:.{digits}f}"


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
        table = pd.DataFrame({
            "method": part.method,
            "seeds": part.n_seeds,
            "test IIA": [_pm(m, s, 3) for m, s in zip(part.iia, part.iia_std)],
            "counted CPU s": [_pm(m, s, 2) for m, s in zip(part.seconds, part.seconds_std)],
            "speedup": [f"{x:.1f}x" if pd.notna(x) else "-" for x in part.speedup_vs_full_das]})
        lines += [f"== {bench}", table.to_string(index=False), ""]
        found = accuracy[(accuracy.benchmark == bench) & (accuracy.split == "test") & (accuracy.metric == "combined")
                         & accuracy.method.isin(["PLOT", "Full DAS"])]
        for (method, variable), rows in found.groupby(["method", "variable"]):
            where = ", ".join(f"seed {s}: {' + '.join(site_locations(sites))}" for s, sites in zip(rows.seed, rows.sites))
            lines.append(f"  {method} found {variable} at {where}")
        lines.append("")
    return "\n".join(lines)
