"""The production profile end to end through a real local Ray, on CPU: an insightface-style
pack (SCRFD-shaped detector, 1k3d68-shaped landmark/pose model, ArcFace-shaped recognition
model, all small ONNX files built here with the real input/output contracts), an ONNX face-quality
model and a timm IQA checkpoint, every model stage an actor pool, models named by sha-pinned
paths, plus the failure modes a user meets: a corrupt model and a missing one."""

import hashlib
import os
import shutil

import pyarrow.parquet as pq
import pytest
import torch

from pipeline.config import load_config
from pipeline.errors import ModelError
from pipeline.run import run
from pipeline.tools.demo import make_demo_set
from tests.support import synthetic


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    d = tmp_path_factory.mktemp("buffalo_tiny")
    synthetic.scrfd_like(str(d / "det_10g.onnx"), "tiny", plant_face=True)
    synthetic.landmark_1k3d68_like(str(d / "1k3d68.onnx"), tiny=True)
    synthetic.arcface_like(str(d / "w600k_r50.onnx"), tiny=True)
    import timm

    torch.manual_seed(0)
    ck = d / "iqa.pt"
    torch.save({"arch": "resnet18", "state_dict": timm.create_model("resnet18", num_classes=1).state_dict(),
                "input_size": 112, "lo": -1.0, "hi": 1.0}, ck)
    return d


def production_cfg(pack, **over):
    actor = lambda cpus: {"actors": True, "num_cpus": cpus, "concurrency": 1, "batch_size": 8}  # noqa: E731
    rec = str(pack / "w600k_r50.onnx")
    cfg = {
        "detect": {"detector": "scrfd", "model": str(pack), "resources": actor(0.5)},
        "fiqa": {"backend": "onnx", "model": f"{rec}#sha256={sha(rec)}", "contract_from": "arcface-embedding-norm",
                 "resources": actor(0.25)},
        "iqa": {"model_backend": "timm", "model": str(pack / "iqa.pt"), "sha256": sha(pack / "iqa.pt"),
                "resources": actor(0.25)},
    }
    for k, v in over.items():
        cfg[k] = {**cfg[k], **v}
    return load_config(overrides=cfg)


def test_production_profile_end_to_end(ray_local, pack, tmp_path):
    data = tmp_path / "imgs"
    make_demo_set(str(data))
    out = tmp_path / "out"
    summary = run([str(data)], str(out), production_cfg(pack), progress=False)
    n = len(os.listdir(data))
    assert summary["rows"] == n
    ids = [m["id"] for m in summary["models"]]
    assert str(pack) in ids and any(i.endswith("w600k_r50.onnx") for i in ids)
    assert any(not m["commercial_use"] for m in summary["models"])  # user-supplied files: not vouched for
    rows = pq.read_table(str(out)).to_pylist()
    decoded = [r for r in rows if r["status"] in ("ok", "no_face")]
    assert decoded and all(r["num_faces"] >= 1 for r in decoded)  # the detector plants one face per image
    for r in decoded:
        f = r["faces"][r["primary_face"]]
        assert len(f["landmarks"]) == 5 and f["inter_eye_px"] > 0
        assert all(f[k] is not None for k in ("yaw", "pitch", "roll"))  # 1k3d68 pose
        assert f["fiqa"]["model_raw"] > 0 and 0 <= f["fiqa"]["model_score"] <= 100
        assert f["iqa"]["model_raw"] is not None and f["components"]["iqa_model"] is not None
        assert f["components"]["fiqa_model"] is not None and 0 <= r["quality"] <= 100
    bad = [r for r in rows if r["uri"].endswith("corrupt_upload.jpg")]
    assert bad and bad[0]["status"] == "decode_error"


def test_corrupt_model_fails_before_scoring(pack, tmp_path):
    from pipeline.executor import LocalExecutor

    rec = tmp_path / "w600k_r50.onnx"
    shutil.copy(pack / "w600k_r50.onnx", rec)
    cfg = production_cfg(pack, fiqa={"model": f"{rec}#sha256={'0' * 64}"})
    with pytest.raises(ModelError, match="sha256 mismatch"):
        LocalExecutor(cfg)


def test_missing_model_is_named_with_how_to_pull(pack, tmp_path):
    from pipeline.executor import LocalExecutor

    empty = tmp_path / "empty_pack"
    empty.mkdir()
    with pytest.raises(ModelError, match="det"):
        LocalExecutor(production_cfg(pack, detect={"model": str(empty)}))
    with pytest.raises(ModelError, match="faceqc models pull"):
        LocalExecutor(production_cfg(pack, iqa={"model": str(tmp_path / "missing.pt"), "sha256": ""}))
