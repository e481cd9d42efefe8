"""Scale check of the nightly run: N small face JPEGs in a bucket prefix (a real S3 HTTP API:
moto's server on loopback), a first nightly run that scores them all, then ``--add`` new objects
and a second run that must list everything and read and score only those.

    python -m benchmarks.nightly_scale -n 5000 --add 50 --profile offline-fast
    python -m benchmarks.nightly_scale -n 50000 --runs 1 --size 48      # memory at 10x the objects
    python -m benchmarks.nightly_scale --refuse 100000                  # re-fuse time of 100k rows
    python -m benchmarks.nightly_scale --listing 100000 1000000         # listing memory (fake store)

Prints both runs' times, how many objects each run read (from the S3 server's request log), and
memory: the summed PSS of the driver and every Ray process, sampled every 2 s, reported as the
peak and as the peak of each quarter of the run (flat = no growth with the objects processed).
Needs the ``test`` extra (moto).  Run it from the repository root (it uses tests/support)."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=5000, help="objects in the prefix for the first run")
    ap.add_argument("--add", type=int, default=50, help="objects added before the second run")
    ap.add_argument("--size", type=int, default=96, help="image side in pixels")
    ap.add_argument("--profile", default="offline-fast")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "faceqc-bench-nightly"))
    ap.add_argument("--runs", type=int, default=2, choices=(1, 2), help="1: the first run only")
    ap.add_argument("--refuse", type=int, metavar="ROWS",
                    help="instead: time re-fusing ROWS stored rows (real scored rows, repeated) under new fusion settings")
    ap.add_argument("--listing", type=int, nargs="+", metavar="N",
                    help="instead: peak RSS of a driver listing N objects of a fake store (one process each)")
    args = ap.parse_args(argv)
    if args.refuse:
        return refuse_bench(args.refuse)
    if args.listing:
        return listing_bench(args.listing)

    from pipeline.config import load_config
    from pipeline.tools.bench import MemoryTrace, generate
    from pipeline.tools.nightly import nightly
    from tests.support.s3local import MotoServer

    os.makedirs(args.workdir, exist_ok=True)
    t = time.time()
    folder = generate(os.path.join(args.workdir, f"images-{args.n + args.add}-{args.size}"), args.n + args.add, args.size)
    files = sorted(os.path.join(r, f) for r, _, fs_ in os.walk(folder) for f in fs_ if f.endswith(".jpg"))
    print(f"data: {len(files)} JPEGs of {args.size} px ({time.time() - t:.0f} s to prepare)", flush=True)

    with MotoServer(log=os.path.join(args.workdir, "s3-requests.log")) as s3:
        os.environ.update(s3.env)  # the local Ray started below inherits the endpoint
        fs = s3.fs()
        fs.mkdir("bench")
        t = time.time()
        for i in range(0, args.n, 500):
            fs.pipe({f"bench/photos/{os.path.basename(p)}": open(p, "rb").read() for p in files[i:min(i + 500, args.n)]})
        print(f"bucket: {args.n} objects uploaded ({time.time() - t:.0f} s)", flush=True)
        cfg = load_config(profile=args.profile)
        res: dict = {"n": args.n, "added": args.add, "size": args.size, "profile": args.profile,
                     "cpus": os.cpu_count()}
        for run, label in ((1, "first"), (2, "second"))[: args.runs]:
            if run == 2:
                fs.pipe({f"bench/photos/new/{os.path.basename(p)}": open(p, "rb").read() for p in files[args.n:]})
            mark = s3.log_size()
            t = time.time()
            with MemoryTrace(exclude=s3.proc.pid) as mem:
                s = nightly("s3://bench/photos", "s3://bench/faceqc", cfg, progress=False)
            wall = time.time() - t
            reads = s3.object_gets("bench", "photos/", since=mark)
            r = {"wall_s": round(wall, 1), "listing_s": s["seconds"].get("listing"), "diff_s": s["seconds"].get("diff"),
                 "scoring_s": s["seconds"]["scoring"], "view_s": s["seconds"].get("view"), "listed": s["listed"],
                 "changes": s["changes"], "scored": s["rows"], "objects_read": len(reads),
                 "images_per_s": s.get("images_per_second"), "memory": mem.report()}
            res[label] = r
            print(f"{label} run: listed {r['listed']}, scored {r['scored']}, read {r['objects_read']} objects, "
                  f"{r['wall_s']} s (listing {r['listing_s']} s, scoring {r['scoring_s']} s); "
                  f"memory {r['memory']}", flush=True)
    print("BENCH_NIGHTLY " + json.dumps(res))
    return res


def refuse_bench(rows: int) -> dict:
    """Score the packaged demo photos (and blurred copies) once, repeat the rows to ``rows``,
    and time :func:`pipeline.fusion.refuse_table` under changed fusion settings."""
    import pyarrow as pa

    from pipeline.config import load_config
    from pipeline.executor import LocalExecutor
    from pipeline.fusion import refuse_table
    from pipeline.tools import samples

    faces = samples.demo_faces()
    names = [f"{n}{suffix}" for n in faces for suffix in ("", "-blur")]
    imgs = [faces[n] if not n.endswith("-blur") else samples.degrade(faces[n[:-5]], "blur", 3.0) for n in names]
    cfg = load_config(profile="offline-fast")
    scored = LocalExecutor(cfg).score_images(imgs, names)
    table = pa.concat_tables([scored] * (-(-rows // scored.num_rows))).slice(0, rows)
    new = load_config(profile="offline-fast", overrides={"fuse": {"accept": 89, "review": 40, "curves": {
        "sharpness": {"direction": "low", "start": 0.06, "full": 0.01, "weight": 3.0}}}})
    t = time.time()
    out = refuse_table(new, table)
    secs = time.time() - t
    changed = sum(a != b for a, b in zip(out.column("verdict").to_pylist(), table.column("verdict").to_pylist()))
    res = {"rows": table.num_rows, "faces_per_row": round(sum(len(f) for f in scored.column("faces").to_pylist())
                                                         / scored.num_rows, 2),
           "seconds": round(secs, 2), "rows_per_s": round(table.num_rows / secs), "verdicts_changed": changed}
    print("BENCH_REFUSE " + json.dumps(res))
    return res


def listing_bench(ns) -> dict:
    """Peak RSS of a fresh driver process listing N fake objects (tests/support/fakefs.py), both
    faceqc's streaming listing and fsspec's find (what faceqc did before), for each N."""
    import subprocess
    import sys

    res = {}
    for how in ("list_table", "find"):
        for n in ns:
            p = subprocess.run([sys.executable, "-m", "tests.support.fakefs", str(n), how], capture_output=True,
                               text=True, check=True)
            r = json.loads(p.stdout.split("PEAK ", 1)[1])
            res[f"{how}-{n}"] = r
            print(f"{how:10s} {n:>9,} objects: peak RSS {r['peak_rss_mb']:.0f} MB (baseline {r['baseline_rss_mb']:.0f} MB,"
                  f" table {r['table_mb']:.0f} MB), {r['seconds']} s, largest listing call {r['largest_ls']}", flush=True)
    print("BENCH_LISTING " + json.dumps(res))
    return res


if __name__ == "__main__":
    main()
