"""Production-tier model plumbing: the model store (cache, lock, checksum, clear errors) and ONNX
face-quality models with declared input contracts, using small ONNX models built here with the
same input/output contracts as the real ones (eDifFIQA: RGB, (x/255-0.5)/0.5 -> one scalar;
MagFace: BGR, x/255 -> a vector whose norm is the quality)."""

import hashlib
import http.server
import os
import threading
from functools import partial

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline import modelstore
from pipeline.backends.fiqa_onnx import OnnxFIQA, map_output
from pipeline.config import ConfigError, load_config
from pipeline.errors import ModelError
from pipeline.executor import LocalExecutor
from pipeline.tools.samples import astronaut


def channel_model(path, weights, out_dim=1, batch=None):
    """(N,3,112,112) -> mean over pixels (N,3) -> @ W (3,out_dim).  Output = a linear function of
    the per-channel means, so the test knows exactly what each contract should produce."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch or "N", 3, 112, 112])
    y = helper.make_tensor_value_info("quality", TensorProto.FLOAT, [batch or "N", out_dim])
    w = numpy_helper.from_array(np.asarray(weights, np.float32).reshape(3, out_dim), "W")
    shape = numpy_helper.from_array(np.array([0, 3], np.int64), "shape")
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
             helper.make_node("Reshape", ["pooled", "shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "W"], ["quality"])]
    graph = helper.make_graph(nodes, "fiqa", [x], [y], initializer=[w, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def red_crops(n=3):
    c = np.zeros((n, 112, 112, 3), np.uint8)
    c[..., 0] = 255  # pure red, RGB
    return c


def test_rgb_contract_normalises_like_ediffiqa(tmp_path):
    path = channel_model(tmp_path / "m.onnx", [1.0, 0.0, 0.0])  # reads the model's channel 0
    contract = {"size": 112, "colour": "RGB", "scale": 1 / 255, "mean": [0.5] * 3, "std": [0.5] * 3,
                "output": "linear", "lo": -1.0, "hi": 1.0}
    raw, mapped = OnnxFIQA(path, contract).score(red_crops())
    np.testing.assert_allclose(raw, 1.0, atol=1e-5)  # (255/255 - 0.5) / 0.5
    np.testing.assert_allclose(mapped, 100.0, atol=1e-3)


def test_bgr_contract_swaps_channels_like_magface(tmp_path):
    path = channel_model(tmp_path / "m.onnx", [1.0, 0.0, 0.0], batch=1)  # fixed batch of 1
    contract = {"size": 112, "colour": "BGR", "scale": 1 / 255, "mean": [0.0] * 3, "std": [1.0] * 3,
                "output": "ofiq_sigmoid", "x0": 23.0, "w": 2.6}
    raw, mapped = OnnxFIQA(path, contract).score(red_crops(3))
    np.testing.assert_allclose(raw, 0.0, atol=1e-6)  # channel 0 is blue in BGR order: no red
    np.testing.assert_allclose(mapped, 100 / (1 + np.exp(23 / 2.6)), rtol=1e-4)
    # OFIQ's MagFace mapping: magnitude 23 -> 50, 30 -> ~93
    assert abs(map_output(np.array([23.0]), contract)[0] - 50) < 1e-9
    assert 92 < map_output(np.array([30.0]), contract)[0] < 94


def test_vector_output_scored_by_its_norm(tmp_path):
    path = channel_model(tmp_path / "m.onnx", np.eye(3) * 30.0, out_dim=3)
    contract = {"size": 112, "colour": "RGB", "scale": 1 / 255, "mean": [0] * 3, "std": [1] * 3,
                "output": "ofiq_sigmoid", "x0": 23.0, "w": 2.6}
    raw, _ = OnnxFIQA(path, contract).score(red_crops(2))
    np.testing.assert_allclose(raw, 30.0, rtol=1e-5)


def test_incomplete_contract_is_refused(tmp_path):
    path = channel_model(tmp_path / "m.onnx", [1, 0, 0])
    with pytest.raises(ModelError, match="contract lacks"):
        OnnxFIQA(path, {"size": 112, "colour": "RGB"})


def test_a_file_onnx_runtime_cannot_load_is_one_model_error(tmp_path):
    contract = {"size": 112, "colour": "RGB", "scale": 1 / 255, "mean": [0.5] * 3, "std": [0.5] * 3,
                "output": "linear", "lo": -1.0, "hi": 1.0}
    for name, data in (("not_onnx.onnx", b"<html>404</html>"), ("truncated.onnx", None)):
        p = tmp_path / name
        p.write_bytes(data if data is not None else
                      open(channel_model(tmp_path / "whole.onnx", [1, 0, 0]), "rb").read()[:40])
        with pytest.raises(ModelError, match=r"face-quality model mine: ONNX Runtime cannot load it: "):
            OnnxFIQA(str(p), contract, name="mine")


def test_onnx_fiqa_in_the_pipeline(tmp_path):
    """fiqa.backend onnx end to end: the model's mapped score becomes the fiqa_model component."""
    path = channel_model(tmp_path / "m.onnx", [1 / 3] * 3)  # mean brightness in [-1, 1]
    sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
    cfg = load_config(profile="offline-fast", overrides={"fiqa": {
        "backend": "onnx", "model": path, "sha256": sha,
        "contract": {"size": 112, "colour": "RGB", "scale": 1 / 255, "mean": [0.5] * 3, "std": [0.5] * 3,
                     "output": "linear", "lo": -1.0, "hi": 1.0}}})
    img = astronaut()
    dark = (img * 0.15).astype(np.uint8)
    rows = LocalExecutor(cfg).score_images([img, dark]).to_pylist()
    bright, darker = (r["faces"][r["primary_face"]] for r in rows)
    assert bright["fiqa"]["model_score"] > darker["fiqa"]["model_score"]
    assert bright["components"]["fiqa_model"] is not None
    assert bright["fiqa"]["stability"] is None  # the dlib network did not run


