"""Model store: fetch a model once per node into a local cache, verify it, hand out its path.

A model is named in config by a registry name (see :mod:`pipeline.models`) or by a URI: a local
path, or anything fsspec opens (``s3://``, ``gs://``, ``az://``, ``https://``).  Remote models
are copied into ``$FACEQC_MODEL_CACHE`` (default ``~/.cache/faceqc/models``) under a file lock,
so concurrent actors on one node fetch once, through a temporary file renamed into place, so a
reader never sees half a file.  When a sha256 is known (registry, config, or ``#sha256=`` on the
URI) the file is verified before it is used; a mismatch is an error, never a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from typing import Optional, Tuple

from .errors import ModelError, errors_as, redact
from .fs import atomic_writer, get_fs, is_local, join_uri, local_path
from .models import CATALOGUE, ModelInfo, sha256_file

_SHA_RE = re.compile(r"#sha256=([0-9a-fA-F]{64})$")


def cache_dir() -> str:
    d = os.environ.get("FACEQC_MODEL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "faceqc", "models")
    os.makedirs(d, exist_ok=True)
    return d


def split_ref(ref: str) -> Tuple[str, Optional[str]]:
    """'uri#sha256=HEX' -> (uri, hex); plain refs -> (ref, None)."""
    m = _SHA_RE.search(ref)
    return (ref[: m.start()], m.group(1).lower()) if m else (ref, None)


def _url_path(uri: str) -> str:
    """The URI without its query or fragment (a presigned URL's signature lives in the query)."""
    return uri.split("?", 1)[0].split("#", 1)[0]


def _cache_name(uri: str) -> str:
    """A short, safe file name: a digest of the whole URI, then the file's own name (path only,
    at most 80 characters, odd characters replaced)."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(_url_path(uri).rstrip("/")))[-80:] or "model"
    digest = hashlib.sha256(uri.encode()).hexdigest()[:12]
    return f"{digest}-{base}"


def _shown(uri: str) -> str:
    """A URI as messages and the cache's notes show it: secrets and signed-URL parameters masked."""
    return redact(uri, None)


def _pull_hint(ref: str) -> str:
    return (f"run `faceqc models pull {ref}` on a machine that can reach it, or set its URI to a "
            f"local path or a bucket mirror (`faceqc models pull {ref} --to s3://bucket/models/`)")


def _verify(path: str, want: Optional[str], label: str) -> str:
    got = sha256_file(path)
    if want and got != want.lower():
        raise ModelError(f"model {label}: sha256 mismatch for {path}: expected {want}, got {got}; "
                         f"the file is corrupt or not the model you named")
    return got


def resolve(ref: str, sha256: Optional[str] = None, storage_options: Optional[dict] = None) -> str:
    """Local path of the model named by ``ref`` (registry name, local path or URI), fetched and
    verified as needed."""
    info = CATALOGUE.get(ref)
    label = ref
    if info is not None:
        if info.file:  # ships inside a package
            from .models import model_path

            return model_path(info.id)
        if not info.uri:
            raise ModelError(f"model '{ref}' has no download location in the registry; "
                             f"name it by URI or local path in the config ({info.source})")
        ref, sha256 = info.uri, sha256 or info.sha256
    uri, pinned = split_ref(ref)
    if sha256 and pinned and sha256.lower() != pinned:
        raise ModelError(f"model {_shown(label)}: its URI pins sha256 {pinned} but the config says {sha256.lower()}; "
                         "keep one of them")
    want = sha256 or pinned
    if is_local(uri):
        path = local_path(uri)
        if not os.path.isfile(path):
            raise ModelError(f"model {label} not found at {path}: {_pull_hint(label)}")
        _verify(path, want, label) if want else None
        return path
    label = _shown(label)
    dest = os.path.join(cache_dir(), _cache_name(uri))
    if os.path.isfile(dest) and (not want or sha256_file(dest) == want.lower()):
        return dest
    from filelock import FileLock

    with FileLock(dest + ".lock", timeout=3600):
        if os.path.isfile(dest):
            if not want or sha256_file(dest) == want.lower():
                return dest  # another actor fetched it while we waited
            os.remove(dest)  # a cached copy of another version (republished at this URI): fetch again
        _fetch(uri, dest, storage_options)
        try:
            got = _verify(dest + ".part", want, label)
        except ModelError:
            os.remove(dest + ".part")
            raise
        os.replace(dest + ".part", dest)
        with atomic_writer(dest + ".json", None) as f:
            f.write(json.dumps({"uri": _shown(uri), "sha256": got, "fetched_at": time.time()}).encode())
    return dest


def _fetch(uri: str, dest: str, storage_options: Optional[dict]) -> None:
    try:
        fs, path = get_fs(uri, storage_options)
        with fs.open(path, "rb") as src, open(dest + ".part", "wb") as out:
            while True:
                chunk = src.read(1 << 22)
                if not chunk:
                    break
                out.write(chunk)
    except Exception as e:  # noqa: BLE001 - network, credentials, missing object
        if os.path.exists(dest + ".part"):
            os.remove(dest + ".part")
        raise ModelError(redact(f"cannot fetch model from {uri}: {type(e).__name__}: {e}; {_pull_hint(_url_path(uri))}",
                                storage_options)) from None


def pull(ref: str, to: Optional[str] = None, storage_options: Optional[dict] = None) -> str:
    """Fetch into the cache (or copy to a mirror prefix ``to``); return where it now is."""
    path = resolve(ref, storage_options=storage_options)
    if not to:
        return path
    info = CATALOGUE.get(ref)
    src = info.uri if info is not None and info.uri else ref
    name = os.path.basename(path) if info is not None and info.file else os.path.basename(split_ref(src)[0])
    target = join_uri(to, _url_path(name))
    # through a temporary and a rename (a single PUT on object stores): a node reading a shared
    # mirror in place never loads half a file
    with errors_as(ModelError, f"cannot copy model {_shown(ref)} to {target}", mask=lambda t: redact(t, storage_options)):
        with open(path, "rb") as src, atomic_writer(target, storage_options) as out:
            while True:
                chunk = src.read(1 << 22)
                if not chunk:
                    break
                out.write(chunk)
    return target


def describe(info: ModelInfo) -> dict:
    """A registry entry with what the local cache knows about it."""
    d = info.as_dict()
    d["cached"] = None
    d["size"] = None
    try:
        if info.file:
            from .models import model_path

            p = model_path(info.id)
            d["cached"], d["size"] = p, os.path.getsize(p)
        elif info.uri:
            p = os.path.join(cache_dir(), _cache_name(split_ref(info.uri)[0]))
            if os.path.isfile(p):
                d["cached"], d["size"] = p, os.path.getsize(p)
    except ModelError:
        pass
    return d


def load_torch_weights(path: str):
    """torch weights, never unpickling code (weights_only=True)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


_DIGESTS: dict = {}


def model_digests(cfg) -> list:
    """[{id, sha256}] of every model a configuration runs: the file's sha256 where the model is
    a file (shipped in a package, cached or named by path), None for built-in code (whose
    version the run's package versions record).  Hashed once per file, size and mtime."""
    from .registry import models_for

    out = []
    for m in models_for(cfg):
        sha = None
        try:
            path = None
            if m.file:
                from .models import model_path

                path = model_path(m.id)
            elif m.uri:
                path = resolve(m.uri, m.sha256, cfg.input.storage_options)
            if path:
                st = os.stat(path)
                key = (path, st.st_size, st.st_mtime_ns)
                sha = _DIGESTS.get(key) or _DIGESTS.setdefault(key, sha256_file(path))
        except (ModelError, OSError):
            sha = m.sha256
        out.append({"id": m.id, "sha256": sha})
    return out
