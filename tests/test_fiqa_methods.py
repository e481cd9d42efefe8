"""The face-quality methods that run beside the primary one: SER-FIQ on an ArcFace-shaped ONNX
recognition model, SDD-FIQA as a preset of the ONNX FIQA contract, and restoration consistency
(FaceQgen's idea) on any face-restoration ONNX model.  Every model is a small ONNX file built here
(torch.onnx.export or onnx.helper) with the contract of the real ones; the faces are real photos
from installed packages (pipeline.tools.samples)."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.utils import Extractor
from scipy.stats import spearmanr

from pipeline import registry
from pipeline.backends.restoration import Restorer, gmsd, ssim
from pipeline.backends.serfiq import SerFIQ, serfiq_quality
from pipeline.config import load_config
from pipeline.errors import ConfigError, ModelError
from pipeline.executor import LocalExecutor
from pipeline.models import CATALOGUE
from pipeline.schema import COMPONENTS, FIQA_KEYS
from pipeline.stages.detect import DetectStage
from pipeline.tools import samples
from tests.support import synthetic


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def save(graph, path, opset: int = 17) -> str:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


# ------------------------------------------------------------------------------------ faces


def aligned_faces(cfg=None):
    """The detect stage's outputs (112 px ArcFace crops, 512 px FFHQ crops) of the primary face of
    each real test photo: t1.jpg's six people and the astronaut."""
    cfg = cfg or load_config()
    st = DetectStage(cfg)
    st.setup()
    imgs = list(samples.test_faces().values())
    n = len(imgs)
    batch = {"uri": np.array([f"f{i}" for i in range(n)], object), "status": np.full(n, "ok", object),
             "error": np.full(n, "", object), "image": np.empty(n, object)}
    for i, im in enumerate(imgs):
        batch["image"][i] = im
    out = st.process(batch)
    crops112, targets = [], []
    for i in range(n):
        assert out["num_faces"][i] >= 1, f"no face found in test photo {i}"
        boxes, scores = out["face_bbox"][i], out["face_det_score"][i]
        from pipeline.stages.base import primary_index

        crops112.append(out["face_crop112"][i][primary_index(boxes, scores)])
        targets.append(out["face_crop_target"][i])
    return np.stack(crops112), np.stack(targets)


@pytest.fixture(scope="module")
def faces():
    return aligned_faces()


# ------------------------------------------------------------------------------- SER-FIQ models


@pytest.fixture(scope="module")
def arcface(tmp_path_factory):
    """insightface's iResNet layout, tiny: ... -> BatchNormalization -> Flatten -> Gemm ->
    BatchNormalization -> embedding."""
    return synthetic.arcface_like(str(tmp_path_factory.mktemp("arc") / "w600k_r50.onnx"), tiny=True)


def affine_head_model(path, batch="N"):
    """A recognition-shaped graph whose head exercises every foldable op: Conv backbone ->
    Flatten -> MatMul (constant W) -> Add -> Mul -> Sub (constant first) -> Div -> Reshape ->
    BatchNormalization -> Identity -> LpNormalization."""
    rng = np.random.default_rng(1)
    d, e = 8 * 14 * 14, 32
    inits = [numpy_helper.from_array(rng.normal(0, 0.2, (8, 3, 8, 8)).astype(np.float32), "convw"),
             numpy_helper.from_array(rng.normal(0, 0.05, (d, e)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.normal(0, 1, e).astype(np.float32), "b"),
             numpy_helper.from_array(rng.uniform(0.5, 2, e).astype(np.float32), "mul"),
             numpy_helper.from_array(np.float32(0.7), "subc"),
             numpy_helper.from_array(np.float32(1.3), "divc"),
             numpy_helper.from_array(np.array([-1, e], np.int64), "shape"),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, e).astype(np.float32), "g"),
             numpy_helper.from_array(rng.normal(0, 0.3, e).astype(np.float32), "beta"),
             numpy_helper.from_array(rng.normal(0, 0.3, e).astype(np.float32), "mu"),
             numpy_helper.from_array(rng.uniform(0.5, 2, e).astype(np.float32), "var")]
    nodes = [helper.make_node("Conv", ["img", "convw"], ["c"], strides=[8, 8]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["flat"]),
             helper.make_node("MatMul", ["flat", "W"], ["mm"]),
             helper.make_node("Add", ["mm", "b"], ["a"]),
             helper.make_node("Mul", ["a", "mul"], ["m"]),
             helper.make_node("Sub", ["subc", "m"], ["s"]),
             helper.make_node("Div", ["s", "divc"], ["dv"]),
             helper.make_node("Reshape", ["dv", "shape"], ["rs"]),
             helper.make_node("BatchNormalization", ["rs", "g", "beta", "mu", "var"], ["bn"], epsilon=1e-3),
             helper.make_node("Identity", ["bn"], ["id"]),
             helper.make_node("LpNormalization", ["id"], ["embedding"], axis=1, p=2)]
    g = helper.make_graph(nodes, "rec", [helper.make_tensor_value_info("img", TensorProto.FLOAT, [batch, 3, 112, 112])],
                          [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, e])], initializer=inits)
    return save(g, path)


