"""`faceqc report`: one static HTML file from a real Ray run, rendered in real headless Chromium.

The demo set (real photos, degradations, a group photo, a face-less image, a truncated upload)
plus a copy of the astronaut under a hostile file name is scored through Ray with the
offline-fast profile; the report is built from the run's output folder.  CI installs Debian's
``chromium`` (.ci/run) and sets FACEQC_REQUIRE_CHROMIUM=1, so there the browser test cannot be
skipped.  The screenshot is kept as an artefact (also copied to /tmp/faceqc-report-screenshot.png).
"""

import base64
import collections
import html
import io
import os
import re
import shutil
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.io.results import read_results as read_run
from pipeline.run import run
from pipeline.schema import COMPONENTS
from pipeline.tools.demo import make_demo_set

pytestmark = pytest.mark.slow  # Ray and a browser: not in make test-fast

HOSTILE = "<script>alert(\"pwn\")&'x'<img src=x onerror=alert(1)>.png"
SCREENSHOT_COPY = "/tmp/faceqc-report-screenshot.png"


@pytest.fixture(scope="module")
def run_dir(ray_local, tmp_path_factory):
    images = tmp_path_factory.mktemp("report") / "images"
    make_demo_set(str(images))
    shutil.copy(images / "astronaut.png", images / HOSTILE)
    out = str(tmp_path_factory.mktemp("report") / "scores")
    run([str(images)], out, load_config(profile="offline-fast"), progress=False)
    return out


@pytest.fixture(scope="module")
def report(run_dir, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("html") / "report.html")
    assert main(["report", run_dir, "--html", path, "--per-gallery", "8"]) == 0
    with open(path, encoding="utf-8") as f:
        return path, f.read()


def _section_ids(text):
    return set(re.findall(r'<section[^>]* id="([^"]+)"', text))


def test_sections_counts_and_plots(run_dir, report):
    _, text = report
    table = pq.read_table(run_dir)
    ids = _section_ids(text)
    assert {"run", "distributions", "relations", "galleries", "gallery-best", "gallery-worst",
            "gallery-borderline-accept", "gallery-borderline-review", "settings"} <= ids
    # one gallery per reason found in the data
    reasons = collections.Counter(r for rs in table.column("reasons").to_pylist() for r in rs)
    assert {"decode_error", "no_face", "multiple_faces"} <= set(reasons)
    assert sum(1 for i in ids if i.startswith("gallery-reason-")) == len(reasons)
    for r, n in reasons.items():
        assert f"Reason: {html.escape(r)}</h3><p class=\"sub\">{n} images" in text
    # counts by status and verdict, and the run's throughput
    for col in ("status", "verdict"):
        for k, n in collections.Counter(table.column(col).to_pylist()).items():
            assert re.search(rf"{re.escape(k)}</td><td class=\"n\">{n}</td>", text), (col, k, n)
    assert "images/s" in text
    # the profile used dlib's 68-point model (iBUG 300-W: non-commercial): the report says so
    assert 'id="noncommercial"' in text and "dlib-shape-predictor-68" in text
    # histograms: quality and every component; two scatter plots
    for name in ("quality",) + COMPONENTS:
        assert f'aria-label="{name}"' in text
    assert 'aria-label="quality vs face size"' in text and 'aria-label="quality vs yaw"' in text
    scored = sum(q is not None for q in table.column("quality").to_pylist())
    assert text.count("<circle") == 2 * scored


def test_every_string_from_the_data_is_escaped(report):
    _, text = report
    assert HOSTILE not in text
    assert html.escape(HOSTILE) in text
    assert "<script" not in text.lower() and "<img src=x" not in text
    # no JavaScript and nothing fetched: a CSP forbids both
    assert "default-src 'none'" in text and "http://" not in text and "https://" not in text


def test_thumbnails_are_embedded_with_the_face_box(report):
    _, text = report
    uris = re.findall(r'src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(uris) >= 8
    # the best gallery's first card is an accepted face: its box is drawn in the accept colour
    best = text[text.index('id="gallery-best"'):]
    data = re.search(r'src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', best).group(1)
    im = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")).astype(int)
    assert max(im.shape[:2]) == 160
    green = (np.abs(im - np.array([46, 125, 50])).sum(axis=2) < 60).sum()
    assert green > 150, green
    # a card shows the face's component breakdown
    assert best.index('<table class="comps">') < best.index("</figure>")


def test_report_refuses_a_missing_run(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope"), "--html", str(tmp_path / "r.html")]) == 2
    assert "results not found" in capsys.readouterr().err


def test_unfinished_run_is_flagged(run_dir, tmp_path):
    d = tmp_path / "partial"
    d.mkdir()
    table, summary = read_run(run_dir)
    first = sorted(summary["files"])[0]
    shutil.copy(os.path.join(run_dir, first), d / first)
    out = str(tmp_path / "partial.html")
    assert main(["report", str(d), "--html", out]) == 0
    assert "did not finish" in open(out, encoding="utf-8").read()


def _chromium():
    for name in (os.environ.get("FACEQC_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    if os.environ.get("FACEQC_REQUIRE_CHROMIUM") == "1":
        pytest.fail("chromium is required (FACEQC_REQUIRE_CHROMIUM=1) but not installed: "
                    "apt-get install -y --no-install-recommends chromium")
    pytest.skip("chromium not installed (apt-get install chromium); CI installs it")


def _browser(args, tmp_path, timeout=180):
    profile = tmp_path / f"chrome-profile-{len(os.listdir(tmp_path))}"
    profile.mkdir()
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_renders_in_headless_chromium(report, tmp_path):
    path, text = report
    url = "file://" + os.path.abspath(path)
    dom = _browser(["--dump-dom", url], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = dom.stdout
    # the browser parsed every section and every thumbnail; the hostile name stayed text
    assert _section_ids(text) <= _section_ids(rendered), _section_ids(text) - _section_ids(rendered)
    assert rendered.count('<img class="thumb"') == text.count('<img class="thumb"') > 0
    assert rendered.count("<svg") == text.count("<svg")
    assert "<script" not in rendered.lower()
    assert html.escape(HOSTILE, quote=False) in rendered

    png = tmp_path / "report.png"
    shot = _browser([f"--screenshot={png}", "--window-size=1280,4000", url], tmp_path)
    assert shot.returncode == 0 and png.exists(), shot.stderr[-2000:]
    shutil.copy(png, SCREENSHOT_COPY)
    im = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert im.shape[:2] == (4000, 1280)
    # not a blank or error page: the header bar, the histogram bars and the photos are painted
    header = im[:40, :, :].reshape(-1, 3).mean(axis=0)
    assert np.abs(header - [31, 42, 55]).sum() < 30, header
    bars = (np.abs(im - np.array([59, 110, 165])).sum(axis=2) < 12).sum()
    assert bars > 2000, bars
    saturated = (im.max(axis=2) - im.min(axis=2) > 40).mean()
    assert saturated > 0.02, saturated
    colours = len(np.unique(im[::2, ::2].reshape(-1, 3), axis=0))
    assert colours > 3000, colours  # photos, not just flat colours and text
