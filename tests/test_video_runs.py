"""Clips through the real local Ray pipeline: a folder of photos and clips scored together (IQA as
an actor pool, so blocks of frames reach the driver in any order), one row per file, DuckDB over
the three outputs, resume after a killed attempt, nightly runs, the crop export with hostile
names, the report's clip section and the CLI."""

from __future__ import annotations

import json
import os
import shutil

import duckdb
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.executor import LocalExecutor
from pipeline.fs import join_uri
from pipeline.io.listing import expand_inputs
from pipeline.io.parts import STATE_DIR, SUMMARY_NAME, write_table_atomic
from pipeline.run import PLAN_NAME, RunState, plan_fingerprint, run
from pipeline.tools import samples
from tests.support import videos as V
from tests.support.corpus import _write, jpeg_bytes

pytest.importorskip("av")

OVERRIDES = {"iqa": {"resources": {"actors": True, "num_cpus": 0.5, "concurrency": 1}},
             "decode": {"resources": {"batch_size": 4}}}


def _cfg():
    return load_config(profile="offline-fast", overrides=OVERRIDES)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("src"))
    V.write_video(os.path.join(root, "clips", "cut.mp4"), V.cut_scene())
    V.write_video(os.path.join(root, "clips", "blur.mkv"), V.blur_scene())
    V.write_video(os.path.join(root, "clips", "rotated.mov"), V.rotated_scene(), rotation=90)
    full = V.write_video(os.path.join(root, "full.mp4"), V.small_scene(30))
    V.truncate(full, os.path.join(root, "clips", "broken.mp4"))
    os.remove(full)
    V.write_audio(os.path.join(root, "clips", "voice.m4a"))
    _write(root, "photos/astronaut.jpg", jpeg_bytes(Image.fromarray(samples.astronaut())))
    _write(root, "photos/hanks.jpg", jpeg_bytes(Image.fromarray(samples.tom_hanks())))
    _write(root, "photos/..hidden name.jpg", jpeg_bytes(Image.fromarray(samples.t1_faces()[0])))
    _write(root, "photos/a\nnew line.jpg", jpeg_bytes(Image.fromarray(samples.t1_faces()[2])))
    return root


@pytest.fixture(scope="module")
def scored(ray_local, source, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runs") / "scores")
    summary = run([source], out, _cfg(), progress=False)
    return out, summary


def _q(sql):
    con = duckdb.connect()
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_one_row_per_file_and_clip_outputs(scored, source):
    out, summary = scored
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(source) for f in fs)
    rows = {r[0]: r for r in _q(f"SELECT uri, media, status, frames, tracks, shots, verdict FROM read_parquet('{out}/*.parquet')")}
    assert sorted(rows) == files and summary["rows"] == len(files) and "error" not in summary
    clips = {os.path.basename(u): r for u, r in rows.items() if r[1] == "video"}
    assert set(clips) == {"cut.mp4", "blur.mkv", "rotated.mov", "broken.mp4", "voice.m4a"}
    assert clips["cut.mp4"][2:6] == ("ok", 12, 2, 2)
    assert clips["broken.mp4"][2] == "decode_error" and clips["voice.m4a"][2] == "decode_error"
    assert all(r[1] == "image" for u, r in rows.items() if "/photos/" in u)
    # frames/: one row per sampled frame; tracks/: one row per track; DuckDB reads all three
    per_clip = dict(_q(f"SELECT uri, count(*) FROM read_parquet('{out}/frames/*.parquet') GROUP BY uri"))
    tracks = dict(_q(f"SELECT uri, count(*) FROM read_parquet('{out}/tracks/*.parquet') GROUP BY uri"))
    for u, r in rows.items():
        if r[1] == "video" and r[2] == "ok":
            assert per_clip[u] == r[3] and tracks[u] == r[4], u
    assert sum(per_clip.values()) == summary["video"]["frames_scored"] == 12 + 16 + 6
    assert summary["video"]["clips_scored"] == 5 and summary["video"]["frames_per_second"] > 0
    # side parts carry the name of the main part holding their clips, and the summary lists them
    for folder in ("frames", "tracks"):
        names = sorted(f for f in os.listdir(os.path.join(out, folder)) if f.endswith(".parquet"))
        assert names == summary["video"]["files"][folder] and set(names) <= set(summary["files"])
    # the worked example's query
    best = _q(f"SELECT uri, track, quality, best_t FROM read_parquet('{out}/tracks/*.parquet') "
              f"WHERE verdict = 'accept' ORDER BY quality DESC")
    assert best and all(0 <= q <= 100 for _, _, q, _ in best)


