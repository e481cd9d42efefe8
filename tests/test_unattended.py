"""Nightly runs nobody watches: one run per output (a lock on local disks and on S3), rescoring
or re-fusing when settings or models change, storage faults retried through a fault-injecting
proxy in front of a real S3 HTTP server, readers that never see a run's uncommitted part files,
and listings that stream (a million objects of a fake store)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.errors import RunError
from pipeline.io import retry
from pipeline.io.lock import LOCK_NAME, LockHeld, RunLock
from pipeline.tools.nightly import changed_settings, committed_files, diff, fingerprint, nightly
from tests.support.faultproxy import FaultProxy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HOLDER = """
import sys, time
from pipeline.io.lock import RunLock
lock = RunLock(sys.argv[1], {}, "faceqc nightly", lease=60, heartbeat=1).acquire()
print("held", flush=True)
time.sleep(600)
"""


def _cfg(s3=None, **over):
    if s3 is not None:
        over.setdefault("input", {})["storage_options"] = s3.storage_options
    return load_config(profile="offline-fast", overrides=over)


def _stale_record(age: float, host: str = "another-host") -> bytes:
    return json.dumps({"host": host, "pid": 4242, "command": "faceqc nightly", "started_at": "2026-01-01T00:00:00Z",
                       "heartbeat": time.time() - age, "lease_s": 60, "token": "someone-else"}).encode()


def _race(out: str, so: dict, n: int = 6) -> list:
    """n runs that find the same stale lock at once: how many of them got it."""
    won, barrier = [], threading.Barrier(n)

    def take():
        lock = RunLock(out, so, "faceqc nightly", lease=60, heartbeat=30)
        barrier.wait()
        try:
            won.append(lock.acquire())
        except LockHeld:
            pass

    threads = [threading.Thread(target=take) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won


# ------------------------------------------------------------------------------ 1. the lock
@pytest.mark.slow
def test_lock_on_a_local_disk(tmp_path, capsys):
    src, out = tmp_path / "src", str(tmp_path / "qc")
    src.mkdir()
    (src / "a.jpg").write_bytes(b"x")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, out], cwd=REPO, stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": REPO})
    try:
        assert holder.stdout.readline().strip() == b"held"
        # a second nightly and a score on the same output stop before any work, naming the holder
        for argv in (["nightly", "--source", str(src), "--out", out], ["score", str(src), "--out", out]):
            assert main(argv) == 2
            err = capsys.readouterr().err.strip()
            assert err.count("\n") == 0 and err.startswith("faceqc: error: output ")
            assert f"host {socket.gethostname()}, pid {holder.pid}, started 20" in err and "faceqc nightly" in err
        assert sorted(os.listdir(out)) == [LOCK_NAME, LOCK_NAME + ".guard"]  # nothing listed, planned or written
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    # the holder died: its lock is stale at once (same host, its pid is gone)
    with RunLock(out, {}, "faceqc nightly") as lock:
        assert lock.taken_over["pid"] == holder.pid and "is gone" in lock.taken_over["reason"]
    assert not os.path.exists(os.path.join(out, LOCK_NAME))  # released
    # a holder elsewhere whose lease ran out without a heartbeat; one that beats is kept
    path = os.path.join(out, LOCK_NAME)
    with open(path, "wb") as f:
        f.write(_stale_record(age=5))
    with pytest.raises(LockHeld, match="host another-host, pid 4242"):
        RunLock(out, {}).acquire()
    with open(path, "wb") as f:
        f.write(_stale_record(age=120))
    won = _race(out, {})
    assert len(won) == 1 and "no heartbeat for 12" in won[0].taken_over["reason"]
    won[0].release()


def test_a_run_that_cannot_confirm_its_lock_past_the_lease_never_commits(tmp_path):
    """check() before a commit refreshes the lock by a conditional write: taken over -> RunError;
    the store unreachable -> commit only while the last confirmed heartbeat is within the lease."""
    out = str(tmp_path / "qc")
    lock = RunLock(out, {}, "faceqc nightly", lease=60, heartbeat=3600).acquire()
    try:
        first = lock.etag
        lock.check()  # held: the check itself is a heartbeat
        assert lock.etag != first and not lock.lost

        def unreachable(*a, **k):
            raise ConnectionResetError("store unreachable")

        real = lock.store.replace
        lock.store.replace = unreachable
        lock.check()  # confirmed moments ago: within the lease, the run may commit
        lock.confirmed = time.time() - 61
        with pytest.raises(RunError, match="could not be confirmed for 6[0-9] s .lease 60 s"):
            lock.check()
        lock.store.replace = real
        # another run takes the lock over while this one works: its check refuses the commit
        path = os.path.join(out, LOCK_NAME)
        with open(path, "wb") as f:
            f.write(_stale_record(age=0))
        with pytest.raises(RunError, match="taken over by host another-host"):
            lock.check()
    finally:
        lock.release()


def test_lock_on_s3_by_conditional_writes(moto_s3):
    fs = moto_s3.fs()
    fs.mkdir("locks")
    so, out = moto_s3.storage_options, "s3://locks/qc"
    mark = moto_s3.log_size()
    a = RunLock(out, so, "faceqc nightly", lease=60, heartbeat=0.3).acquire()
    first = json.loads(fs.cat(f"locks/qc/{LOCK_NAME}"))
    time.sleep(1.0)
    beat = json.loads(fs.cat(f"locks/qc/{LOCK_NAME}"))
    assert beat["token"] == first["token"] and beat["heartbeat"] > first["heartbeat"]  # it heartbeats
    with pytest.raises(LockHeld, match=f"pid {os.getpid()}, started 20"):
        RunLock(out, so).acquire()
    # the CLI: exit 2, one line, nothing done
    assert main(["nightly", "--source", "s3://locks/src", "--out", out, "--profile", "offline-fast",
                 "--storage-options", json.dumps(so)]) == 2
    assert fs.find("locks/qc") == [f"locks/qc/{LOCK_NAME}"]
    # another run took the lock over (its lease ran out, say): the holder notices and never commits
    fs.pipe(f"locks/qc/{LOCK_NAME}", _stale_record(age=0))
    time.sleep(1.0)
    assert a.lost and "taken over by host another-host" in a.lost
    with pytest.raises(RunError, match="without committing"):
        a.check()
    a.release()
    assert json.loads(fs.cat(f"locks/qc/{LOCK_NAME}"))["host"] == "another-host"  # not removed by the loser
    # a stale lock: of several runs finding it at once, one takes it over (If-Match on its ETag)
    fs.pipe(f"locks/qc/{LOCK_NAME}", _stale_record(age=300))
    won = _race(out, so)
    assert len(won) == 1 and won[0].taken_over["host"] == "another-host"
    won[0].release()
    assert not fs.exists(f"locks/qc/{LOCK_NAME}")
    # the writes were conditional, as the server saw them
    puts = [p for m, p, st in moto_s3.requests(mark) if m == "PUT" and LOCK_NAME in p]
    statuses = [st for m, p, st in moto_s3.requests(mark) if m == "PUT" and LOCK_NAME in p]
    assert puts and 412 in statuses


# ------------------------------------------------------------------ 2. settings and models
def test_fingerprints_split_scoring_from_fusion():
    base = _cfg()
    fuse = _cfg(fuse={"accept": 70})
    scoring = _cfg(detect={"upsample_below": 300})
    resources = _cfg(detect={"resources": {"batch_size": 4}}, storage={"retries": 2}, output={"compression": "snappy"})
    a, b, c, d = (fingerprint(x) for x in (base, fuse, scoring, resources))
    assert a["scoring"] == b["scoring"] and a["fusion"] != b["fusion"]
    assert a["scoring"] != c["scoring"] and a["fusion"] == c["fusion"]
    assert (a["scoring"], a["fusion"]) == (d["scoring"], d["fusion"])  # changes no score
    assert changed_settings(a, b) == ["fuse.accept"] and changed_settings(a, d) == []
    assert {m["id"] for m in a["models"]} >= {"dlib-shape-predictor-5"}
    assert all(len(m["sha256"]) == 64 for m in a["models"] if m["id"] == "dlib-shape-predictor-5")
    # the plan: unchanged objects under other scoring settings are rescored, under other fusion re-fused
    # (a clip, e, is rescored even when only fusion changed: its verdict comes from its tracks)
    listing = pa.table({"uri": ["a", "b", "c", "d", "e"], "size": [1, 2, 3, 4, 5], "mtime": [1.0, 2.0, 3.0, 4.0, 5.0],
                        "extra.etag": ["x", "y", "z", "w", "v"]})
    state = pa.table({"uri": ["a", "b", "c", "d", "e"], "size": pa.array([1, 2, 3, 5, 5], pa.int64()),
                      "mtime": [1.0, 2.0, 3.0, 4.0, 5.0], "etag": ["x", "y", "z", "w", "v"], "status": ["ok"] * 5,
                      "quality": pa.array([1, 2, 3, 4, 5], pa.float32()), "verdict": ["accept"] * 5,
                      "run_id": ["r"] * 5, "media": ["image"] * 4 + ["video"],
                      "scoring_fp": [a["scoring"], c["scoring"], a["scoring"], c["scoring"], a["scoring"]],
                      "fusion_fp": [a["fusion"], a["fusion"], b["fusion"], a["fusion"], b["fusion"]]})
    got = diff(listing, state, a)
    assert dict(zip(got.column("uri").to_pylist(), got.column("change").to_pylist())) == \
        {"b": "rescore", "c": "refuse", "d": "changed", "e": "rescore"}
    assert diff(listing, state, None).column("uri").to_pylist() == ["d"]  # --keep-scores
    assert diff(listing, state.drop_columns(["media"]), a).column("change").to_pylist()[-1] == "refuse"


def test_refuse_from_stored_raw_measures():
    from pipeline.executor import LocalExecutor
    from pipeline.fusion import refuse_table
    from pipeline.tools import samples

    faces = samples.demo_faces()
    names = list(faces)
    imgs = [faces[n] for n in names] + [samples.degrade(faces[n], "blur", 3.0) for n in names]
    cfg = _cfg()
    scored = LocalExecutor(cfg).score_images(imgs, names + [n + "-blur" for n in names])
    assert pa.compute.sum(pa.compute.equal(scored.column("status"), "ok")).as_py() >= 6
    same = refuse_table(cfg, scored)
    assert same.column("quality").to_pylist() == pytest.approx(scored.column("quality").to_pylist(), rel=1e-5)
    assert same.column("verdict").to_pylist() == scored.column("verdict").to_pylist()
    # new fusion settings: exactly what scoring the images again with them gives
    new = _cfg(fuse={"accept": 89, "curves": {"sharpness": {"direction": "low", "start": 0.06, "full": 0.01}}})
    refused = refuse_table(new, scored)
    rescored = LocalExecutor(new).score_images(imgs, names + [n + "-blur" for n in names])
    for col in ("quality", "verdict", "reasons", "primary_face"):
        want, got = rescored.column(col).to_pylist(), refused.column(col).to_pylist()
        assert got == (pytest.approx(want, rel=1e-4) if col == "quality" else want), col
    assert refused.column("verdict").to_pylist() != scored.column("verdict").to_pylist()
    assert refused.column("uri").to_pylist() == scored.column("uri").to_pylist()


def test_nightly_rescores_or_refuses_on_a_settings_change(moto_s3, face_jpegs, ray_local):
    s3, fs = moto_s3, moto_s3.fs()
    fs.mkdir("fpr")
    imgs = list(face_jpegs.items())[:8]
    fs.pipe({f"fpr/src/{n}": d for n, d in imgs})
    out = "s3://fpr/qc"
    s1 = nightly("s3://fpr/src", out, _cfg(s3), progress=False)
    assert s1["rows"] == 8 and s1["fingerprint"]["scoring"] and not s1["warnings"]
    with fs.open("fpr/qc/latest/quality.parquet", "rb") as f:
        v1 = {r["uri"]: r for r in pq.read_table(f).to_pylist()}

    # fusion only (e.g. after `faceqc calibrate`): re-fused from the stored rows, no image read
    refuse_cfg = _cfg(s3, fuse={"accept": 95, "review": 20})
    mark = s3.log_size()
    s2 = nightly("s3://fpr/src", out, refuse_cfg, progress=False)
    assert s3.object_gets("fpr", "src/", since=mark) == {}
    assert s2["rows_refused"] == 8 and s2["rows_scored"] == 0 and s2["settings_change"]["changed"] == \
        ["fuse.accept", "fuse.review"]
    assert any("re-fused 8 stored rows" in w and "without reading any image" in w for w in s2["warnings"])
    with fs.open("fpr/qc/latest/quality.parquet", "rb") as f:
        v2 = {r["uri"]: r for r in pq.read_table(f).to_pylist()}
    for u, r in v2.items():
        assert r["quality"] == v1[u]["quality"] and r["run_id"] == s2["run_id"] and r["change"] == "refuse"
        want = "reject" if r["quality"] is None or r["quality"] < 20 else ("accept" if r["quality"] >= 95 else "review")
        assert r["verdict"] == want and r["fusion_fp"] == s2["fingerprint"]["fusion"]
    assert sorted(p.rsplit("/", 1)[1] for p in fs.glob(f"fpr/qc/runs/run_id={s2['run_id']}/scores/*.parquet")) == \
        sorted(s2["files"]["scores"])

    # a scoring setting, with --keep-scores: nothing rescored, and it says so
    scoring_cfg = _cfg(s3, fuse={"accept": 95, "review": 20}, detect={"upsample_below": 300})
    mark = s3.log_size()
    s3_ = nightly("s3://fpr/src", out, scoring_cfg, progress=False, keep_scores=True)
    assert s3_["rows"] == 0 and s3.object_gets("fpr", "src/", since=mark) == {}
    assert any("--keep-scores" in w for w in s3_["warnings"])
    # ... and without it: every unchanged object rescored once, then nothing
    mark = s3.log_size()
    s4 = nightly("s3://fpr/src", out, scoring_cfg, progress=False)
    assert s4["settings_change"]["rows_rescored"] == 8 and s4["changes"]["new"] == 0
    assert sorted(s3.object_gets("fpr", "src/", since=mark).values()) == [1] * 8
    assert any("rescored 8 unchanged objects" in w and "detect.upsample_below" in w for w in s4["warnings"])
    s5 = nightly("s3://fpr/src", out, scoring_cfg, progress=False)
    assert s5["rows"] == 0 and not s5["warnings"]


# --------------------------------------------------------------------- 3. storage faults
def test_every_fault_is_retried_once_and_counted(moto_s3):
    """Listing pages, reads and commits through the proxy: each injected fault costs exactly one
    counted retry (botocore's and s3fs's own retry layers are off), and nothing is lost."""
    from pipeline.fs import read_bytes, write_bytes_atomic
    from pipeline.io.listing import list_table

    fs = moto_s3.fs()
    fs.mkdir("faults")
    fs.pipe({f"faults/src/{i:04d}.bin": bytes([i % 251]) * 3000 for i in range(1200)})
    saved = retry.policy()
    retry.configure(retry.Policy(retries=12, backoff_base=0.01, backoff_cap=0.1, timeout=1.0))
    try:
        with FaultProxy(moto_s3.url, slowdown=0.12, reset=0.1, delay=0.04, delay_s=1.5, seed=7) as px:
            so = dict(moto_s3.storage_options, client_kwargs={"endpoint_url": px.url})
            before = retry.counts()
            t = list_table("s3://faults/src", so)
            assert t.num_rows == 1200 and len(set(t.column("uri").to_pylist())) == 1200
            for i, u in enumerate(t.column("uri").to_pylist()[:150]):
                assert read_bytes(u, so) == bytes([i % 251]) * 3000
            for i in range(30):
                write_bytes_atomic(f"s3://faults/out/{i}.json", b"{}", so)
            got = retry.since(before)
        assert sorted(fs.ls("faults/out", detail=False)) == sorted(f"faults/out/{i}.json" for i in range(30))
        injected = sum(px.injected.values())
        assert px.injected["slowdown"] and px.injected["reset"] and px.injected["delay"]
        assert got["gave_up"] == 0
        assert sum(v for k, v in got.items() if k != "gave_up") == injected, (got, px.injected)
        assert got["listing"] >= 0 and got["read"] > 0 and got["commit"] > 0
        print(f"requests {px.requests}, faults injected {dict(px.injected)}, retries counted {got}")
    finally:
        retry.configure(saved)


def test_nightly_survives_throttling_resets_and_timeouts(moto_s3, face_jpegs, ray_local):
    fs = moto_s3.fs()
    fs.mkdir("flaky")
    imgs = list(face_jpegs.items())[:40]
    fs.pipe({f"flaky/src/{n}": d for n, d in imgs})
    with FaultProxy(moto_s3.url, slowdown=0.1, reset=0.1, delay=0.03, delay_s=2.5, slow=0.05, slow_s=0.3,
                    seed=11) as px:
        so = dict(moto_s3.storage_options, client_kwargs={"endpoint_url": px.url})
        cfg = load_config(profile="offline-fast", overrides={
            "input": {"storage_options": so},
            "storage": {"retries": 12, "backoff_base": 0.02, "backoff_cap": 0.3, "timeout": 1.5}})
        s = nightly("s3://flaky/src", "s3://flaky/qc", cfg, progress=False)
        injected = dict(px.injected)
    assert s["rows"] == 40 and s["status_counts"].get("read_error", 0) == 0
    # every object exactly once, no part file lost: the scores/ folder is what the summary lists
    scores = f"flaky/qc/runs/run_id={s['run_id']}/scores"
    names = sorted(p.rsplit("/", 1)[1] for p in fs.glob(f"{scores}/*.parquet"))
    assert names == sorted(s["files"]["scores"])
    uris = [u for n in names for u in pq.read_table(fs.open(f"{scores}/{n}", "rb"), columns=["uri"])
            .column("uri").to_pylist()]
    assert sorted(uris) == sorted(f"s3://flaky/src/{n}" for n, _ in imgs)
    with fs.open("flaky/qc/latest/quality.parquet", "rb") as f:
        assert pq.read_table(f).num_rows == 40
    st = s["storage"]
    assert st["policy"]["retries"] == 12 and st["retries"]["gave_up"] == 0
    assert st["retries_total"] > 0 and st["retries"]["read"] > 0 and st["worker_read_retries"] >= 0
    assert injected["slowdown"] and injected["reset"]
    assert any(w.startswith("storage faults: ") for w in s["warnings"])
    print(f"faults injected {injected}; retries counted {st['retries']}")


def test_a_store_that_keeps_failing_is_one_line_and_exit_2(moto_s3, tmp_path, capsys):
    conf = tmp_path / "c.yaml"
    conf.write_text("storage: {retries: 2, backoff_base: 0.01, backoff_cap: 0.02, timeout: 2}\n")
    with FaultProxy(moto_s3.url, slowdown=1.0) as px:
        so = dict(moto_s3.storage_options, client_kwargs={"endpoint_url": px.url})
        rc = main(["nightly", "--source", "s3://nowhere-src/a", "--out", "s3://nowhere-out/qc", "--config", str(conf),
                   "--storage-options", json.dumps(so)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and px.injected["slowdown"] >= 3  # the first try and 2 retries at least
    assert err[0].startswith("faceqc: error: output s3://nowhere-out/qc") and "reduce your request rate" in err[0]


# ---------------------------------------------------------------- 5. readers and late writers
def test_a_late_writer_never_reaches_what_readers_glob(tmp_path, face_jpegs, ray_local):
    import duckdb

    src, out = tmp_path / "src", str(tmp_path / "qc")
    src.mkdir()
    for n, d in list(face_jpegs.items())[:6]:
        (src / n).write_bytes(d)
    cfg = _cfg()
    s1 = nightly(str(src), out, cfg, progress=False)
    rdir = os.path.join(out, "runs", f"run_id={s1['run_id']}")
    assert sorted(set(os.listdir(rdir)) - {"_faceqc"}) == ["_plan.parquet", "_summary.json", "scores"]  # staging gone
    glob = f"{out}/runs/*/scores/*.parquet"
    q = "SELECT count(*) FROM read_parquet({})"
    assert duckdb.sql(q.format(repr(glob))).fetchall()[0][0] == 6
    # a write of a killed attempt lands after the commit: into its attempt's staging folder
    late = os.path.join(rdir, "_staging")
    os.makedirs(late)
    pq.write_table(pq.read_table(committed_files(out)[0]), os.path.join(late, "part-late.parquet"))
    assert duckdb.sql(q.format(repr(glob))).fetchall()[0][0] == 6
    assert sorted(committed_files(out)) == sorted(
        os.path.join(rdir, "scores", n) for n in os.listdir(os.path.join(rdir, "scores")) if n.endswith(".parquet"))
    (src / "new.jpg").write_bytes(list(face_jpegs.values())[7])
    s2 = nightly(str(src), out, cfg, progress=False)
    assert s2["rows"] == 1 and not os.path.exists(late)  # the next run cleans it up, and says so
    assert s2["late_writes_removed"] == 1 and any("after that run committed" in w for w in s2["warnings"])
    assert duckdb.sql(q.format(repr(glob))).fetchall()[0][0] == 7


# ----------------------------------------------------------------- 6. a million objects
@pytest.mark.slow
def test_listing_streams_a_million_objects():
    """A fake store of 100,000 and 1,000,000 objects (1,000 per folder), listed by a fresh driver
    process each: one folder's listing in memory at a time, and a peak within 1.5x."""
    got = {}
    for n in (100_000, 1_000_000):
        p = subprocess.run([sys.executable, "-m", "tests.support.fakefs", str(n)], cwd=REPO, capture_output=True,
                           text=True, timeout=600, env={**os.environ, "PYTHONPATH": REPO})
        assert p.returncode == 0, p.stderr[-2000:]
        got[n] = json.loads(p.stdout.split("PEAK ", 1)[1])
    for n, r in got.items():
        assert r["rows"] == n and r["sorted"] and r["etags"]
        assert r["largest_ls"] == 1000 and r["ls_calls"] == n // 1000 + 1  # folder by folder, never a find
    ratio = got[1_000_000]["peak_rss_mb"] / got[100_000]["peak_rss_mb"]
    print(f"listing peak RSS: {got[100_000]['peak_rss_mb']:.0f} MB at 100k, {got[1_000_000]['peak_rss_mb']:.0f} MB "
          f"at 1M ({ratio:.2f}x)")
    assert ratio <= 1.5


