"""The pyiqa backend (optional, non-commercial): pyiqa 0.1.16 networks of MUSIQ, MetaIQA,
HyperIQA, TReS, MANIQA and TOPIQ-face, built offline, with random-init weights saved in the
layout of pyiqa's own release files and loaded by our safe, strict loader.  Each must score
exactly as pyiqa's own loader scores the same file, on real face photos."""

import cv2
import numpy as np
import pyarrow.parquet as pq
import pyiqa  # installed by `make test` (see the Makefile): no skip in CI
import pytest
import torch

from pipeline.backends.iqa_torch import PyiqaIQA, _no_backbone_downloads, offline_kwargs
from pipeline.config import load_config
from pipeline.errors import ConfigError, ModelError
from pipeline.executor import LocalExecutor
from pipeline.tools.samples import astronaut, tom_hanks

pytestmark = pytest.mark.slow  # minutes of CPU: not in make test-fast

# metric -> (options that cut test-time crops on CPU, pyiqa's release files wrap weights in 'params')
METRICS = {
    "musiq": ({}, False),
    "metaiqa": ({}, False),
    "hyperiqa": ({"num_crop": 1}, True),
    "tres": ({"test_sample": 1}, False),
    "topiq_nr-face": ({}, True),
}


@pytest.fixture(scope="module")
def faces():
    """Three 224 px face crops from packaged photos, one of them blurred."""
    a = astronaut()[20:240, 140:360]
    t = tom_hanks()
    h, w = t.shape[:2]
    t = t[: min(h, w), : min(h, w)]
    crops = [cv2.resize(np.ascontiguousarray(c), (224, 224), interpolation=cv2.INTER_AREA) for c in (a, t)]
    crops.append(cv2.GaussianBlur(crops[0], (0, 0), 3))
    return np.stack(crops)


def _random_weights(metric, options, params, path, seed):
    """pyiqa's network for ``metric``, random-init, saved as pyiqa's release files lay it out."""
    torch.manual_seed(seed)
    with _no_backbone_downloads():
        net = pyiqa.create_metric(metric, as_loss=False, device="cpu", **offline_kwargs(metric, options)).net
    # random-init BatchNorm statistics too, so a stats buffer left unloaded would show
    sd = {k: (torch.rand_like(v) + 0.5 if "running_var" in k else v) for k, v in net.state_dict().items()}
    torch.save({"params": sd} if params else sd, path)
    return str(path)


@pytest.mark.parametrize("metric", list(METRICS))
def test_pyiqa_metric_scores_as_pyiqa_itself(metric, faces, tmp_path):
    options, params = METRICS[metric]
    path = _random_weights(metric, options, params, tmp_path / f"{metric}.pth", seed=1)
    ours = PyiqaIQA(metric, path, lo=0.0, hi=1.0, options=options)
    raw, mapped = ours.score(faces, max_batch=2)  # two batches
    assert raw.shape == mapped.shape == (3,) and np.isfinite(raw).all()
    # pyiqa's own loader (torch.load with weights_only=False, fine for a file made here)
    kw = {**offline_kwargs(metric, options), "pretrained_model_path": path}
    torch.manual_seed(99)
    with _no_backbone_downloads():
        ref = pyiqa.create_metric(metric, as_loss=False, device="cpu", **kw)
    with torch.inference_mode():
        want = ref(torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 255).reshape(-1).numpy()
    np.testing.assert_allclose(raw, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mapped, np.clip(want, 0, 1) * 100, rtol=1e-4, atol=1e-3)
    # and a network with other random weights scores differently: the file's weights are in use
    other = PyiqaIQA(metric, _random_weights(metric, options, params, tmp_path / "other.pth", seed=2),
                     options=options)
    assert not np.allclose(other.score(faces)[0], raw, rtol=1e-3, atol=1e-5)


def test_maniqa_loads_strictly(tmp_path):
    """MANIQA (ViT-B/8, 136 M parameters) is loaded, not run: 20 ViT crops per image take
    minutes on CPU."""
    path = _random_weights("maniqa", {}, True, tmp_path / "maniqa.pth", seed=3)
    m = PyiqaIQA("maniqa", path)
    sd = torch.load(path, weights_only=True)["params"]
    got = m.metric.net.state_dict()
    assert all(torch.equal(got[k], v) for k, v in sd.items())


def test_weights_that_do_not_fit_are_named(faces, tmp_path):
    path = tmp_path / "musiq.pth"
    _random_weights("musiq", {}, False, path, seed=4)
    sd = torch.load(path, weights_only=True)
    dropped = sorted(sd)[0]
    del sd[dropped]
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, path)
    with pytest.raises(ModelError, match=r"do not fit musiq: 1 missing \(" + dropped.replace(".", r"\.")
                       + r"\), 1 unexpected \(extra\.weight\)"):
        PyiqaIQA("musiq", str(path))
    with pytest.raises(ConfigError, match="has no metric 'musiq-v9'"):
        PyiqaIQA("musiq-v9", str(path))


def test_output_range_defaults_to_the_metrics_declared_range(faces, tmp_path):
    musiq = _random_weights("musiq", {}, False, tmp_path / "musiq.pth", seed=6)
    default, explicit = PyiqaIQA("musiq", musiq), PyiqaIQA("musiq", musiq, lo=0.0, hi=100.0)
    assert (default.lo, default.hi) == (0.0, 100.0)  # pyiqa declares "~0, ~100" for MUSIQ
    np.testing.assert_allclose(default.score(faces)[1], explicit.score(faces)[1])
    meta = PyiqaIQA("metaiqa", _random_weights("metaiqa", {}, False, tmp_path / "m.pth", seed=7))
    assert (meta.lo, meta.hi) == (0.0, 1.0)
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="iqa.model_range: must be empty or"):
        load_config(overrides={"iqa": {"model_range": [0.5, 0.5]}})


def test_weights_with_code_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "evil.pth"
    torch.save({"params": {"x": Evil()}}, p)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        PyiqaIQA("metaiqa", str(p))


def test_pyiqa_in_the_pipeline_records_its_licence(tmp_path):
    path = _random_weights("metaiqa", {}, False, tmp_path / "metaiqa.pth", seed=5)
    cfg = load_config(profile="offline-fast", overrides={"iqa": {
        "model_backend": "pyiqa", "pyiqa_metric": "metaiqa", "model": path}})
    pipe = LocalExecutor(cfg)
    table = pipe.score_images([astronaut(), tom_hanks()])
    rows = table.to_pylist()
    for r in rows:
        f = r["faces"][r["primary_face"]]
        assert f["iqa"]["model_raw"] is not None and 0 <= f["iqa"]["model_score"] <= 100
        assert f["components"]["iqa_model"] is not None
        assert r["image_iqa"]["model_score"] is not None
    out = tmp_path / "t.parquet"
    pq.write_table(table, out)
    meta = pq.read_schema(out).metadata
    models = meta[b"faceqc.models"].decode()
    assert "PolyForm Noncommercial" in models and path in models
