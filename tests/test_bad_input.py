"""The pipeline's contract on bad input, through the real local Ray pipeline and the CLI.

Every listed file yields exactly one output row whose ``status`` says what happened to it
(ok / no_face / read_error / decode_error / too_large); a failed row has an error message, the
verdict "reject" and the reasons [status].  Bad arguments (missing input, unusable output, a
finished run in --out) stop the job with exit code 2 before any work; a run in which every
file fails exits 1.  The corpus is built at test time from packaged photos (nothing committed).
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.errors import RowError
from pipeline.images import read_file
from pipeline.io.listing import expand_inputs
from pipeline.io.parts import SUMMARY_NAME
from pipeline.run import run
from pipeline.tools import samples
from tests.support.corpus import ANY, IS_ROOT, _write, build_corpus, jpeg_bytes

FAILED = ("read_error", "decode_error", "too_large")


@pytest.fixture(scope="module")
def scored(ray_local, tmp_path_factory):
    base = tmp_path_factory.mktemp("bad")
    corpus, out = base / "corpus", base / "out"
    corpus.mkdir()
    expected, paths = build_corpus(corpus)
    summary = run([str(corpus)], str(out), load_config(), overwrite=False, progress=False)
    rows = pq.read_table(str(out)).to_pylist()
    return {"expected": expected, "paths": paths, "summary": summary, "rows": rows, "out": str(out),
            "by_uri": {r["uri"]: r for r in rows}}


# ------------------------------------------------------------------------------ one row per file
def test_every_file_yields_exactly_one_row(scored):
    uris = [r["uri"] for r in scored["rows"]]
    assert len(uris) == len(set(uris)), collections.Counter(uris).most_common(3)
    assert set(uris) == set(scored["expected"])
    assert scored["paths"]["folder"] not in uris  # the directory itself is not scored
    assert scored["paths"]["notes"] in uris  # a text file is a row too (decode_error)


def test_status_per_file(scored):
    wrong = {os.path.basename(u): (scored["by_uri"][u]["status"], want, scored["by_uri"][u]["error"])
             for u, want in scored["expected"].items()
             if want is not ANY and scored["by_uri"][u]["status"] != want}
    assert not wrong, f"(got, expected, error) per file: {wrong}"


def test_unreadable_files_are_read_errors(scored):
    by, p = scored["by_uri"], scored["paths"]
    assert "not a regular file" in by[p["socket"]]["error"]
    assert "not a regular file" in by[p["fifo"]]["error"]
    assert "broken symlink" in by[p["broken_link"]]["error"]
    locked = by[p["locked"]]
    if IS_ROOT:  # chmod 000 does not stop root from reading
        assert locked["status"] in ("ok", "no_face")
    else:
        assert locked["status"] == "read_error" and "permission denied" in locked["error"]


def test_failed_rows_explain_themselves(scored):
    for r in scored["rows"]:
        name = os.path.basename(r["uri"])
        if r["status"] in FAILED:
            assert isinstance(r["error"], str) and r["error"].strip(), name
            assert r["verdict"] == "reject", name
            assert r["reasons"] == [r["status"]], name
            assert r["quality"] is None and r["faces"] == [] and r["width"] is None, name
        else:
            assert r["status"] in ("ok", "no_face"), (name, r["status"], r["error"])
            assert r["error"] is None, name
            assert r["width"] >= 1 and r["height"] >= 1, name
            if r["status"] == "no_face":
                assert r["verdict"] == "reject" and r["reasons"] == ["no_face"], name
            else:
                assert r["verdict"] in ("accept", "review", "reject") and r["quality"] is not None, name
                assert r["num_faces"] >= 1 and len(r["faces"]) == r["num_faces"], name


def test_decoded_sizes_and_orientation(scored):
    by, p = scored["by_uri"], scored["paths"]
    stored_w, stored_h = Image.open(p["exif"]).size
    assert (stored_w, stored_h) == (512, 400)
    assert (by[p["exif"]]["width"], by[p["exif"]]["height"]) == (stored_h, stored_w)  # turned upright
    assert (by[p["tiny"]]["width"], by[p["tiny"]]["height"]) == (1, 1)
    for role in ("good", "grey", "rgba", "grey16", "cmyk"):
        assert (by[p[role]]["width"], by[p[role]]["height"]) == (512, 512), role
    assert by[p["unicode"]]["width"] == 112


# ------------------------------------------------------------------------------ outputs
def test_summary_matches_rows(scored):
    path = os.path.join(scored["out"], SUMMARY_NAME)
    assert os.path.isfile(path)
    with open(path, encoding="utf-8") as f:
        summary = json.load(f)
    statuses = collections.Counter(r["status"] for r in scored["rows"])
    verdicts = collections.Counter(r["verdict"] for r in scored["rows"])
    assert summary["status_counts"] == dict(statuses) == scored["summary"]["status_counts"]
    assert summary["verdict_counts"] == dict(verdicts)
    assert summary["rows"] == summary["expected_rows"] == len(scored["expected"])
    assert "error" not in summary
    assert sorted(summary["files"]) == sorted(f for f in os.listdir(scored["out"]) if f.endswith(".parquet"))


def test_parquet_reads_with_pandas_and_duckdb(scored):
    import duckdb
    import pandas as pd

    out, n = scored["out"], len(scored["expected"])
    df = pd.read_parquet(out)
    assert len(df) == n and set(df["uri"]) == set(scored["expected"])
    pattern = os.path.join(out, "*.parquet").replace("'", "''")
    con = duckdb.connect()
    try:
        assert con.execute(f"SELECT count(*) FROM read_parquet('{pattern}')").fetchall() == [(n,)]
    finally:
        con.close()
    parts = [f for f in os.listdir(out) if f.endswith(".parquet")]
    assert parts
    for f in parts:
        meta = pq.read_schema(os.path.join(out, f)).metadata
        assert b"faceqc.schema_version" in meta and b"faceqc.models" in meta
        assert isinstance(json.loads(meta[b"faceqc.models"]), list)


# ------------------------------------------------------------------------------ without Ray
def test_file_over_max_bytes_is_too_large(tmp_path):
    p = _write(tmp_path, "big.jpg", jpeg_bytes(Image.new("RGB", (64, 64), (10, 20, 30))))
    cfg = load_config(overrides={"decode": {"max_bytes": 100}})
    with pytest.raises(RowError) as e:
        read_file(p, None, cfg.decode.max_bytes)
    assert e.value.status == "too_large" and "max_bytes" in str(e.value)


def test_explicit_names_are_taken_literally(tmp_path):
    """A named file holding glob characters is that file, not a pattern matching others."""
    literal = _write(tmp_path, "photo [1].jpg", b"x")
    _write(tmp_path, "photo 1.jpg", b"y")  # what the pattern "photo [1].jpg" would match
    colons = _write(tmp_path, "a::b.jpg", b"z")
    assert [e.uri for e in expand_inputs([literal, colons])] == [literal, colons]
    assert read_file(colons, None, 1000) == b"z"


# ------------------------------------------------------------------------------ CLI
def _parquets(out) -> list:
    return [f for f in os.listdir(out) if f.endswith(".parquet")] if os.path.isdir(out) else []


def test_cli_missing_input_fails_before_work(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["score", str(tmp_path / "no-such-dir"), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "input not found" in err and "no-such-dir" in err
    assert not _parquets(out) and not (out / SUMMARY_NAME).exists()


@pytest.mark.slow
def test_cli_missing_input_exit_code_subprocess(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "faceqc")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "pipeline.cli"]
    p = subprocess.run(cmd + ["score", str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "input not found" in p.stderr


def test_cli_unwritable_output(tmp_path, capsys):
    src = _write(tmp_path, "in/a.jpg", jpeg_bytes(Image.fromarray(samples.tom_hanks())))
    blocker = _write(tmp_path, "blocker", b"a regular file")
    assert main(["score", src, "--out", os.path.join(blocker, "sub"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "not writable" in err and "blocker" in err
    assert main(["score", src, "--out", blocker, "--no-progress"]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_cli_exit_codes(ray_local, tmp_path, capsys):
    good = _write(tmp_path, "good/hanks.jpg", jpeg_bytes(Image.fromarray(samples.tom_hanks())))
    out = str(tmp_path / "out")
    assert main(["score", os.path.dirname(good), "--out", out, "--no-progress"]) == 0
    assert os.path.isfile(os.path.join(out, SUMMARY_NAME)) and _parquets(out)
    capsys.readouterr()

    # a finished run in --out: refused before any work, and left as it was
    before = sorted(_parquets(out))
    assert main(["score", os.path.dirname(good), "--out", out, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "already holds a finished run" in err and "--overwrite" in err
    assert sorted(_parquets(out)) == before

    # --overwrite replaces it (no rows left over from the first run)
    assert main(["score", os.path.dirname(good), "--out", out, "--no-progress", "--overwrite"]) == 0
    assert pq.read_table(out).num_rows == 1

    bad = tmp_path / "bad"
    _write(bad, "empty.jpg", b"")
    _write(bad, "junk.png", b"\x89PNG not really")
    bad_out = str(tmp_path / "bad_out")
    capsys.readouterr()
    assert main(["score", str(bad), "--out", bad_out, "--no-progress"]) == 1
    assert "every input failed" in capsys.readouterr().err
    rows = pq.read_table(bad_out).to_pylist()
    assert sorted(r["status"] for r in rows) == ["decode_error", "decode_error"]


# ------------------------------------------------------------------------------ decode backends
def test_batched_decoder_agrees_with_the_default(tmp_path):
    """decode.backend torchvision (batched torchvision.io.decode_jpeg: nvJPEG on a GPU, libjpeg-
    turbo here) gives the default backend's pixels and statuses on every file of the corpus;
    a truncated JPEG in the batch makes the batch call fail, and the batch then goes one by one."""
    from pipeline.stages.decode import DecodeStage

    _, paths = build_corpus(tmp_path)
    # two batches: one with only plain JPEGs, one mixing every kind of file
    plain = [paths[k] for k in ("good", "unicode", "colons", "brackets")]
    mixed = [p for k, p in paths.items() if k not in ("folder",)]
    stages = {b: DecodeStage(load_config(overrides={"decode": {"backend": b}})) for b in ("opencv", "torchvision")}
    for st in stages.values():
        st.setup()
    assert type(stages["torchvision"].decoder).__name__ == "TorchJpeg"
    for uris in (plain, mixed):
        batch = {"uri": np.array(uris, dtype=object)}
        a, b = stages["opencv"].process(dict(batch)), stages["torchvision"].process(dict(batch))
        assert list(b["status"]) == list(a["status"]), list(zip(uris, a["status"], b["status"]))
        assert list(b["error"]) == list(a["error"])
        for x, y, u in zip(a["image"], b["image"], uris):
            assert x.shape == y.shape and np.array_equal(x, y), u
    assert {s for s in a["status"]} >= {"ok", "decode_error", "too_large", "read_error"}


def test_decoder_backend_config_is_checked():
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="decode.backend: 'nvjpeg' is unknown"):
        load_config(overrides={"decode": {"backend": "nvjpeg"}})
    with pytest.raises(ConfigError, match="needs decode.backend torchvision"):
        load_config(overrides={"decode": {"resources": {"num_gpus": 0.1}}})