def noise_amplifying_recogniser(path, gain: float = 0.5, seed: int = 0) -> str:
    """A recognition-shaped network whose head amplifies fine detail: the embedding is a fixed
    direction carried by the face's coarse (8x8-pooled, shifted positive) content — the same
    whichever units dropout keeps — plus a random mix, with gain ``gain``, of Laplacian responses:
    edges a little, sensor noise a lot.  Dropout on that mix moves the embedding, the more the
    noisier the face: the property SER-FIQ measures."""
    import torch
    from torch import nn

    torch.manual_seed(seed)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lap = nn.Conv2d(3, 3, 3, 1, 1, groups=3, bias=False)
            k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
            self.lap.weight.data[:] = k
            self.pool = nn.AvgPool2d(8)
            dc, df, e = 3 * 14 * 14, 3 * 28 * 28, 64
            self.fc = nn.Linear(dc + df, e)
            direction = torch.randn(e)
            direction /= direction.norm()
            self.fc.weight.data[:, :dc] = direction[:, None] / dc
            self.fc.weight.data[:, dc:] = torch.randn(e, df) * gain / df ** 0.5
            self.fc.bias.data[:] = 0.0
            self.bn = nn.BatchNorm1d(e)
            self.bn.weight.data.uniform_(0.8, 1.2)
            self.bn.bias.data.normal_(0, 0.01)
            self.bn.running_mean.normal_(0, 0.01)
            self.bn.running_var.uniform_(0.8, 1.2)

        def forward(self, x):
            coarse = (self.pool(x) + 2.0).flatten(1)
            fine = self.lap(x)[:, :, ::4, ::4].flatten(1)
            return self.bn(self.fc(torch.cat([coarse, fine], 1)))

    return synthetic._export(Net(), torch.zeros(1, 3, 112, 112), path, "input.1", ["embedding"],
                             {"input.1": {0: "batch"}, "embedding": {0: "batch"}})


