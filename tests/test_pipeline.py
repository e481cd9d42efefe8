"""End to end through a real local Ray: the demo set in, Parquet and a summary out."""

import json
import os

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline import SCHEMA_VERSION
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.executor import LocalExecutor
from pipeline.io.listing import expand_inputs
from pipeline.run import run
from pipeline.schema import BASE_SCHEMA, COMPONENTS
from tests.support.corpus import build_golden_images


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo") / "images"
    build_golden_images(str(d))
    return str(d)


@pytest.fixture(scope="module")
def scored(ray_local, demo_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("out") / "scores")
    summary = run([demo_dir], out, load_config(), progress=False)
    return out, summary


def test_one_row_per_file_and_summary_last(scored, demo_dir):
    out, summary = scored
    files = sorted(os.path.join(demo_dir, f) for f in os.listdir(demo_dir))
    table = pq.read_table(out)
    assert sorted(table.column("uri").to_pylist()) == files
    assert summary["rows"] == len(files) == summary["expected_rows"]
    on_disk = json.load(open(os.path.join(out, "_summary.json")))
    assert on_disk["status_counts"] == summary["status_counts"]
    assert sum(on_disk["verdict_counts"].values()) == len(files)
    assert {m["id"] for m in on_disk["models"]} >= {"dlib-hog-frontal", "dlib-shape-predictor-5"}
    assert all(m["licence"] and m["source"] for m in on_disk["models"])
    assert on_disk["images_per_second"] > 0 and on_disk["versions"]["ray"]
    # every part file is listed in the summary: a reader trusts only those
    assert sorted(on_disk["files"]) == sorted(f for f in os.listdir(out) if f.endswith(".parquet"))


def test_output_contract(scored):
    out, _ = scored
    table = pq.read_table(out)
    for field in BASE_SCHEMA:
        assert table.schema.field(field.name).type == field.type, field.name
    meta = pq.read_schema(os.path.join(out, _first_part(out))).metadata
    assert meta[b"faceqc.schema_version"] == SCHEMA_VERSION.encode()
    assert json.loads(meta[b"faceqc.models"])[0]["licence"]
    rows = {os.path.basename(r["uri"]): r for r in table.to_pylist()}
    ok = rows["astronaut.png"]
    assert ok["status"] == "ok" and ok["error"] is None and ok["num_faces"] == 1
    assert ok["primary_face"] == 0 and 0 <= ok["quality"] <= 100 and ok["verdict"] == "accept"
    face = ok["faces"][0]
    assert len(face["bbox"]) == 4 and len(face["landmarks"]) == 5 and face["inter_eye_px"] > 20
    assert set(face["components"]) == set(COMPONENTS)
    assert abs(face["quality"] - ok["quality"]) < 1e-6
    # quality is explained exactly by its component scores
    prod = np.prod([v / 100 for v in face["components"].values() if v is not None]) * 100
    assert abs(prod - face["quality"]) < 0.01
    group = rows["group_t1.jpg"]
    assert group["num_faces"] >= 3 and "multiple_faces" in group["reasons"]
    assert rows["no_face_gradient.png"]["status"] == "no_face"
    assert rows["no_face_gradient.png"]["quality"] is None and rows["no_face_gradient.png"]["verdict"] == "reject"
    bad = rows["corrupt_upload.jpg"]
    assert bad["status"] == "decode_error" and bad["error"] and bad["reasons"] == ["decode_error"]
    for name in ("astronaut_blur_sigma4.jpg", "astronaut_jpeg_q8.jpg", "astronaut_overexposed.png",
                 "astronaut_tiny_x0.2.png"):
        r = rows[name]
        assert r["quality"] is None or r["quality"] < ok["quality"] - 20, (name, r["quality"])


def _first_part(out):
    return sorted(f for f in os.listdir(out) if f.endswith(".parquet"))[0]


def test_duckdb_and_pandas_read_nested_output(scored):
    out, _ = scored
    con = duckdb.connect()
    n, accepted = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE verdict = 'accept') FROM read_parquet('{out}/*.parquet')").fetchone()
    assert n > 0 and accepted > 0
    yaw = con.execute(f"SELECT faces[primary_face + 1].yaw FROM read_parquet('{out}/*.parquet') "
                      f"WHERE primary_face IS NOT NULL").fetchall()
    assert len(yaw) > 0
    df = pq.read_table(out).to_pandas()
    assert len(df) == n and "reasons" in df.columns


def test_ray_matches_single_process_loop(scored, demo_dir):
    out, _ = scored
    ray_rows = {r["uri"]: r["quality"] for r in pq.read_table(out, columns=["uri", "quality"]).to_pylist()}
    loop_rows = {r["uri"]: r["quality"] for r in
                 LocalExecutor(load_config()).score_entries(expand_inputs([demo_dir])).to_pylist()}
    assert ray_rows.keys() == loop_rows.keys()
    for k in ray_rows:
        assert (ray_rows[k] is None) == (loop_rows[k] is None)
        if ray_rows[k] is not None:
            assert abs(ray_rows[k] - loop_rows[k]) < 1e-4, k


def test_actor_mode_and_limit(ray_local, demo_dir, tmp_path):
    """GPU-tier stages run as actor pools; the same stage code must work that way."""
    cfg = load_config(overrides={
        "iqa": {"resources": {"actors": True, "num_cpus": 0.5, "concurrency": 1}},
        "fiqa": {"resources": {"actors": True, "num_cpus": 0.5, "concurrency": [1, 1]}},
    })
    out = str(tmp_path / "o")
    summary = run([demo_dir], out, cfg, limit=5, progress=False)
    assert summary["rows"] == 5
    assert pq.read_table(out).num_rows == 5


def test_cli_score_refuses_to_overwrite_and_explain_saves_png(scored, demo_dir, tmp_path, capsys):
    out, _ = scored
    assert main(["score", demo_dir, "--out", out, "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    png = str(tmp_path / "explained.png")
    assert main(["explain", os.path.join(demo_dir, "group_t1.jpg"), "--save", png]) == 0
    text = capsys.readouterr().out
    for word in ("quality", "verdict", "sharpness", "resolution", "yaw", "roll"):
        assert word in text
    from PIL import Image

    im = Image.open(png)
    assert im.size == (1280, 886)
