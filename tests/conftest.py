"""Shared test fixtures, and the two layers of the suite: tests that start Ray, a server, a
subprocess or a browser, or score hundreds of images, are ``slow`` (``make test-fast`` skips
them; ``make test``, what CI runs, runs everything)."""

from __future__ import annotations

import pytest

# fixtures that start Ray or a server: every test using one is slow
SLOW_FIXTURES = {"ray_local", "moto_s3", "ray_tmpdir"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance for a whole test module (start-up costs seconds), shut down after it."""
    import ray

    from pipeline.executor import init_ray

    init_ray(None)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory):
    """A real S3 HTTP endpoint on 127.0.0.1: moto's server mode in a subprocess, for the whole
    session.  Its AWS variables are exported to this process (and so to the local Ray workers
    and subprocesses started after it), so nothing here can reach a real cloud endpoint."""
    import os

    from tests.support.s3local import MotoServer

    server = MotoServer(log=str(tmp_path_factory.mktemp("moto") / "requests.log")).start()
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    try:
        yield server
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def face_jpegs(tmp_path_factory):
    """Small face JPEGs (96 px) made from the packaged photos: (name -> bytes), 400 of them."""
    import os

    from pipeline.tools.bench import generate

    folder = generate(str(tmp_path_factory.mktemp("faces") / "jpegs"), 400, 96)
    out = {}
    for root, _, files in os.walk(folder):
        for f in sorted(files):
            if f.endswith(".jpg"):
                with open(os.path.join(root, f), "rb") as fh:
                    out[f] = fh.read()
    return dict(sorted(out.items()))


def kill_processes_mentioning(marker: str) -> int:
    """SIGKILL the processes whose command line contains ``marker`` (a temp folder that only
    Ray instances started by one test use): what a SIGKILLed driver's Ray leaves behind."""
    import os
    import signal

    killed = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if marker.encode() in cmd:
            try:
                os.kill(int(pid), signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


@pytest.fixture
def ray_tmpdir():
    """A short private RAY_TMPDIR for Ray instances a test starts in subprocesses (Ray's socket
    paths must stay short); whatever of them is still running at the end is stopped."""
    import shutil
    import tempfile

    d = tempfile.mkdtemp(prefix="rq", dir="/tmp")
    yield d
    kill_processes_mentioning(d)
    shutil.rmtree(d, ignore_errors=True)