def test_onnx_backend_needs_a_model():
    with pytest.raises(ConfigError, match="fiqa.model"):
        load_config(overrides={"fiqa": {"backend": "onnx"}})


def test_missing_model_names_it_and_how_to_pull(tmp_path):
    with pytest.raises(ModelError, match=r"not found .*faceqc models pull"):
        modelstore.resolve(str(tmp_path / "nope.onnx"))
    with pytest.raises(ModelError, match="magface-iresnet50-ofiq"):
        modelstore.resolve("magface-iresnet50-ofiq")  # registry entry without a download location


def test_checksum_mismatch_is_an_error(tmp_path):
    p = tmp_path / "m.bin"
    p.write_bytes(b"weights")
    good = hashlib.sha256(b"weights").hexdigest()
    assert modelstore.resolve(str(p), good) == str(p)
    assert modelstore.resolve(f"{p}#sha256={good}") == str(p)
    with pytest.raises(ModelError, match="sha256 mismatch"):
        modelstore.resolve(str(p), "0" * 64)


@pytest.fixture
def http_models(tmp_path):
    """Models served over HTTP on loopback by a real server."""
    root = tmp_path / "srv"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_remote_model_cached_once_verified_and_mirrored(http_models, tmp_path, monkeypatch):
    root, base = http_models
    monkeypatch.setenv("FACEQC_MODEL_CACHE", str(tmp_path / "cache"))
    data = os.urandom(200_000)
    (root / "fiqa.onnx").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    uri = f"{base}/fiqa.onnx#sha256={sha}"
    # concurrent actors on one node: one fetch, everyone gets the same verified file
    paths, errors = [], []

    def get():
        try:
            paths.append(modelstore.resolve(uri))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=get) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors and len(set(paths)) == 1
    assert open(paths[0], "rb").read() == data
    assert not [f for f in os.listdir(tmp_path / "cache") if f.endswith(".part")]
    (root / "fiqa.onnx").unlink()  # cached: no second fetch
    assert modelstore.resolve(uri) == paths[0]
    mirror = modelstore.pull(uri, to=str(tmp_path / "mirror"))
    assert open(mirror, "rb").read() == data
    # a corrupt download is refused and not cached
    (root / "bad.onnx").write_bytes(b"corrupt")
    with pytest.raises(ModelError, match="sha256 mismatch"):
        modelstore.resolve(f"{base}/bad.onnx#sha256={sha}")
    assert not [f for f in os.listdir(tmp_path / "cache") if "bad.onnx" in f and not f.endswith(".lock")]
    with pytest.raises(ModelError, match="cannot fetch"):
        modelstore.resolve(f"{base}/missing.onnx")
    # republished at the same URI under a new pin: the cached copy of the old one is fetched again
    new = os.urandom(1000)
    (root / "fiqa.onnx").write_bytes(new)
    sha2 = hashlib.sha256(new).hexdigest()
    assert modelstore.resolve(f"{base}/fiqa.onnx#sha256={sha2}") == paths[0]
    assert open(paths[0], "rb").read() == new
    with pytest.raises(ModelError, match="keep one of them"):  # a pin on the URI, another in the config
        modelstore.resolve(f"{base}/fiqa.onnx#sha256={sha2}", sha)
    # a presigned URL: a short cache name without the query; its signature in no name, note or message
    signed = f"{base}/fiqa.onnx?X-Amz-Credential=AKIA%2Fnode&X-Amz-Signature={'f' * 300}"
    p3 = modelstore.resolve(signed)
    assert open(p3, "rb").read() == new and len(os.path.basename(p3)) < 100 and "Signature" not in p3
    assert "f" * 40 not in open(p3 + ".json").read()
    with pytest.raises(ModelError) as e:
        modelstore.resolve(f"{base}/missing.onnx?X-Amz-Signature=SECRETSIGNATURE")
    assert "SECRETSIGNATURE" not in str(e.value)


