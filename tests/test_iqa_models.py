"""Deep IQA backends: a timm backbone + regression head from a checkpoint (random-init here, the
same architecture and checkpoint contract teams train), loaded safely, batched, and run through
the real Ray pipeline as an actor pool — the way a GPU stage runs."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.backends.iqa_torch import TimmIQA
from pipeline.config import ConfigError, load_config
from pipeline.errors import ModelError
from pipeline.executor import LocalExecutor
from pipeline.run import run
from pipeline.tools.demo import make_demo_set
from pipeline.tools.samples import astronaut


def make_checkpoint(path, arch="resnet18", seed=0, lo=-1.0, hi=1.0):
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, num_classes=1)
    torch.save({"arch": arch, "state_dict": model.state_dict(), "input_size": 128,
                "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "lo": lo, "hi": hi}, path)
    return str(path), model


def test_timm_checkpoint_scores_like_the_model(tmp_path):
    path, model = make_checkpoint(tmp_path / "iqa.pt")
    iqa = TimmIQA(path)
    crops = np.random.default_rng(0).integers(0, 255, (5, 128, 128, 3), dtype=np.uint8)
    raw, mapped = iqa.score(crops, max_batch=2)  # several batches
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.inference_mode():
        want = model.eval()(x).reshape(-1).numpy()
    np.testing.assert_allclose(raw, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mapped, np.clip((want + 1) / 2, 0, 1) * 100, rtol=1e-4, atol=1e-3)
    r2, _ = iqa.score(np.stack([np.asarray(__import__("cv2").resize(c, (224, 224))) for c in crops]))
    assert r2.shape == (5,)  # other sizes are resized to the checkpoint's input size


def test_checkpoint_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "evil.pt"
    torch.save({"arch": "resnet18", "state_dict": {}, "x": Evil()}, p)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        TimmIQA(str(p))


def test_incomplete_checkpoint_is_a_clear_error(tmp_path):
    p = tmp_path / "bad.pt"
    torch.save({"state_dict": {}}, p)
    with pytest.raises(ModelError, match="lacks arch"):
        TimmIQA(str(p))
    with pytest.raises(ConfigError, match="iqa.model"):
        load_config(overrides={"iqa": {"model_backend": "timm"}})


def test_timm_iqa_in_pipeline_as_actor_pool(ray_local, tmp_path):
    path, _ = make_checkpoint(tmp_path / "iqa.pt")
    cfg = load_config(profile="offline-fast", overrides={"iqa": {
        "model_backend": "timm", "model": path,
        "resources": {"actors": True, "num_cpus": 0.5, "concurrency": 1, "batch_size": 8}}})
    data = tmp_path / "imgs"
    make_demo_set(str(data))
    out = tmp_path / "out"
    summary = run([str(data)], str(out), cfg, progress=False)
    assert summary["rows"] == summary["expected_rows"]
    assert any(m["id"] == path for m in summary["models"])  # the checkpoint is recorded
    rows = pq.read_table(str(out)).to_pylist()
    scored = [r for r in rows if r["primary_face"] is not None]
    assert scored
    for r in scored:
        f = r["faces"][r["primary_face"]]
        assert f["iqa"]["model_raw"] is not None and 0 <= f["iqa"]["model_score"] <= 100
        assert f["components"]["iqa_model"] is not None
        assert r["image_iqa"]["model_score"] is not None
    # same numbers as the single-process loop over the same stage code
    loop = LocalExecutor(cfg).score_images([astronaut()]).to_pylist()[0]
    ray_ast = next(r for r in rows if r["uri"].endswith("/astronaut.png"))
    assert abs(loop["faces"][0]["iqa"]["model_raw"] - ray_ast["faces"][0]["iqa"]["model_raw"]) < 1e-3