def test_ray_matches_in_process(scored, source):
    out, _ = scored
    ray_rows = {r["uri"]: r for r in pq.read_table(os.path.join(out, _main_parts(out)[0])).to_pylist()}
    for r in pq.ParquetDataset([os.path.join(out, p) for p in _main_parts(out)]).read().to_pylist():
        ray_rows[r["uri"]] = r
    clips = [u for u, r in ray_rows.items() if r["media"] == "video"]
    local = {r["uri"]: r for r in LocalExecutor(_cfg()).score_entries(expand_inputs(clips)).to_pylist()}
    for u in clips:
        a, b = ray_rows[u], local[u]
        assert (a["status"], a["verdict"], a["reasons"], a["frames"], a["tracks"]) == \
            (b["status"], b["verdict"], b["reasons"], b["frames"], b["tracks"]), u
        assert (a["quality"] is None) == (b["quality"] is None)
        if a["quality"] is not None:
            assert abs(a["quality"] - b["quality"]) < 1e-3, u


def _main_parts(out):
    return sorted(f for f in os.listdir(out) if f.startswith("part-") and f.endswith(".parquet"))


def test_resume_redoes_only_the_lost_part(scored, source, tmp_path):
    """A killed attempt: the summary never written, the main part holding a clip lost (its frames/
    and tracks/ parts already written), and a stray frames/ part of a write that landed late.
    Started again, the run scores only the lost part's files; the strays are gone and every clip
    has its frames once."""
    out0, summary0 = scored
    out = str(tmp_path / "resume")
    shutil.copytree(out0, out)
    cfg = _cfg()
    so = cfg.input.storage_options
    table = pq.read_table(os.path.join(out, _main_parts(out)[0]), columns=["uri"])  # any order will do
    from pipeline.io.listing import entries_table

    plan = entries_table(expand_inputs([source]))
    args = {"sources": [source], "limit": None, "extensions": []}
    RunState(plan_fingerprint(plan), cfg.fingerprint(), attempt=1, args=args, rows=plan.num_rows,
             started_at="x").save(out, so)
    write_table_atomic(join_uri(join_uri(out, STATE_DIR), PLAN_NAME), plan, so)
    os.remove(os.path.join(out, SUMMARY_NAME))
    lost = next(p for p in summary0["video"]["files"]["frames"])
    lost_uris = set(pq.read_table(os.path.join(out, lost), columns=["uri"]).column("uri").to_pylist())
    os.remove(os.path.join(out, lost))  # the main part: its frames/ and tracks/ parts stay behind
    stray = "part-000000000000000000000000.parquet"
    shutil.copy(os.path.join(out, "frames", lost), os.path.join(out, "frames", stray))
    del table
    s = run([source], out, cfg, progress=False)
    assert s["resume"]["attempt"] == 2 and s["resume"]["rows_scored"] == len(lost_uris)
    assert s["rows"] == summary0["rows"] and "error" not in s
    assert not os.path.exists(os.path.join(out, "frames", stray))
    assert sorted(f for f in os.listdir(os.path.join(out, "frames")) if f.endswith(".parquet")) == \
        s["video"]["files"]["frames"]
    dup = _q(f"SELECT uri, t, count(*) c FROM read_parquet('{out}/frames/*.parquet') GROUP BY uri, t HAVING c > 1")
    assert dup == []
    n = _q(f"SELECT count(*) FROM read_parquet('{out}/frames/*.parquet')")[0][0]
    assert n == summary0["video"]["frames_scored"]
    assert s["video"]["clips_scored"] == sum(1 for u in lost_uris if "/clips/" in u)