def test_gpu_node_example_config_is_valid():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = load_config(os.path.join(root, "configs", "gpu-node.yaml"))
    gpu = [cfg.detect.resources, cfg.iqa.resources, cfg.fiqa.resources]
    assert all(r.actors and 0 < r.num_gpus <= 0.5 for r in gpu)
    assert sum(r.num_gpus * (r.concurrency[1] if isinstance(r.concurrency, (list, tuple)) else r.concurrency)
               for r in gpu) <= 1.0  # the three model stages fit on one GPU together
    assert cfg.detect.detector == "scrfd" and cfg.fiqa.backend == "onnx" and cfg.iqa.model_backend == "timm"


def test_gpu_node_config_with_gpu_decoding_still_fits(tmp_path):
    """The commented-out GPU decoder of configs/gpu-node.yaml, switched on, is valid and all four
    GPU stages still fit on one GPU."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = open(os.path.join(root, "configs", "gpu-node.yaml")).read()
    on = text.replace("  # backend: torchvision", "  backend: torchvision").replace(
        "  resources: {num_cpus: 1, batch_size: 16}\n", "").replace(
        "  # resources: {actors: true, num_gpus: 0.1", "  resources: {actors: true, num_gpus: 0.1")
    assert on != text
    (tmp_path / "gpu-decode.yaml").write_text(on)
    cfg = load_config(str(tmp_path / "gpu-decode.yaml"))
    assert cfg.decode.backend == "torchvision" and cfg.decode.resources.actors
    gpu = [cfg.decode.resources, cfg.detect.resources, cfg.iqa.resources, cfg.fiqa.resources]

    def most(r):
        return r.concurrency[1] if isinstance(r.concurrency, (list, tuple)) else (r.concurrency or 1)

    assert sum(r.num_gpus * most(r) for r in gpu) <= 1.0