def head_session(path: str, head_input: str):
    """The original graph's head (head input -> embedding) as its own ONNX Runtime session."""
    model = onnx.shape_inference.infer_shapes(onnx.load(path))
    if head_input not in {v.name for v in model.graph.value_info}:
        model.graph.value_info.append(helper.make_tensor_value_info(head_input, TensorProto.FLOAT, None))
    head = Extractor(model).extract_model([head_input], [model.graph.output[0].name])
    return ort.InferenceSession(head.SerializeToString(), providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------------- SER-FIQ


@pytest.mark.parametrize("which", ["arcface", "affine"])
def test_serfiq_batched_head_equals_m_separate_runs_of_the_graph(which, arcface, faces, tmp_path):
    """The folded head, all m passes as one matrix product, gives what the model's own head gives
    when run once per dropout mask."""
    path = arcface if which == "arcface" else affine_head_model(tmp_path / "affine.onnx")
    s = SerFIQ(path, which, passes=100, dropout=0.5, seed=3)
    crops = faces[0][:3]
    feats = s.features(crops)
    emb = s.embeddings(feats)
    assert emb.shape == (3, 100, s.w.shape[1])
    sess = head_session(path, s.head_input)
    name = sess.get_inputs()[0].name
    for k in range(3):
        one_by_one = np.concatenate([sess.run(None, {name: (s.masks[j] * feats[k])[None]})[0] for j in range(100)])
        got = emb[k]
        if which == "affine":  # the graph ends in an L2 normalisation, which SER-FIQ does itself
            got = got / np.linalg.norm(got, axis=1, keepdims=True)
        np.testing.assert_allclose(got, one_by_one, rtol=1e-4, atol=1e-5 * np.abs(one_by_one).max())
    # and the undropped head is the model: backbone + folded head == the whole graph
    full = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    whole = full.run(None, {full.get_inputs()[0].name: s.preprocess(crops)})[0]
    folded = feats @ s.w + s.b
    if which == "affine":
        folded = folded / np.linalg.norm(folded, axis=1, keepdims=True)
    np.testing.assert_allclose(folded, whole, rtol=1e-4, atol=1e-5 * np.abs(whole).max())


def test_serfiq_masks_drop_at_the_rate_set_and_scale_the_rest(arcface):
    """Inverted dropout at rate p: about p of the head's inputs off in each pass, the rest scaled
    by 1/(1-p), as in the authors' code; m passes."""
    s = SerFIQ(arcface, "a", passes=50, dropout=0.3, seed=0)
    assert s.masks.shape == (50, s.w.shape[0])
    assert set(np.unique(s.masks)) == {0.0, np.float32(1 / 0.7)}
    off = (s.masks == 0).mean()
    assert abs(off - 0.3) < 5 * np.sqrt(0.3 * 0.7 / s.masks.size)  # five standard deviations


def test_serfiq_quality_is_the_papers_formula():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(2, 10, 16))
    e = emb / np.linalg.norm(emb, axis=2, keepdims=True)
    want = []
    for f in e:
        dist = sum(np.linalg.norm(f[i] - f[j]) for i in range(10) for j in range(i + 1, 10))
        want.append(2 / (1 + np.exp(2 / 100 * dist)))
    np.testing.assert_allclose(serfiq_quality(emb), want, rtol=1e-12)
    same = np.repeat(emb[:, :1], 10, axis=1)
    np.testing.assert_allclose(serfiq_quality(same), 1.0, atol=1e-6)  # perfectly stable


def test_serfiq_fixed_seed_gives_identical_scores_whatever_the_batch(arcface, faces):
    crops = faces[0]
    a = SerFIQ(arcface, "a", seed=7).score(crops)
    b = SerFIQ(arcface, "b", seed=7).score(crops)
    assert np.array_equal(a, b)
    alone = np.array([SerFIQ(arcface, "a", seed=7).score(crops[i:i + 1])[0] for i in (2, 5)])
    np.testing.assert_allclose(alone, a[[2, 5]], rtol=1e-6)  # not a function of the batch
    other = SerFIQ(arcface, "c", seed=8).score(crops)
    assert not np.array_equal(a, other)  # another seed, other masks
    assert np.all((a > 0) & (a <= 1))


def test_a_face_degraded_more_is_less_stable(faces, tmp_path):
    """On a network whose head amplifies fine detail, SER-FIQ's quality falls strictly with the
    sensor noise added to each real face (the validity test's noise severities)."""
    path = noise_amplifying_recogniser(str(tmp_path / "noisy_head.onnx"))
    s = SerFIQ(path, "noisy_head", passes=100, dropout=0.5, seed=0)
    severities = samples.FAMILIES["noise"][1]
    q = np.array([s.score(np.stack([samples.noise(c, sev, seed=i) for i, c in enumerate(faces[0])]))
                  for sev in severities])  # (severities, faces)
    for f in range(q.shape[1]):
        assert spearmanr(severities, q[:, f])[0] == pytest.approx(-1.0), q[:, f]
    assert np.all(q[0] > q[-1] + 0.05)  # not a rounding-level effect


