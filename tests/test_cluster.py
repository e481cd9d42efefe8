"""Cluster jobs: a real local Ray head and the real Ray Jobs client, the cluster launcher config
validated by Ray's own autoscaler validation, and the KubeRay manifests."""

from __future__ import annotations

import copy
import glob
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
        deadline = time.time() + 120
        while True:  # the head's job agent comes up a little after its dashboard
            try:
                job_id = client.submit_job(
                    entrypoint="python -m jobs.nightly_clean --source s3://jobs/src --out s3://jobs/qc "
                               "--profile offline-fast --no-progress",
                    runtime_env={"working_dir": REPO})
                break
            except RuntimeError as e:
                if "No available agent" not in str(e) or time.time() > deadline:
                    raise
                time.sleep(1)
        deadline = time.time() + 300
        while client.get_job_status(job_id) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            assert time.time() < deadline, client.get_job_logs(job_id)[-3000:]
            time.sleep(1)
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