def test_rows_of_an_earlier_schema_fit_the_current_one_and_refuse():
    """A view or kept rows written before a schema added raw measures and components (schema 2
    had no iqa.lip_line, no components.mouth_visible; schema 3 no iqa.vignetting, no
    components.vignetting; schema 4 no fiqa.occlusion*, no components.occlusion) are carried into
    the current schema with the new fields null, and re-fusing them scores what they measured and
    leaves the rest unjudged."""
    from pipeline.executor import LocalExecutor
    from pipeline.fusion import refuse_table
    from pipeline.tools import samples
    from pipeline.tools.nightly import fit_schema

    cfg = _cfg()
    faces = samples.demo_faces()
    scored = LocalExecutor(cfg).score_images(list(faces.values()), list(faces))
    assert any(f["iqa"]["lip_line"] is not None for r in scored.to_pylist() for f in r["faces"] or [])
    assert any(f["iqa"]["vignetting"] is not None for r in scored.to_pylist() for f in r["faces"] or [])
    added = {"lip_line", "mouth_visible", "vignetting",  # schemas 3 and 4
             "occlusion", "occlusion_eyes", "occlusion_mouth"}  # schema 5: fiqa.* and components.occlusion
    new_face = scored.schema.field("faces").type.value_type

    def without(typ, drop):
        return pa.struct([f for f in typ if f.name not in drop])

    old_face = pa.struct([pa.field(f.name, without(f.type, added) if f.name in ("iqa", "fiqa", "components")
                                   else f.type) for f in new_face])
    old = pa.Table.from_pylist(scored.to_pylist(), schema=pa.schema(
        [pa.field("faces", pa.list_(old_face)) if f.name == "faces" else f for f in scored.schema]))
    assert not added & set(old.schema.field("faces").type.value_type.field("iqa").type.names)
    fitted = fit_schema(old, scored.schema)
    assert fitted.schema == scored.schema
    for was, now in zip(scored.to_pylist(), fitted.to_pylist()):
        assert now["quality"] == was["quality"] and now["verdict"] == was["verdict"]
        for f in now["faces"] or []:
            assert all(f[s].get(k) is None for s in ("iqa", "fiqa", "components") for k in added)
    refused = refuse_table(cfg, fitted).to_pylist()
    judged = [f["components"][k] for r in refused for f in r["faces"] or [] for k in ("mouth_visible", "vignetting")]
    assert judged and all(v is None for v in judged)  # not measured: not judged, never a 0
    assert [r["status"] for r in refused] == scored.column("status").to_pylist()