def test_serfiq_models_without_a_head_or_with_the_wrong_input_are_named(tmp_path, arcface):
    x = helper.make_tensor_value_info("img", TensorProto.FLOAT, ["N", 3, 112, 112])
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    # embedding straight from convolutions: no fully connected layer
    pooled = helper.make_graph([helper.make_node("Conv", ["img", "w"], ["c"]),
                                helper.make_node("GlobalAveragePool", ["c"], ["p"]),
                                helper.make_node("Flatten", ["p"], ["emb"])], "nohead", [x],
                               [helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["N", 4])], initializer=[w])
    with pytest.raises(ModelError, match=r"SER-FIQ model .*nohead\.onnx.*no recognisable embedding head.*GlobalAveragePool"):
        SerFIQ(save(pooled, tmp_path / "nohead.onnx"), str(tmp_path / "nohead.onnx"))
    # a non-linearity after the fully connected layer: not a head SER-FIQ can split off
    fw = numpy_helper.from_array(np.ones((4, 8), np.float32), "fw")
    relu = helper.make_graph([helper.make_node("Conv", ["img", "w"], ["c"]),
                              helper.make_node("GlobalAveragePool", ["c"], ["p"]),
                              helper.make_node("Flatten", ["p"], ["f"]),
                              helper.make_node("MatMul", ["f", "fw"], ["m"]),
                              helper.make_node("Relu", ["m"], ["emb"])], "relu", [x],
                             [helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["N", 8])], initializer=[w, fw])
    with pytest.raises(ModelError, match=r"relu_head\.onnx.*no recognisable embedding head.*Relu"):
        SerFIQ(save(relu, tmp_path / "relu_head.onnx"), "relu_head.onnx")
    # an ArcFace-shaped model at the wrong input size for its contract
    with pytest.raises(ModelError, match=r"SER-FIQ model small_arc: .*shape \?x3x112x112.*\(N, 3, 96, 96\)"):
        SerFIQ(arcface, "small_arc", contract={"size": 96})
    small = affine_head_model(tmp_path / "ok.onnx")
    m = onnx.load(small)
    m.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 64
    onnx.save(m, str(tmp_path / "in64.onnx"))
    with pytest.raises(ModelError, match=r"in64.*3x64x112.*\(N, 3, 112, 112\)"):
        SerFIQ(str(tmp_path / "in64.onnx"), "in64")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match=r"SER-FIQ model junk.onnx: cannot read it as ONNX"):
        SerFIQ(str(tmp_path / "junk.onnx"), "junk.onnx")


# ---------------------------------------------------------------------------------- SDD-FIQA


def test_sdd_fiqa_preset_is_the_authors_preprocessing(tmp_path, faces):
    """The preset fed to the exported network gives what the authors' eval.py gives: PIL RGB,
    ToTensor (x/255), Normalize(mean 0.5, std 0.5), the network's output as the quality."""
    import torch

    path = synthetic.sdd_fiqa_like(str(tmp_path / "sdd.onnx"), tiny=True, seed=2)
    torch.manual_seed(2)
    net = synthetic.sdd_fiqa_module(tiny=True).eval()
    crops = faces[0]
    with torch.no_grad():
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0
        want = net((x - 0.5) / 0.5).numpy().reshape(-1)
    cfg = load_config(profile="offline-fast", overrides={"fiqa": {"sdd_fiqa": {"model": path, "sha256": sha(path)}}})
    out = registry.create("fiqa", "sdd_fiqa", cfg).score(crops)
    raw, score = out[:, FIQA_KEYS.index("sdd_raw")], out[:, FIQA_KEYS.index("sdd_score")]
    np.testing.assert_allclose(raw, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(score, np.clip(want, 0, 100), rtol=1e-4, atol=1e-4)  # pseudo-labels: 0..100
    others = [k for k in FIQA_KEYS if k not in ("sdd_raw", "sdd_score")]
    assert np.isnan(out[:, [FIQA_KEYS.index(k) for k in others]]).all()  # only its own columns
    c = CATALOGUE["sdd-fiqa"]
    assert (c.contract["size"], c.contract["colour"], c.contract["lo"], c.contract["hi"]) == (112, "RGB", 0.0, 100.0)
    assert not c.commercial_use and "as published by the authors" in c.licence


def test_sdd_fiqa_model_of_the_wrong_input_size_is_named(tmp_path):
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, 4), torch.nn.Flatten(), torch.nn.LazyLinear(1))
    net(torch.zeros(1, 3, 224, 224))
    path = synthetic._export(net, torch.zeros(1, 3, 224, 224), str(tmp_path / "sdd224.onnx"), "input", ["q"],
                             {"input": {0: "batch"}})
    cfg = load_config(profile="offline-fast", overrides={"fiqa": {"sdd_fiqa": {"model": path}}})
    with pytest.raises(ModelError, match=r"FIQA model .*sdd224\.onnx.*3x224x224.*\(N, 3, 112, 112\)"):
        registry.create("fiqa", "sdd_fiqa", cfg)


