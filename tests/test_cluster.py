"""Cluster jobs: a real local Ray head and the real Ray Jobs client, the cluster launcher config
validated by Ray's own autoscaler validation, and the KubeRay manifests."""

from __future__ import annotations

import copy
import glob
import json
import os
import secrets
import shlex
import subprocess
import sys
import time
import urllib.request

import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.cli import build_parser
from tests.support.s3local import free_port

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.dirname(sys.executable)


# ----------------------------------------------------------------------- cluster launcher
def _cluster_config() -> dict:
    with open(os.path.join(REPO, "cluster.yaml")) as f:
        return yaml.safe_load(f)


def test_cluster_yaml_passes_rays_autoscaler_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = _cluster_config()
    prepared = prepare_config(copy.deepcopy(cfg))  # what `ray up` does before validating
    validate_config(prepared)
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] in types
    cpu = [t for t, v in types.items() if v["resources"].get("CPU") and not v["resources"].get("GPU")
           and t != prepared["head_node_type"]]
    gpu = [t for t, v in types.items() if v["resources"].get("GPU")]
    assert cpu and gpu
    spot = [t for t in gpu if types[t]["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"]
    assert spot, "a spot GPU node type"
    assert 0 < prepared["idle_timeout_minutes"] <= 30
    setup = " ".join(prepared["setup_commands"])
    # faceqc through the lock, with the cluster extra (whose resolution `make check-installs` checks)
    assert "pip install -q -c /home/ubuntu/faceqc/constraints.txt -e \"/home/ubuntu/faceqc[cluster]\"" in setup
    assert prepared["file_mounts"]["/home/ubuntu/faceqc"] == "."
    # token authentication: one token for every node, RAY_AUTH_MODE=token wherever Ray starts,
    # and the dashboard (the Jobs API) on the head's loopback only (reached through `ray dashboard`)
    assert prepared["file_mounts"]["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"
    starts = [c for c in prepared["head_start_ray_commands"] + prepared["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token ray start" in c for c in starts)
    assert "--dashboard-host=0.0.0.0" not in " ".join(starts) and "--dashboard-host=127.0.0.1" in starts[0]
    # the validation is real: a misspelt field is refused
    broken = copy.deepcopy(cfg)
    broken["available_node_types"]["gpu"]["min_worker"] = 1
    with pytest.raises(Exception, match="min_worker"):
        validate_config(prepare_config(broken))


# ------------------------------------------------------------------------------- KubeRay
def _k8s(name: str) -> dict:
    with open(os.path.join(REPO, "jobs", "k8s", name)) as f:
        return yaml.safe_load(f)


def _check_job_spec(spec: dict) -> None:
    argv = shlex.split(spec["entrypoint"])
    assert argv[:3] == ["python", "-m", "jobs.nightly_clean"]
    args = build_parser().parse_args(["nightly", *argv[3:]])  # faceqc's own parser accepts it
    assert args.source.startswith("s3://") and args.out.startswith("s3://")
    assert yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    assert spec["backoffLimit"] >= 1 and spec["activeDeadlineSeconds"] < 24 * 3600
    rc = spec["rayClusterSpec"]
    assert rc["rayVersion"] == "2.60.0"
    assert rc["authOptions"] == {"mode": "token"}  # KubeRay makes and shares the cluster's token
    assert rc["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = {g["groupName"]: g for g in rc["workerGroupSpecs"]}
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == "1"
    for g in groups.values():
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
    images = {c["image"] for g in [rc["headGroupSpec"], *groups.values()] for c in g["template"]["spec"]["containers"]}
    assert len(images) == 1


def test_kuberay_rayjob_and_raycronjob():
    job = _k8s("rayjob-nightly.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    _check_job_spec(job["spec"])
    cron = _k8s("raycronjob-nightly.yaml")
    assert (cron["apiVersion"], cron["kind"]) == ("ray.io/v1", "RayCronJob")
    assert set(cron["spec"]) == {"schedule", "jobTemplate"}  # RayCronJobSpec's two fields
    fields = cron["spec"]["schedule"].split()
    assert len(fields) == 5 and fields[2:] == ["*", "*", "*"]  # daily
    assert 0 <= int(fields[0]) < 60 and 0 <= int(fields[1]) < 24
    assert cron["spec"]["jobTemplate"] == job["spec"]


# ------------------------------------------------------------------- ray job submit
def _wait_http(url: str, headers: dict, proc: subprocess.Popen, log: str, timeout: float = 120) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.time() + timeout
    while True:
        try:
            opener.open(urllib.request.Request(url, headers=headers), timeout=3).read()
            return
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"Ray head did not come up ({url}):\n" + open(log).read()[-3000:])
            time.sleep(0.5)


def _submit(client, entrypoint: str, agent_wait: float) -> str:
    """Submit a job from this checkout; a node's job agent comes up a while after its raylet, so
    "No available agent" is retried for ``agent_wait`` seconds."""
    deadline = time.time() + agent_wait
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env={"working_dir": REPO})
        except RuntimeError as e:
            if "No available agent" not in str(e) or time.time() > deadline:
                raise
            time.sleep(1)


def _wait_finished(client, job_id: str, timeout: float) -> None:
    from ray.job_submission import JobStatus

    deadline = time.time() + timeout
    while client.get_job_status(job_id) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        assert time.time() < deadline, client.get_job_logs(job_id)[-3000:]
        time.sleep(1)


def test_ray_job_submit_nightly_on_a_local_head(moto_s3, face_jpegs, ray_tmpdir, tmp_path):
    """`ray start --head`, then the nightly job through the real Ray Jobs client, as
    `ray job submit --working-dir . -- python -m jobs.nightly_clean ...` would."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    fs = moto_s3.fs()
    fs.mkdir("jobs")
    fs.pipe({f"jobs/src/{n}": d for n, d in list(face_jpegs.items())[:12]})
    gcs_port, dash_port = free_port(), free_port()
    # Ray 2.60's token authentication, with a token of this test's own (not ~/.ray/auth_token)
    token = secrets.token_hex(16)
    env = {**os.environ, **moto_s3.env, "RAY_TMPDIR": ray_tmpdir, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
           "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", "")}
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    headers = {"Authorization": f"Bearer {token}"}
    log = str(tmp_path / "head.log")
    head = subprocess.Popen(
        [os.path.join(VENV_BIN, "ray"), "start", "--head", f"--port={gcs_port}", "--num-cpus=2",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}",
         "--disable-usage-stats", "--block"],
        cwd=REPO, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{dash_port}"
        _wait_http(url + "/api/version", headers, head, log)
        client = JobSubmissionClient(url, headers=headers)
        job_id = _submit(client, "python -m jobs.nightly_clean --source s3://jobs/src --out s3://jobs/qc "
                                 "--profile offline-fast --no-progress", agent_wait=120)
        _wait_finished(client, job_id, 300)
        logs = client.get_job_logs(job_id)
        assert client.get_job_status(job_id) == JobStatus.SUCCEEDED, logs[-3000:]
        assert "faceqc nightly" in logs and "new 12" in logs
        # it joined the head (RAY_ADDRESS is set inside a job) rather than starting a Ray of its own
        sessions = glob.glob(os.path.join(ray_tmpdir, "ray", "session_2*"))
        assert len(sessions) == 1, sessions
        with fs.open("jobs/qc/latest/quality.parquet", "rb") as f:
            view = pq.read_table(f)
        assert view.num_rows == 12 and view.column("uri").to_pylist()[0].startswith("s3://jobs/src/")
        assert fs.glob("jobs/qc/runs/*/_summary.json")
    finally:
        head.terminate()
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            head.kill()


# ------------------------------------------------------------------------- node loss
def _token_env(tmp_path, ray_tmpdir, extra: dict) -> dict:
    """The token a user's cluster shares: generated once (`ray get-auth-token --generate`, here
    into a private HOME), read by every node from its file with RAY_AUTH_MODE=token."""
    home = tmp_path / "home"
    home.mkdir()
    gen = subprocess.run([os.path.join(VENV_BIN, "ray"), "get-auth-token", "--generate"], capture_output=True,
                         text=True, env={**os.environ, "HOME": str(home)}, timeout=60)
    token_file = home / ".ray" / "auth_token"
    assert gen.returncode == 0 and token_file.is_file(), gen.stderr
    env = {**os.environ, **extra, "RAY_TMPDIR": ray_tmpdir, "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": str(token_file), "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", "")}
    env.pop("RAY_AUTH_TOKEN", None)
    return env, token_file.read_text().strip()


def test_nightly_survives_losing_a_worker_node(moto_s3, face_jpegs, ray_tmpdir, tmp_path):
    """A head and a second node (`ray start --address`) on this machine, both token-protected
    as cluster.yaml sets them up; the nightly job runs; the second node's raylet is SIGKILLed
    midway.  The job finishes, every object is scored exactly once, and the summary reports the
    lost node and the share of rows that were redone."""
    import psutil
    from ray.job_submission import JobStatus, JobSubmissionClient

    n = 120
    fs = moto_s3.fs()
    fs.mkdir("nodeloss")
    imgs = list(face_jpegs.items())[:n]
    fs.pipe({f"nodeloss/src/{name}": data for name, data in imgs})
    env, token = _token_env(tmp_path, ray_tmpdir, moto_s3.env)
    gcs_port, dash_port = free_port(), free_port()
    head_log, worker_log = str(tmp_path / "head.log"), str(tmp_path / "worker.log")
    # two nodes on one machine: each its own agent ports (Ray's defaults are fixed numbers, and the
    # Jobs API needs the head's agent)
    def own_ports():
        return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]

    head = subprocess.Popen(
        [os.path.join(VENV_BIN, "ray"), "start", "--head", f"--port={gcs_port}", "--num-cpus=1",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}",
         "--disable-usage-stats", *own_ports(), "--block"],
        cwd=REPO, env=env, stdout=open(head_log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    worker = None
    try:
        url = f"http://127.0.0.1:{dash_port}"
        headers = {"Authorization": f"Bearer {token}"}
        _wait_http(url + "/api/version", headers, head, head_log)
        worker = subprocess.Popen(
            [os.path.join(VENV_BIN, "ray"), "start", f"--address=127.0.0.1:{gcs_port}", "--num-cpus=2", *own_ports(),
             "--block"],
            cwd=REPO, env=env, stdout=open(worker_log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 120
        raylet, opener = None, urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:  # the second node joined (with the token): the head counts two alive nodes
            assert worker.poll() is None, open(worker_log).read()[-3000:]
            assert time.time() < deadline, "the second node did not join:\n" + open(worker_log).read()[-3000:]
            raylet = raylet or next((p for p in psutil.Process(worker.pid).children(recursive=True)
                                     if p.name() == "raylet"), None)
            try:
                got = json.loads(opener.open(urllib.request.Request(url + "/api/v0/nodes", headers=headers),
                                             timeout=5).read())
                alive = [nd for nd in got["data"]["result"]["result"] if nd.get("state") == "ALIVE"]
            except (OSError, KeyError, ValueError):
                alive = []
            if raylet is not None and len(alive) == 2:
                break
            time.sleep(1)
        conf = tmp_path / "small-batches.yaml"
        conf.write_text("".join(f"{st}: {{resources: {{batch_size: 2}}}}\n"
                                for st in ("decode", "detect", "iqa", "fiqa", "fuse")))
        client = JobSubmissionClient(url, headers=headers)
        job_id = _submit(client, "python -m jobs.nightly_clean --source s3://nodeloss/src --out s3://nodeloss/qc "
                                 f"--profile offline-fast --config {conf} --no-progress", agent_wait=300)
        # midway: the second node's raylet dies (as when a spot node is reclaimed)
        deadline = time.time() + 300
        while len(fs.glob("nodeloss/qc/runs/*/_staging/part-*.parquet")) * 2 < 0.3 * n:
            assert client.get_job_status(job_id) == JobStatus.RUNNING or time.time() < deadline - 290, \
                client.get_job_logs(job_id)[-3000:]
            assert time.time() < deadline, "the job committed too little in time"
            time.sleep(0.3)
        raylet.kill()
        _wait_finished(client, job_id, 400)
        logs = client.get_job_logs(job_id)
        assert client.get_job_status(job_id) == JobStatus.SUCCEEDED, logs[-3000:]
    finally:
        for p in (worker, head):
            if p is not None:
                p.terminate()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
    [summary] = [json.loads(fs.cat(p)) for p in fs.glob("nodeloss/qc/runs/*/_summary.json")]
    assert summary["rows"] == n
    scores = f"nodeloss/qc/runs/run_id={summary['run_id']}/scores"
    uris = [u for name in summary["files"]["scores"]
            for u in pq.read_table(fs.open(f"{scores}/{name}", "rb"), columns=["uri"]).column("uri").to_pylist()]
    assert sorted(uris) == sorted(f"s3://nodeloss/src/{name}" for name, _ in imgs)  # each exactly once
    c = summary["cluster"]
    assert c["nodes"] == 2 and len(c["nodes_lost"]) == 1
    assert isinstance(c["rows_started"], int), (c, [ln for ln in logs.splitlines() if "count" in ln])
    assert c["rows_started"] >= n and c["rows_redone"] == c["rows_started"] - n
    assert any(w.startswith("lost 1 of 2 Ray nodes mid-run") for w in summary["warnings"])
    assert "WARNING: lost 1 of 2 Ray nodes" in logs
    print(f"node loss: {c['rows_redone']} of {n} rows redone ({100 * c['redone_share']:.1f}%)")
