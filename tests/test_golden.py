"""Golden output: the golden image set and the bad-input corpus, scored by `faceqc score` through
a real local Ray with the default profile, give the rows recorded in tests/golden/rows.json.

What must be identical: uri, status, verdict, reasons, the face counts, sizes, whether a row has
an error.  Numbers (quality, components, raw measures, boxes, landmarks, pose) must agree within
1e-4 relative (plus 1e-6 absolute), so that the test holds on any machine of the project's kind.
Left out: mtime (when the files were made), error texts (wording may improve), and the one file
whose status depends on the user (a chmod-000 file, readable by root).

A change that is meant to move scores regenerates the file, and the diff shows what moved:

    FACEQC_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py
"""

from __future__ import annotations

import json
import math
import os

import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from tests.support.corpus import build_corpus, build_golden_images

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "rows.json")
EXACT = ("status", "verdict", "reasons", "num_faces", "primary_face", "width", "height", "size")
SKIP = {"corpus/locked.jpg"}  # its status depends on the user (root reads a chmod-000 file)
RTOL, ATOL = 1e-4, 1e-6

pytestmark = pytest.mark.slow


def _numbers(prefix: str, value, out: dict) -> None:
    """Flatten the numeric leaves of a row's nested values into out[path] = float."""
    if value is None:
        out[prefix] = None
    elif isinstance(value, dict):
        for k in sorted(value):
            _numbers(f"{prefix}.{k}", value[k], out)
    elif isinstance(value, (list, tuple)):
        out[f"{prefix}#len"] = len(value)
        for i, v in enumerate(value):
            _numbers(f"{prefix}[{i}]", v, out)
    elif isinstance(value, (int, float)):
        out[prefix] = float(value)


def golden_row(row: dict, root: str) -> dict:
    key = os.path.relpath(row["uri"], root)
    rec = {"uri": key, **{k: row[k] for k in EXACT}, "has_error": row["error"] is not None}
    nums: dict = {}
    _numbers("quality", row["quality"], nums)
    _numbers("image_iqa", row["image_iqa"], nums)
    _numbers("faces", row["faces"], nums)
    rec["numbers"] = nums
    return rec


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    root = tmp_path_factory.mktemp("golden")
    build_golden_images(root / "golden")
    (root / "corpus").mkdir()
    build_corpus(root / "corpus")
    out = root / "out"
    assert main(["score", str(root / "golden"), str(root / "corpus"), "--out", str(out), "--no-progress"]) == 0
    got = [golden_row(r, str(root)) for r in pq.read_table(str(out)).to_pylist()]
    return sorted((r for r in got if r["uri"] not in SKIP), key=lambda r: r["uri"])


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= RTOL * max(abs(a), abs(b)) + ATOL


def test_rows_match_the_golden_file(rows):
    if os.environ.get("FACEQC_UPDATE_GOLDEN"):
        os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
        with open(GOLDEN, "w") as f:
            json.dump(rows, f, indent=1, sort_keys=True)
            f.write("\n")
    with open(GOLDEN) as f:
        want = json.load(f)
    assert [r["uri"] for r in rows] == [r["uri"] for r in want]
    problems = []
    for got, exp in zip(rows, want):
        for k in (*EXACT, "has_error"):
            if got[k] != exp[k]:
                problems.append(f"{got['uri']}: {k} {got[k]!r} != golden {exp[k]!r}")
        gn, en = got["numbers"], exp["numbers"]
        if gn.keys() != en.keys():
            problems.append(f"{got['uri']}: fields {sorted(gn.keys() ^ en.keys())[:6]} differ")
            continue
        for k in en:
            if not _close(gn[k], en[k]):
                problems.append(f"{got['uri']}: {k} {gn[k]} != golden {en[k]}")
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:40])