# ---------------------------------------------------------------------------------- restoration


def identity_restorer(path, size=512, batch="N"):
    g = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "id",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 3, size, size])])
    return save(g, path)


def blurring_restorer(path, sigma: float, size=512):
    """A 'restorer' that blurs: a depthwise Gaussian convolution (edge padding)."""
    r = int(np.ceil(3 * sigma))
    k1 = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = np.outer(k1, k1)
    k /= k.sum()
    w = numpy_helper.from_array(np.repeat(k[None, None], 3, axis=0).astype(np.float32), "k")
    pads = numpy_helper.from_array(np.array([0, 0, r, r, 0, 0, r, r], np.int64), "pads")
    g = helper.make_graph([helper.make_node("Pad", ["input", "pads"], ["p"], mode="edge"),
                           helper.make_node("Conv", ["p", "k"], ["output"], group=3)], "blur",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, size, size])],
                          initializer=[w, pads])
    return save(g, path)


@pytest.mark.parametrize("metric", ["ssim", "gmsd"])
def test_restoration_score_is_100_for_an_identity_restorer_and_falls_with_blur(metric, tmp_path, faces):
    targets = faces[1]
    ident = Restorer(identity_restorer(tmp_path / "id.onnx"), "id", metric=metric)
    assert ident.score_range == {"gmsd": (0.2, 0.0), "ssim": (0.8, 1.0)}[metric]
    raw, score = ident.score(targets)
    np.testing.assert_allclose(raw, 1.0 if metric == "ssim" else 0.0, atol=1e-6)
    np.testing.assert_allclose(score, 100.0, atol=1e-4)
    scores = [score]
    for sigma in (1.0, 2.5, 5.0):
        r = Restorer(blurring_restorer(tmp_path / f"blur{sigma}.onnx", sigma), f"blur{sigma}", metric=metric)
        scores.append(r.score(targets)[1])
    scores = np.array(scores)  # (restorers, faces)
    assert np.all(np.diff(scores, axis=0) < 0), scores  # every face: the more it is changed, the lower
    assert np.all(scores[-1] < 95)


def test_restoration_contract_colour_range_size_and_extra_inputs(tmp_path, faces):
    targets = faces[1][:2]
    # a 256 px model on 512 px crops, fed 0..1 values, with a fixed batch of 1: still the identity
    r = Restorer(identity_restorer(tmp_path / "id256.onnx", 256, batch=1), "id256", size=256, in_range=(0.0, 1.0))
    x, y = r.restore(targets)
    assert x.shape == (2, 256, 256, 3)
    np.testing.assert_allclose(y, x, atol=1e-3)
    # BGR declared: channels are swapped on the way in and back on the way out
    swap = helper.make_graph([helper.make_node("Slice", ["input", "st", "en", "ax", "stp"], ["output"])], "rev",
                             [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 512, 512])],
                             [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, 512, 512])],
                             initializer=[numpy_helper.from_array(np.array([2], np.int64), "st"),
                                          numpy_helper.from_array(np.array([-4], np.int64), "en"),
                                          numpy_helper.from_array(np.array([1], np.int64), "ax"),
                                          numpy_helper.from_array(np.array([-1], np.int64), "stp")])
    rev = save(swap, tmp_path / "rev.onnx")
    ident_bgr = Restorer(rev, "rev", colour="BGR")
    x, y = ident_bgr.restore(targets)
    np.testing.assert_allclose(y[..., ::-1], x, atol=1e-3)  # the model reversed what it was given
    # a second input (CodeFormer's fidelity weight): fed from extra_inputs, named when missing
    w = helper.make_tensor_value_info("weight", TensorProto.DOUBLE, [1])
    g = helper.make_graph([helper.make_node("Cast", ["weight"], ["wf"], to=TensorProto.FLOAT),
                           helper.make_node("Mul", ["input", "wf"], ["output"])], "cf",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 512, 512]), w],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 512, 512])])
    cf = save(g, tmp_path / "codeformer_like.onnx")
    with pytest.raises(ModelError, match=r"restoration model cf: its input 'weight' .*extra_inputs"):
        Restorer(cf, "cf")
    with pytest.raises(ModelError, match=r"restoration model cf: has no input 'fidelity'"):
        Restorer(cf, "cf", extra_inputs={"weight": 1.0, "fidelity": 0.5})
    _, s1 = Restorer(cf, "cf", extra_inputs={"weight": 1.0}).score(targets)
    _, s2 = Restorer(cf, "cf", extra_inputs={"weight": 0.5}).score(targets)
    np.testing.assert_allclose(s1, 100.0, atol=1e-4)
    assert np.all(s2 < s1)


