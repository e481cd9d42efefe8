"""Scale check of the nightly run: N small face JPEGs in a bucket prefix (a real S3 HTTP API:
moto's server on loopback), a first nightly run that scores them all, then ``--add`` new objects
and a second run that must list everything and read and score only those.

    python -m benchmarks.nightly_scale -n 5000 --add 50 --profile offline-fast

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
    args = ap.parse_args(argv)

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
        for run, label in ((1, "first"), (2, "second")):
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


if __name__ == "__main__":
    main()