def test_export_faces_with_hostile_names(scored, tmp_path, capsys):
    out, _ = scored
    dest = str(tmp_path / "faces")
    assert main(["export", out, "--faces", dest, "--size", "128", "--verdict", "accept,review",
                 "--profile", "offline-fast"]) == 0
    assert "face crops of 128 px" in capsys.readouterr().out
    man = pq.read_table(os.path.join(dest, "manifest.parquet")).to_pylist()
    crops = [m["crop"] for m in man if m["crop"]]
    assert crops and len(set(crops)) == len(crops) and all(m["error"] is None for m in man)
    assert {m["media"] for m in man} == {"image", "video"}
    names = {os.path.basename(m["uri"]): m for m in man}
    assert "a\nnew line.jpg" in names and "..hidden name.jpg" in names  # hostile names, exported safely
    for root, _, files in os.walk(dest):
        assert os.path.realpath(root).startswith(os.path.realpath(dest))
        for f in files:
            assert f == "manifest.parquet" or f in crops
    assert len(os.listdir(dest)) == len(crops) + 1
    for m in man:
        if m["crop"]:
            im = Image.open(os.path.join(dest, m["crop"]))
            assert im.size == (128, 128)
        if m["media"] == "video":
            assert m["t"] is not None and m["track"] is not None and m["frame_quality"] is not None


def test_report_has_a_clip_section(scored, tmp_path):
    out, _ = scored
    html = str(tmp_path / "r.html")
    assert main(["report", out, "--html", html, "--profile", "offline-fast"]) == 0
    page = open(html, encoding="utf-8").read()
    assert 'id="clips"' in page and 'href="#clips"' in page and "cut.mp4" in page
    assert page.count('aria-label="timeline"') >= 3 and "best: " in page and "worst: " in page
    assert "<script" not in page


def test_cli_explain_a_clip(ray_local, source, tmp_path, capsys):
    png = str(tmp_path / "timeline.png")
    assert main(["explain", os.path.join(source, "clips", "cut.mp4"), "--profile", "offline-fast", "--save", png]) == 0
    text = capsys.readouterr().out
    for word in ("shots: 2", "tracks: 2", "*track 0", "frames:", "timeline written"):
        assert word in text
    assert Image.open(png).size == (960, 360)
    assert main(["explain", os.path.join(source, "clips", "voice.m4a"), "--profile", "offline-fast"]) == 1
    assert "no video stream" in capsys.readouterr().out


def test_nightly_rescores_only_the_changed_clip(ray_local, tmp_path):
    from pipeline.tools.nightly import nightly

    src, out = tmp_path / "src", str(tmp_path / "night")
    V.write_video(str(src / "a.mp4"), V.small_scene(20))
    V.write_video(str(src / "b.mp4"), V.cut_scene())
    _write(str(src), "p.jpg", jpeg_bytes(Image.fromarray(samples.astronaut())))
    cfg = _cfg()
    s1 = nightly(str(src), out, cfg, progress=False, now=1_000_000)
    assert s1["rows"] == 3 and s1["changes"]["new"] == 3
    # b.mp4 changes (another clip under the same name); a.mp4 and the photo do not
    V.write_video(str(src / "b.mp4"), V.blur_scene())
    os.utime(str(src / "b.mp4"), (2_000_000, 2_000_000))
    s2 = nightly(str(src), out, cfg, progress=False, now=1_000_100)
    assert s2["changes"]["changed"] == 1 and s2["rows"] == 1 and s2["unchanged"] == 2
    rdir = os.path.join(out, "runs", f"run_id={s2['run_id']}", "scores")
    assert os.listdir(os.path.join(rdir, "frames")) and os.listdir(os.path.join(rdir, "tracks"))
    latest = os.path.join(out, "latest")
    tracks = pq.read_table(os.path.join(latest, "tracks.parquet")).to_pylist()
    frames = pq.read_table(os.path.join(latest, "frames.parquet")).to_pylist()
    b = str(src / "b.mp4")
    assert {t["run_id"] for t in tracks if t["uri"] == b} == {s2["run_id"]}
    assert {t["run_id"] for t in tracks if t["uri"] != b} == {s1["run_id"]}
    assert sum(1 for f in frames if f["uri"] == b) == 16  # the new clip's frames only (8 s at 2 fps)
    view = pq.read_table(os.path.join(latest, "quality.parquet")).to_pylist()
    assert [r["frames"] for r in view if r["uri"] == b] == [16]
    marker = json.load(open(os.path.join(latest, "_view.json")))
    assert marker["run_id"] == s2["run_id"]
