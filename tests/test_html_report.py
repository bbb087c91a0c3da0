"""`snakemake --report` builds an HTML report; headless Chromium renders it with every figure in the page and
the summary tables on the landing page."""
from __future__ import annotations

import base64
import re
import subprocess
import tempfile

import matplotlib.image
import pandas as pd
import pytest

from system_packages import missing_reason
from workflow_runs import TINY, snakemake

CHROMIUM = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--virtual-time-budget=15000"]


def chromium(*args: str) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="chromium-")
    return subprocess.run([*CHROMIUM, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=180)


def test_html_report_renders_with_figures(tiny_results, tmp_path):
    reason = missing_reason(["chromium"], ["chromium"])
    if reason:
        pytest.skip(f"no headless Chromium: {reason}")
    workdir = tiny_results.parent
    html = tmp_path / "report.html"
    result = snakemake(workdir, "--report", str(html), config=TINY, cores=None)
    assert result.returncode == 0, result.stderr[-3000:]

    shot = tmp_path / "report.png"
    chromium("--window-size=1400,1000", f"--screenshot={shot}", html.as_uri())
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (1000, 1400) and pixels.std() > 0.05  # a rendered page, not a blank one

    dom = chromium("--dump-dom", html.as_uri()).stdout
    assert "Snakemake Report" in dom or "snakemake" in dom.lower()
    figures = sorted((tiny_results / "figures").glob("*.png"))
    assert len(figures) >= 3
    for fig in figures:
        encoded = base64.b64encode(fig.read_bytes()).decode()
        assert fig.name in dom, f"{fig.name} is not listed in the rendered report"
        assert encoded[:400] in dom and encoded[-400:] in dom, f"{fig.name} is not embedded in the rendered report"
    assert "summary.csv" in dom
    # the first page shows the summary: one rendered table per benchmark, captioned with its name
    benchmarks = sorted(pd.read_csv(tiny_results / "summary.csv").benchmark.unique())
    captions = re.findall(r'<table border="1" class="docutils">\s*<caption>(.*?)</caption>', dom)  # rendered, not the script's string
    assert captions == benchmarks and dom.count('<th class="head">speedup vs Full DAS</th>') == len(benchmarks)
