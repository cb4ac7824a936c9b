"""`dvc plots show` renders offline: its page (plots/page.html) carries Vega's scripts. Drawn in
a real headless Chromium whose every network request goes to a dead proxy; the screenshot must
hold charts, while DVC's own page (scripts from a CDN) stays blank under the same conditions."""

import shutil

import numpy as np
import pytest

from conftest import make_project

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def inked_fraction(png) -> float:
    import matplotlib.image

    pixels = matplotlib.image.imread(png)[..., :3]
    return float(np.mean(pixels.min(axis=-1) < 0.9))


def screenshot(project, page, png) -> float:
    project.run(CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=10000",
                "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",  # no network, not even a CDN
                f"--screenshot={png}", "--window-size=1200,1400", page.as_uri())
    return inked_fraction(png)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (Debian: apt-get install chromium)")
def test_the_plots_page_draws_its_charts_with_no_network(tmp_path):
    project = make_project(tmp_path)
    results = project.path / "reports/results"
    results.mkdir(parents=True)
    rows = [f"{d}\tquantile\t{s}\t{m}\t{u}\t{5 - u / 300 + s / 10}" for d in ("a", "b") for s in (0, 1)
            for m in ("train/loss", "validation/action") for u in (100, 200, 300)]
    (results / "training-curves.tsv").write_text("dataset\tkind\tseed\tmetric\tupdate\tvalue\n" + "\n".join(rows) + "\n")
    (results / "scores.tsv").write_text("method\taverage\nTT (quantile)\t70.0\nBC\t80.0\n")

    project.dvc("plots", "show", "-o", "ours")
    page = (project.path / "ours/index.html").read_text()
    assert "cdn.jsdelivr" not in page and "Training curves, every seed" in page
    ours = screenshot(project, project.path / "ours/index.html", tmp_path / "ours.png")

    project.dvc("config", "--unset", "plots.html_template")  # DVC's own page: Vega from its CDN
    project.dvc("plots", "show", "-o", "dvc")
    assert "cdn.jsdelivr" in (project.path / "dvc/index.html").read_text()
    theirs = screenshot(project, project.path / "dvc/index.html", tmp_path / "dvc.png")
    assert theirs < 0.001 < 0.02 < ours, (theirs, ours)  # blank without network; ours: axes, lines, bars