def test_bad_restoration_models_are_named(tmp_path):
    with pytest.raises(ModelError, match=r"restoration model id256\.onnx: .*3x256x256.*\(N, 3, 512, 512\)"):
        Restorer(identity_restorer(tmp_path / "id256.onnx", 256), "id256.onnx", size=512)
    grey = helper.make_graph([helper.make_node("ReduceMean", ["input"], ["output"], axes=[1], keepdims=1)], "grey",
                             [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 512, 512])],
                             [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 1, 512, 512])])
    with pytest.raises(ModelError, match=r"restoration model grey: its output 'output' has shape \?x1x512x512"):
        Restorer(save(grey, tmp_path / "grey.onnx"), "grey")
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(ModelError, match=r"restoration model junk: ONNX Runtime cannot load it"):
        Restorer(str(tmp_path / "junk.onnx"), "junk")


def test_similarity_measures_agree_on_what_is_unchanged(faces):
    a = faces[1][0].astype(np.float64)
    assert ssim(a, a) == pytest.approx(1.0) and gmsd(a, a) == pytest.approx(0.0, abs=1e-12)
    noisy = samples.noise(faces[1][0], 16).astype(np.float64)
    assert ssim(a, noisy) < 0.9 and gmsd(a, noisy) > 0.02


# -------------------------------------------------------------------------- side by side, config


def test_every_method_side_by_side_in_one_run(tmp_path, arcface):
    """The primary ONNX model, SER-FIQ, SDD-FIQA and restoration consistency in one LocalExecutor
    run: each fills its own raw keys and its own component; the model list records each licence;
    `faceqc explain` and the HTML report show each component."""
    from pipeline.tools.explain import explain_text

    sdd = synthetic.sdd_fiqa_like(str(tmp_path / "sdd.onnx"), tiny=True)
    unet = synthetic.unet_restorer_like(str(tmp_path / "unet256.onnx"), 256, width=4, depth=2)
    cfg = load_config(profile="offline-fast", overrides={"fiqa": {
        "backend": "onnx", "model": arcface, "contract_from": "arcface-embedding-norm",
        "serfiq": {"model": arcface, "passes": 20},
        "sdd_fiqa": {"model": sdd},
        "restoration": {"model": unet, "size": 256}}})
    assert [b for b in cfg.backends() if b[0] == "fiqa"] == [
        ("fiqa", "onnx", "fiqa.backend"), ("fiqa", "serfiq", "fiqa.serfiq.model"),
        ("fiqa", "sdd_fiqa", "fiqa.sdd_fiqa.model"), ("fiqa", "restoration", "fiqa.restoration.model")]
    img = samples.astronaut()
    duo = np.concatenate([img, samples.gaussian_blur(img, 3.0)], axis=1)  # two faces: restoration judges one
    table = LocalExecutor(cfg).score_images([img, duo])
    rows = table.to_pylist()
    assert [r["status"] for r in rows] == ["ok", "ok"]
    for r in rows:
        p = r["primary_face"]
        for j, f in enumerate(r["faces"]):
            assert f["fiqa"]["model_raw"] is not None and f["fiqa"]["serfiq"] is not None
            assert f["fiqa"]["sdd_raw"] is not None and f["fiqa"]["stability"] is None
            for c in ("fiqa_model", "serfiq", "sdd_fiqa"):
                assert f["components"][c] is not None
            # restoration consistency: the primary face only (its FFHQ-aligned crop)
            assert (f["fiqa"]["restoration_raw"] is not None) == (j == p)
            assert (f["components"]["restoration"] is not None) == (j == p)
        text = explain_text(r, cfg)
        for c in ("serfiq", "sdd_fiqa", "restoration"):
            assert f"      {c:16s}" in text
    # the HTML report draws a histogram of each component, measured on both primary faces
    from pipeline.tools.report import build_report

    page, _ = build_report(table, None, cfg)
    for c in ("serfiq", "sdd_fiqa", "restoration"):
        svg = page[page.index(f'aria-label="{c}"'):]
        assert "2 measured" in svg[:svg.index("</svg>")]
    ids = {m.id: m for m in registry.models_for(cfg)}
    for mid in ("serfiq", "sdd-fiqa", "face-restoration", sdd, unet):
        assert mid in ids and not ids[mid].commercial_use
    assert {"serfiq", "sdd_fiqa", "restoration"} <= set(COMPONENTS)


