"""Buckets through a real S3 HTTP API: moto's server mode on 127.0.0.1 (a subprocess started by
the ``moto_s3`` fixture), reached by s3fs exactly as AWS would be.

Covers listing pagination (> 1,000 keys), keys with spaces and non-ASCII characters, an object
that vanishes between listing and reading, manifests whose extra columns reach the output, and
secrets that must never reach logs, summaries or Parquet metadata."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config
from pipeline.io.listing import entries_table, expand_inputs, list_table, read_manifest
from pipeline.io.parts import SUMMARY_NAME
from pipeline.run import run, run_table
from tests.support.s3local import ACCESS_KEY, SECRET_KEY

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ODD_KEYS = ["photos/with space/a b.jpg", "photos/ünïcödé/顔 写真.jpg", "photos/plain/c.jpg",
            "photos/plain/d+e=f&g.jpg", "photos/plain/corrupt.jpg", "photos/plain/gone.jpg"]


def _cfg(s3, **over):
    over.setdefault("input", {})["storage_options"] = s3.storage_options
    return load_config(profile="offline-fast", overrides=over)


@pytest.fixture(scope="module")
def bucket(moto_s3, face_jpegs):
    fs = moto_s3.fs()
    fs.mkdir("faces")
    imgs = list(face_jpegs.values())
    data = {f"faces/{k}": imgs[i] for i, k in enumerate(ODD_KEYS)}
    data["faces/photos/plain/corrupt.jpg"] = imgs[0][: len(imgs[0]) // 3]
    fs.pipe(data)
    return fs


def test_listing_paginates_past_1000_keys(moto_s3):
    fs = moto_s3.fs()
    fs.mkdir("many")
    n = 1050
    fs.pipe({f"many/p/{i:05d}.bin": str(i).encode() for i in range(n)})
    fs.pipe({"many/p/sub/deeper/x.bin": b"x", "many/other/y.bin": b"y"})
    mark = moto_s3.log_size()
    t = list_table("s3://many/p", moto_s3.storage_options)
    assert t.num_rows == n + 1
    uris = t.column("uri").to_pylist()
    assert len(set(uris)) == len(uris) and "s3://many/p/sub/deeper/x.bin" in uris
    assert "s3://many/other/y.bin" not in uris
    assert all(t.column("extra.etag").to_pylist()) and t.column("size").to_pylist()[:3] == [1, 1, 1]
    lists = [p for m, p, _ in moto_s3.requests(mark) if m == "GET" and "list-type=2" in p]
    assert len(lists) >= 2, lists  # the listing really went past one 1,000-key page
    assert "continuation-token" in lists[-1]
    # the Entry path (faceqc score) sees the same objects, and the extension filter counts skips
    stats = {}
    got = expand_inputs(["s3://many/p"], moto_s3.storage_options, extensions=[".jpg"], stats=stats)
    assert got == [] and stats["skipped_by_extension"] == n + 1
    assert len(expand_inputs(["s3://many/p/"], moto_s3.storage_options)) == n + 1


def test_bucket_run_odd_keys_and_vanished_object(moto_s3, bucket, ray_local):
    cfg = _cfg(moto_s3)
    table = entries_table(expand_inputs(["s3://faces/photos"], cfg.input.storage_options))
    assert table.num_rows == len(ODD_KEYS)
    bucket.rm("faces/photos/plain/gone.jpg")  # deleted between listing and reading
    out = "s3://faces/out/run1"
    summary = run_table(table, out, cfg, progress=False)
    assert summary["rows"] == summary["expected_rows"] == len(ODD_KEYS)
    names = bucket.ls("faces/out/run1", detail=False)
    assert f"faces/out/run1/{SUMMARY_NAME}" in names
    assert not any("_faceqc" in n for n in names)  # resume state is gone once committed
    parts = sorted(n.rsplit("/", 1)[1] for n in names if n.endswith(".parquet"))
    assert parts == sorted(summary["files"])
    rows = {}
    for p in parts:
        with bucket.open(f"faces/out/run1/{p}", "rb") as f:
            for r in pq.read_table(f).to_pylist():
                rows[r["uri"]] = r
    assert sorted(rows) == sorted(f"s3://faces/{k}" for k in ODD_KEYS)
    gone = rows["s3://faces/photos/plain/gone.jpg"]
    assert gone["status"] == "read_error" and gone["reasons"] == ["read_error"] and gone["error"]
    assert rows["s3://faces/photos/plain/corrupt.jpg"]["status"] == "decode_error"
    for k in ODD_KEYS[:4]:
        r = rows[f"s3://faces/{k}"]
        assert r["status"] in ("ok", "no_face") and r["width"] == 96, r
        assert r["etag"] and r["size"] > 0  # the listing's key travels with the row
    json.loads(bucket.cat(f"faces/out/run1/{SUMMARY_NAME}"))


def test_manifests_carry_extra_columns(moto_s3, bucket, ray_local, tmp_path):
    uris = [f"s3://faces/{k}" for k in ODD_KEYS[:3]]
    fs = bucket
    table = pa.table({"uri": uris, "label": [1, 0, None], "split": ["train", "val", "train"],
                      "quality": [0.5, 0.25, 1.0], "ts": pa.array([1, 2, 3], pa.timestamp("s"))})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    fs.pipe("faces/manifests/m.parquet", buf.getvalue())
    fs.pipe("faces/manifests/m.csv", ("uri,label,split\n" + "\n".join(f"{u},{i},s{i}" for i, u in enumerate(uris))
                                      + "\n").encode())
    fs.pipe("faces/manifests/m.jsonl", "\n".join(json.dumps({"path": u, "weight": i / 2, "tags": ["a", str(i)]})
                                                 for i, u in enumerate(uris)).encode() + b"\n\n")
    so = moto_s3.storage_options
    csv_entries = read_manifest("s3://faces/manifests/m.csv", so)
    assert [e.extra for e in csv_entries] == [{"label": i, "split": f"s{i}"} for i in range(3)]
    jl = read_manifest("s3://faces/manifests/m.jsonl", so)
    assert [e.uri for e in jl] == uris and jl[1].extra == {"weight": 0.5, "tags": ["a", "1"]}

    cfg = _cfg(moto_s3)
    out = str(tmp_path / "scores")
    summary = run(["s3://faces/manifests/m.parquet"], out, cfg, progress=False)
    assert summary["rows"] == 3
    got = pq.read_table(out)
    assert got.schema.field("label").type == pa.int64() and pa.types.is_timestamp(got.schema.field("ts").type)
    # 'quality' would shadow the score: it is kept as manifest_quality
    assert got.schema.field("quality").type == pa.float32()
    rows = {r["uri"]: r for r in got.to_pylist()}
    assert [rows[u]["label"] for u in uris] == [1, 0, None]
    assert [rows[u]["split"] for u in uris] == ["train", "val", "train"]
    assert [rows[u]["manifest_quality"] for u in uris] == [0.5, 0.25, 1.0]
    out2 = str(tmp_path / "scores_jsonl")
    run(["s3://faces/manifests/m.jsonl"], out2, cfg, progress=False)
    rows2 = {r["uri"]: r for r in pq.read_table(out2).to_pylist()}
    assert [rows2[u]["weight"] for u in uris] == [0.0, 0.5, 1.0]
    assert [rows2[u]["tags"] for u in uris] == [["a", "0"], ["a", "1"], ["a", "2"]]


def _all_text(path: str) -> bytes:
    blob = b""
    for root, _, files in os.walk(path):
        for f in files:
            try:
                with open(os.path.join(root, f), "rb") as fh:
                    blob += fh.read()
            except OSError:
                pass
    return blob


def test_secrets_stay_out_of_logs_summaries_and_parquet(moto_s3, bucket, tmp_path, ray_tmpdir):
    """The CLI in a subprocess, credentials only through --storage-options @file (no AWS
    variables), its own Ray: the secret must not appear in stdout/stderr, in Ray's session logs,
    in the summary, in the Parquet files (data or metadata), or in a failed row's error."""
    opts = tmp_path / "so.json"
    opts.write_text(json.dumps(moto_s3.storage_options))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    ray_tmp = ray_tmpdir
    env.update(RAY_TMPDIR=ray_tmp, NO_PROXY="127.0.0.1,localhost", PYTHONPATH=REPO)
    out = "s3://faces/out/secret-run"
    p = subprocess.run([sys.executable, "-m", "pipeline.cli", "score", "s3://faces/photos", "--out", out,
                        "--profile", "offline-fast", "--storage-options", f"@{opts}", "--no-progress"],
                       cwd=REPO, env=env, capture_output=True, timeout=300)
    text = p.stdout + p.stderr
    assert p.returncode == 0, text.decode(errors="replace")[-3000:]
    # a bad endpoint makes the run fail before work: the error is shown, the secret is not
    bad = dict(moto_s3.storage_options, client_kwargs={"endpoint_url": "http://127.0.0.1:9"},
               config_kwargs={"retries": {"max_attempts": 1}})
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    p2 = subprocess.run([sys.executable, "-m", "pipeline.cli", "score", "s3://faces/photos", "--out", out + "2",
                         "--storage-options", f"@{tmp_path / 'bad.json'}", "--no-progress"],
                        cwd=REPO, env=env, capture_output=True, timeout=300)
    assert p2.returncode == 2 and b"faceqc: error: cannot take the lock s3://faces/out/secret-run2/_lock.json" in p2.stderr
    text += p2.stdout + p2.stderr
    fs = bucket
    blobs = b"".join(fs.cat(p) for p in fs.find("faces/out/secret-run"))
    assert b"decode_error" in blobs  # a failed row's error message is in there too
    summary = json.loads(fs.cat(f"faces/out/secret-run/{SUMMARY_NAME}"))
    assert summary["config"]["input"]["storage_options"] == {"key": "***", "secret": "***", "client_kwargs": "***"}
    logs = _all_text(ray_tmp)
    assert len(logs) > 1000  # Ray did write its session logs there
    for secret in (SECRET_KEY, ACCESS_KEY):
        for where, blob in (("cli output", text), ("bucket output", blobs), ("ray logs", logs)):
            assert secret.encode() not in blob, where
