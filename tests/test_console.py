"""What a person reads while a run goes: progress in images with a rate, the summary, where Ray's
logs are, and no warning from Ray on a healthy folder.  Runs the real `faceqc` command in a
subprocess (stdout is a pipe, as in CI and `ray job logs`: one progress line per interval)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from PIL import Image

from pipeline.tools import samples

pytestmark = pytest.mark.slow


def _faceqc(*args, env=None, timeout=300):
    exe = os.path.join(os.path.dirname(sys.executable), "faceqc")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "pipeline.cli"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


def test_a_healthy_run_prints_progress_in_images_and_no_ray_warning(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    for name, img in samples.demo_faces().items():
        Image.fromarray(img).save(src / f"{name}.jpg", quality=90)
    n = len(os.listdir(src))
    p = _faceqc("score", str(src), "--out", str(tmp_path / "out"), "--profile", "offline-fast")
    text = p.stdout + p.stderr
    assert p.returncode == 0, text
    assert "WARNING" not in text and "Traceback" not in text, text
    assert "token" not in text.lower(), text  # Ray's token-authentication notice went to its log file
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("scored ")]
    assert lines, p.stdout
    assert re.fullmatch(rf"scored {n} / {n} images \(100%\), [\d.]+ images/s, \d+[smh]\S* elapsed", lines[-1]), lines
    logs = re.search(r"logs   : Ray's logs are in (\S+)", p.stdout)
    assert logs and os.path.isdir(logs.group(1)), p.stdout
    # what Ray said went there instead of the console
    assert os.path.isfile(os.path.join(logs.group(1), "driver.log"))


def test_progress_can_be_switched_off(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    Image.fromarray(samples.astronaut()).save(src / "a.jpg")
    p = _faceqc("score", str(src), "--out", str(tmp_path / "out"), "--profile", "offline-fast", "--no-progress")
    assert p.returncode == 0, p.stderr
    assert "scored " not in p.stdout and "1 images ->" in p.stdout