def test_a_failing_method_fails_only_its_rows(tmp_path, arcface):
    """A restorer that breaks on one image (an input it cannot take) gives that row fiqa_error,
    and the other rows of the batch keep every method's scores."""
    cfg = load_config(profile="offline-fast", overrides={"fiqa": {
        "serfiq": {"model": arcface, "passes": 10},
        "restoration": {"model": identity_restorer(tmp_path / "id.onnx")}}})
    ex = LocalExecutor(cfg)
    stage = next(s for s in ex.stages if s.name == "fiqa")
    restorer = next(m for m in stage.methods if m.name == "restoration").model
    real = restorer.model.score

    def fragile(crops):
        if any(c.mean() < 60 for c in crops):
            raise RuntimeError("cannot restore a dark face")
        return real(crops)

    restorer.model.score = fragile
    img = samples.astronaut()
    rows = ex.score_images([img, samples.exposure(img, 0.12), img]).to_pylist()
    assert [r["status"] for r in rows] == ["ok", "fiqa_error", "ok"]
    assert "cannot restore a dark face" in rows[1]["error"]
    for r in (rows[0], rows[2]):
        f = r["faces"][r["primary_face"]]
        assert f["components"]["restoration"] == pytest.approx(100.0, abs=1e-3)
        assert f["fiqa"]["serfiq"] is not None


