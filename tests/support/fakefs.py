"""A fake object store of any size for listing tests: ``fakebucket://b/`` holds ``n`` objects,
made up on demand (nothing is stored), in folders of ``per_dir`` objects:

    register(n=1_000_000, per_dir=1000)
    fs = fsspec.filesystem("fakebucket")
    fs.ls("b/d00000", detail=True)   # 1,000 file infos, as GCS or Azure would page them

Every object has a size, an mtime and an ETag.  ``fs.calls`` counts ``ls`` calls and
``fs.largest`` the largest listing handed out, so a test can tell a streaming walk from a
``find`` that asks for the whole tree."""

from __future__ import annotations

import fsspec
from fsspec.spec import AbstractFileSystem

PROTOCOL = "fakebucket"


class FakeBucket(AbstractFileSystem):
    protocol = PROTOCOL
    n = 0
    per_dir = 1000
    cachable = False

    calls = 0  # class-wide: every instance a process makes counts
    largest = 0

    @classmethod
    def _strip_protocol(cls, path):
        path = path[len(PROTOCOL) + 3:] if path.startswith(PROTOCOL + "://") else path
        return path.rstrip("/")

    def _dirs(self) -> int:
        return -(-self.n // self.per_dir)

    def _file(self, d: int, i: int) -> dict:
        k = d * self.per_dir + i
        return {"name": f"b/d{d:05d}/f{k:07d}.jpg", "type": "file", "size": 1000 + k % 977,
                "mtime": 1.7e9 + k, "ETag": f'"{k:08x}"'}

    def ls(self, path, detail=True, **kw):
        path = self._strip_protocol(path)
        FakeBucket.calls += 1
        if path == "b":
            out = [{"name": f"b/d{d:05d}", "type": "directory", "size": 0} for d in range(self._dirs())]
        elif path.startswith("b/d") and "/" not in path[2:]:
            d = int(path[3:])
            if d >= self._dirs():
                raise FileNotFoundError(path)
            out = [self._file(d, i) for i in range(min(self.per_dir, self.n - d * self.per_dir))]
        else:
            raise FileNotFoundError(path)
        FakeBucket.largest = max(FakeBucket.largest, len(out))
        return out if detail else [o["name"] for o in out]

    def info(self, path, **kw):
        path = self._strip_protocol(path)
        if path == "b" or (path.startswith("b/d") and "/" not in path[2:]):
            return {"name": path, "type": "directory", "size": 0}
        raise FileNotFoundError(path)


def register(n: int, per_dir: int = 1000) -> None:
    FakeBucket.n, FakeBucket.per_dir = n, per_dir
    fsspec.register_implementation(PROTOCOL, FakeBucket, clobber=True)


def peak_listing(n: int, per_dir: int = 1000, how: str = "list_table") -> dict:
    """List ``n`` fake objects with faceqc's ``list_table`` in this (fresh) process, after
    importing what a nightly driver imports; the process's peak RSS and the listing's facts."""
    import resource
    import time

    import ray  # noqa: F401 - a driver's baseline: what `faceqc nightly` has imported when it lists

    import pipeline.tools.nightly  # noqa: F401
    from pipeline.io.listing import list_table

    register(n, per_dir)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.time()
    if how == "find":  # what faceqc did before: fsspec's find, the whole tree's infos at once
        from pipeline.io.listing import Entry, _etag, _mtime, entries_table

        found = fsspec.filesystem(PROTOCOL).find("b", detail=True)
        table = entries_table([Entry(f"{PROTOCOL}://{p}", int(i["size"]), _mtime(i), _etag(i))
                               for p, i in sorted(found.items())])
        del found
    else:
        table = list_table(f"{PROTOCOL}://b", {})
    secs = time.time() - t
    fs = FakeBucket
    uris = table.column("uri")
    import pyarrow.compute as pc

    ordered = bool(pc.all(pc.less(uris.slice(0, len(uris) - 1), uris.slice(1))).as_py()) if len(uris) > 1 else True
    return {"n": n, "rows": table.num_rows, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "baseline_rss_mb": base / 1024, "table_mb": table.nbytes / 2**20, "seconds": round(secs, 2),
            "ls_calls": fs.calls, "largest_ls": fs.largest, "sorted": ordered,
            "etags": table.column("extra.etag").null_count == 0}


if __name__ == "__main__":
    import json
    import sys

    print("PEAK " + json.dumps(peak_listing(int(sys.argv[1]), how=sys.argv[2] if len(sys.argv) > 2 else "list_table")))