CONFIG_ERRORS = [
    ({"fiqa": {"serfiq": {"passes": 1}}}, ["fiqa.serfiq.passes", "greater than or equal to 2"]),
    ({"fiqa": {"serfiq": {"dropout": 1.0}}}, ["fiqa.serfiq.dropout", "less than 1"]),
    ({"fiqa": {"serfiq": {"seed": -1}}}, ["fiqa.serfiq.seed"]),
    ({"fiqa": {"serfiq": {"m": 100}}}, ["unknown setting 'fiqa.serfiq.m'", "passes", "dropout", "seed"]),
    ({"fiqa": {"serfiq": {"model": "r.onnx", "contract": {"sizes": 112}}}}, ["fiqa.serfiq.contract", "'sizes'"]),
    ({"fiqa": {"serfiq": {"sha256": "abc"}}}, ["fiqa.serfiq.sha256", "'abc'"]),
    ({"fiqa": {"sdd_fiqa": {"contract": {}}}}, ["unknown setting 'fiqa.sdd_fiqa.contract'", "model", "sha256"]),
    ({"fiqa": {"restoration": {"metric": "lpips"}}}, ["fiqa.restoration.metric", "'gmsd' or 'ssim'", "'lpips'"]),
    ({"fiqa": {"restoration": {"colour": "RGBA"}}}, ["fiqa.restoration.colour", "'RGBA'"]),
    ({"fiqa": {"restoration": {"range": [1, 1]}}}, ["fiqa.restoration.range", "two different numbers"]),
    ({"fiqa": {"restoration": {"score_range": [0.5]}}}, ["fiqa.restoration.score_range", "pair"]),
    ({"fiqa": {"restoration": {"size": 8}}}, ["fiqa.restoration.size", "16"]),
    ({"fiqa": {"restoration": {"extra_inputs": {"weight": "high"}}}}, ["fiqa.restoration.extra_inputs.weight"]),
    ({"fiqa": {"backend": "serfiq"}}, ["fiqa.backend", "'serfiq' runs beside", "fiqa.serfiq.model"]),
    ({"fiqa": {"backend": "restoration", "restoration": {"model": "x.onnx"}}}, ["'restoration' runs beside"]),
    ({"fuse": {"curves": {"serfiq": {"start": 0.8}}}}, ["fuse.curves.serfiq", "full must be below start"]),
    # face occlusion (tests/test_occlusion.py)
    ({"fiqa": {"occlusion": {"crop": 0}}}, ["fiqa.occlusion.crop", "greater than 0.1"]),
    ({"fiqa": {"occlusion": {"colour": "RGBA"}}}, ["fiqa.occlusion.colour", "'RGBA'"]),
    ({"fiqa": {"occlusion": {"range": [1, 1]}}}, ["fiqa.occlusion.range", "two different numbers"]),
    ({"fiqa": {"occlusion": {"output": "mask"}}}, ["fiqa.occlusion.output", "'face_logit' or 'classes'"]),
    ({"fiqa": {"occlusion": {"output": "classes"}}}, ["fiqa.occlusion", "needs face_classes"]),
    ({"fiqa": {"occlusion": {"output": "classes", "face_classes": [-1]}}}, ["fiqa.occlusion.face_classes.0"]),
    ({"fiqa": {"backend": "occlusion", "occlusion": {"model": "x.onnx"}}}, ["'occlusion' runs beside"]),
]


@pytest.mark.parametrize("overrides,words", CONFIG_ERRORS)
def test_config_errors_for_the_new_settings_are_one_line(overrides, words):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=overrides)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_models_list_shows_the_new_entries(capsys):
    from pipeline.cli import main

    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    for mid in ("serfiq", "sdd-fiqa", "face-restoration"):
        assert f"\n{mid} " in out
    assert "as published by the authors" in out and "S-Lab" in out


def test_the_methods_are_off_by_default():
    cfg = load_config()
    assert [b for b in cfg.backends() if b[0] == "fiqa"] == [("fiqa", "dlib_stability", "fiqa.backend")]
    assert {"serfiq", "sdd_fiqa", "restoration"} <= set(cfg.fuse.curves)


def test_side_by_side_methods_through_ray(ray_local, tmp_path, arcface):
    """The same methods through `run` on a local Ray, the fiqa stage as an actor pool: the Parquet
    rows carry each component and the run summary records each method's model and licence."""
    import os

    import pyarrow.parquet as pq

    from pipeline.run import run
    from pipeline.tools.demo import make_demo_set

    data = tmp_path / "imgs"
    make_demo_set(str(data))
    restorer = identity_restorer(tmp_path / "id.onnx")
    cfg = load_config(profile="offline-fast", overrides={"fiqa": {
        "serfiq": {"model": f"{arcface}#sha256={sha(arcface)}", "passes": 20},
        "restoration": {"model": restorer, "sha256": sha(restorer)},
        "resources": {"actors": True, "concurrency": 1, "num_cpus": 0.5, "batch_size": 4}}})
    summary = run([str(data)], str(tmp_path / "out"), cfg, progress=False)
    assert summary["rows"] == len(os.listdir(data))
    ids = {m["id"]: m for m in summary["models"]}
    assert {"serfiq", "face-restoration"} <= set(ids) and not ids["serfiq"]["commercial_use"]
    scored = [r for r in pq.read_table(str(tmp_path / "out")).to_pylist() if r["quality"] is not None]
    assert scored
    for r in scored:
        f = r["faces"][r["primary_face"]]
        assert f["components"]["serfiq"] is not None and f["fiqa"]["serfiq"] > 0
        assert f["components"]["restoration"] == pytest.approx(100.0, abs=1e-3)  # an identity restorer
        assert f["components"]["sdd_fiqa"] is None  # off
