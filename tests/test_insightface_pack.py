"""insightface model packs on ONNX Runtime (pipeline.backends.insightface_pack).

The real packs cannot be downloaded here, so the decoding is checked against ONNX graphs whose
outputs the test controls (built with onnx.helper): an SCRFD-shaped detector that emits known
scores / box / keypoint distances at known anchors, some of them read from single input pixels
(so the letterbox geometry, the colour order, the normalisation and the per-image routing of a
batch all show in the result); a 1k3d68-shaped model that emits a chosen 3-D shape (the mean face,
rotated by known angles) plus a pixel probe; an ArcFace-shaped model whose embedding is a known
linear function of the crop's channel means.  Expected values are worked out here by hand from
insightface's documented conventions, not by calling the code under test.  The random-init
stand-ins of pipeline.backends.synthetic (torch) are checked for their contracts and sizes.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.backends import insightface_pack as ifp
from pipeline.backends.fiqa_onnx import OnnxFIQA
from pipeline.backends.insightface_pack import Landmark3D68, ScrfdDetector, find_pack
from pipeline.errors import ModelError
from pipeline.geometry import head_pose_dlib5
from pipeline.models import CATALOGUE

ARCFACE_NORM = CATALOGUE["arcface-embedding-norm"].contract

NORM = lambda v: (v - 127.5) / 128.0  # noqa: E731 - SCRFD / 1k3d68 input normalisation


def _save(nodes, inputs, outputs, inits, path):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


class _Graph:
    """Tiny helper: unique names for initializers and nodes."""

    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def const(self, arr, dtype=np.float32):
        self.n += 1
        name = f"c{self.n}"
        self.inits.append(numpy_helper.from_array(np.asarray(arr, dtype), name))
        return name

    def op(self, kind, inputs, name=None, **attrs):
        self.n += 1
        out = f"t{self.n}"
        self.nodes.append(helper.make_node(kind, inputs, [out], name=name or f"node{self.n}", **attrs))
        return out

    def probe(self, x, channel, px, py):
        """(N, 1, 1): the value of input channel ``channel`` at pixel (px, py) of every batch item."""
        s = self.op("Slice", [x, self.const([channel, py, px], np.int64), self.const([channel + 1, py + 1, px + 1],
                                                                                     np.int64),
                              self.const([1, 2, 3], np.int64)])
        return self.op("Reshape", [s, self.const([-1, 1, 1], np.int64)])


# ------------------------------------------------------------------------------------ SCRFD

def scrfd_probe_model(path, planted, probes, *, strides=(8, 16, 32), anchors=2, kps=True, layout="rank3",
                      batch="N", size=(640, 640), first_only=False):
    """An SCRFD-shaped graph (3·len(strides) or 2·len(strides) outputs) that ignores the picture
    except for probes: ``planted`` = [(stride, x, y, a, score, box4, kps10)] constant detections
    (distances in stride units); ``probes`` = [(stride, x, y, a, channel, px, py, box4, kps10)]
    anchors whose score is the normalised input value at pixel (px, py) of ``channel``.
    ``layout``: "rank3" outputs (N, K, C); "rank2" outputs (N·K, C) batch-major, as det_10g.onnx.
    ``first_only``: outputs describe only the first image of the batch (not batchable)."""
    w_in, h_in = size
    g = _Graph()
    x = "input.1"
    src = g.op("Slice", [x, g.const([0], np.int64), g.const([1], np.int64), g.const([0], np.int64)]) \
        if first_only else x
    zero = g.op("Mul", [g.probe(src, 0, 0, 0), g.const(0.0)])  # (N, 1, 1) zeros: carries the batch axis
    probe_vals = [g.probe(src, p[4], p[5], p[6]) for p in probes]
    comps = [("score", 1), ("bbox", 4)] + ([("kps", 10)] if kps else [])
    outputs, out_infos = [], []
    for comp, c in comps:
        for stride in strides:
            k = (h_in // stride) * (w_in // stride) * anchors
            base = np.zeros((1, k, c), np.float32)
            masks = []
            for (s, ax, ay, a, score, box, kp) in planted:
                if s != stride:
                    continue
                i = (ay * (w_in // s) + ax) * anchors + a
                base[0, i] = {"score": [score], "bbox": box, "kps": kp}[comp]
            for pv, (s, ax, ay, a, _ch, _px, _py, box, kp) in zip(probe_vals, probes):
                if s != stride:
                    continue
                i = (ay * (w_in // s) + ax) * anchors + a
                if comp == "score":
                    m = np.zeros((1, k, 1), np.float32)
                    m[0, i] = 1.0
                    masks.append((pv, m))
                else:
                    base[0, i] = box if comp == "bbox" else kp
            acc = g.op("Add", [zero, g.const(base)])
            for pv, m in masks:
                acc = g.op("Add", [acc, g.op("Mul", [pv, g.const(m)])])
            name = f"{comp}_{stride}"
            if layout == "rank2":
                g.nodes.append(helper.make_node("Reshape", [acc, g.const([-1, c], np.int64)], [name], name=f"r_{name}"))
                out_infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["rows", c]))
            else:
                g.nodes.append(helper.make_node("Identity", [acc], [name], name=f"id_{name}"))
                out_infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, k, c]))
            outputs.append(name)
    inp = helper.make_tensor_value_info(x, TensorProto.FLOAT, [batch, 3, h_in, w_in])
    return _save(g.nodes, [inp], out_infos, g.inits, path)


KPS_A1 = [-1, -1, 1, -1, 0, 0, -1, 1, 1, 1]  # stride units around the anchor centre
KPS_P = [0.5, 0.25, 1, 0.25, 0.75, 0.75, 0.5, 1, 1, 1]
PLANTED = [
    # stride, x, y, anchor, score, (l, t, r, b), keypoints      -> det-canvas box
    (16, 10, 5, 1, 0.9, [2, 3, 4, 5], KPS_A1),             # A1: centre (160, 80) -> (128, 32, 224, 160)
    (16, 11, 5, 1, 0.8, [3, 3, 3, 5], [0] * 10),           # A2: (176, 80) -> the same box: NMS removes it
    (32, 7, 2, 0, 0.7, [1, 1, 1, 1], [0] * 10),            # A3: (224, 64) -> (192, 32, 256, 96): IoU 0.15, kept
    (8, 60, 10, 0, 0.45, [1, 1, 1, 1], [0] * 10),          # A4: below the 0.5 threshold
]
PROBES = [
    # stride, x, y, anchor, channel, px, py, box, keypoints
    (8, 2, 3, 0, 0, 16, 24, [1, 1, 1, 1], KPS_P),          # P: red at canvas (16, 24) -> (8, 16, 24, 32)
    (8, 37, 50, 1, 1, 300, 400, [1, 1, 1, 1], [0] * 10),   # Q: green at canvas (300, 400) -> (288, 392, 304, 408)
]


def _kps(centre, d, stride):
    return np.asarray(centre, float) + np.asarray(d, float).reshape(5, 2) * stride


def expected_faces(det_scale, with_p, with_q):
    """(boxes, scores, kps) in source pixels: det-canvas geometry / det_scale, score order."""
    faces = []
    if with_p:
        faces.append(([8, 16, 24, 32], NORM(255.0), _kps((16, 24), KPS_P, 8)))
    if with_q:
        faces.append(([288, 392, 304, 408], NORM(255.0), _kps((296, 400), [0] * 10, 8)))
    faces.append(([128, 32, 224, 160], 0.9, _kps((160, 80), KPS_A1, 16)))
    faces.append(([192, 32, 256, 96], 0.7, _kps((224, 64), [0] * 10, 32)))
    faces.sort(key=lambda f: -f[1])
    return (np.array([f[0] for f in faces], float) / det_scale, np.array([f[1] for f in faces]),
            np.array([f[2] for f in faces]) / det_scale)


def two_images():
    """A landscape and a portrait image, letterboxed very differently into 640x640.
    Image 1: 480x960 -> 640x320 canvas content, det_scale 2/3, yellow: red channel on at P, and
    Q's pixel (300, 400) lies in the black padding below the content (top-left placement).
    Image 2: 1000x500 -> 320x640 content, det_scale 0.64, cyan: no red (no P), green at Q."""
    a = np.zeros((480, 960, 3), np.uint8)
    a[..., 0] = a[..., 1] = 255
    b = np.zeros((1000, 500, 3), np.uint8)
    b[..., 1] = b[..., 2] = 255
    return [a, b], [2 / 3, 0.64]


class CountingSession:
    """Wraps an onnxruntime session and counts run() calls."""

    def __init__(self, s):
        self.s, self.calls, self.batches = s, 0, []

    def run(self, names, feeds):
        self.calls += 1
        self.batches.append(len(next(iter(feeds.values()))))
        return self.s.run(names, feeds)

    def __getattr__(self, k):
        return getattr(self.s, k)


@pytest.mark.parametrize("layout,batch,first_only,runs", [
    ("rank3", "N", False, [2]),        # dynamic batch, (N, K, C) outputs: one run for both images
    ("rank2", "N", False, [2]),        # dynamic batch, (N*K, C) outputs like det_10g.onnx: one run
    ("rank3", 1, False, [1, 1]),       # fixed batch 1: one run per image
    ("rank2", 1, False, [1, 1]),
    ("rank2", "N", True, [2, 1, 1]),   # outputs that do not split per image: detected, one per image
])
def test_scrfd_decodes_letterboxed_batch_exactly(tmp_path, layout, batch, first_only, runs):
    path = scrfd_probe_model(tmp_path / "det.onnx", PLANTED, PROBES, layout=layout, batch=batch,
                             first_only=first_only)
    det = ScrfdDetector(path, det_size=(640, 640))
    det.session = CountingSession(det.session)
    images, scales = two_images()
    res = det.detect(images)
    assert det.session.batches == runs
    assert len(res) == 2
    for (boxes, scores, kps), scale, pq in zip(res, scales, [(True, False), (False, True)]):
        want_b, want_s, want_k = expected_faces(scale, *pq)
        assert boxes.dtype == np.float32 and boxes.shape == (3, 4) and kps.shape == (3, 5, 2)
        np.testing.assert_allclose(scores, want_s, atol=1e-6)
        np.testing.assert_allclose(boxes, want_b, atol=1e-3)
        np.testing.assert_allclose(kps, want_k, atol=1e-3)
    # image 1's probe face in source pixels: canvas (8, 16, 24, 32) * 1.5
    np.testing.assert_allclose(res[0][0][0], [12, 24, 36, 48], atol=1e-3)
    assert res[0][1][0] == pytest.approx(0.99609375)  # (255 - 127.5) / 128: red, RGB order


def test_scrfd_thresholds_and_no_faces(tmp_path):
    path = scrfd_probe_model(tmp_path / "det.onnx", PLANTED, PROBES)
    images, scales = two_images()
    # a 0.4 threshold admits A4 (0.45); NMS 0.1 now also removes A3 (IoU 0.15 with A1)
    boxes, scores, _ = ScrfdDetector(path, score_thresh=0.4, nms_thresh=0.1).detect(images[:1])[0]
    np.testing.assert_allclose(scores, [NORM(255.0), 0.9, 0.45], atol=1e-6)
    np.testing.assert_allclose(boxes[2], np.array([472, 72, 488, 88]) * 1.5, atol=1e-3)  # A4, stride 8
    # everything below threshold: empty, well-typed results
    none = ScrfdDetector(path, score_thresh=0.999).detect(images)
    assert [len(b) for b, _, _ in none] == [0, 0]
    assert none[0][0].shape == (0, 4) and none[0][2].shape == (0, 5, 2)
    assert ScrfdDetector(path).detect([]) == []


def test_scrfd_without_keypoints_and_five_level_layouts(tmp_path):
    # 6 outputs (no keypoints): same boxes, NaN keypoints
    path = scrfd_probe_model(tmp_path / "d6.onnx", PLANTED, PROBES, kps=False)
    det = ScrfdDetector(path)
    assert not det.use_kps
    images, scales = two_images()
    boxes, scores, kps = det.detect(images[:1])[0]
    want_b, want_s, _ = expected_faces(scales[0], True, False)
    np.testing.assert_allclose(boxes, want_b, atol=1e-3)
    assert kps.shape == (3, 5, 2) and np.isnan(kps).all()
    # 15 outputs: strides 8..128, one anchor per location
    planted = [(64, 2, 1, 0, 0.6, [1, 1, 1, 1], [0] * 10),         # centre (128, 64) -> (64, 0, 192, 128)
               (128, 4, 4, 0, 0.55, [0.5] * 4, [1, 0] * 5)]        # centre (512, 512) -> (448, 448, 576, 576)
    path = scrfd_probe_model(tmp_path / "d15.onnx", planted, [], strides=(8, 16, 32, 64, 128), anchors=1)
    det = ScrfdDetector(path)
    assert det.strides == (8, 16, 32, 64, 128) and det.num_anchors == 1
    img = np.full((320, 320, 3), 90, np.uint8)  # square: det_scale 2
    boxes, scores, kps = det.detect([img])[0]
    np.testing.assert_allclose(scores, [0.6, 0.55], atol=1e-6)
    np.testing.assert_allclose(boxes, np.array([[64, 0, 192, 128], [448, 448, 576, 576]]) / 2, atol=1e-3)
    np.testing.assert_allclose(kps[1], np.tile([[640, 512]], (5, 1)) / 2, atol=1e-3)


def test_scrfd_rejects_a_non_detector(tmp_path):
    with pytest.raises(ModelError, match="not an SCRFD detector"):
        ScrfdDetector(arcface_probe_model(tmp_path / "rec.onnx", np.ones((3, 512))))


# ------------------------------------------------------------------------------------ 1k3d68

def landmark_probe_model(path, shape68, *, probe_gain=0.01, batch="N", mxnet=False):
    """(N, 3, 192, 192) -> (N, 3309): 1035 padding values, then ``shape68`` (68, 3) in the model's
    [-1, 1] crop units, with every landmark's x shifted by ``probe_gain`` × the normalised red
    value at the crop centre.  ``mxnet``: the first node is named ``bn_data`` (insightface then
    feeds raw 0..255 pixels)."""
    g = _Graph()
    x = "data"
    first = g.op("Identity", [x], name="bn_data" if mxnet else "first")
    base = np.concatenate([np.full(3309 - 204, 7.0, np.float32), np.asarray(shape68, np.float32).reshape(-1)])
    mask = np.zeros(3309, np.float32)
    mask[3309 - 204::3] = probe_gain  # x of each of the last 68 rows
    pv = g.op("Reshape", [g.probe(first, 0, 96, 96), g.const([-1, 1], np.int64)])  # (N, 1)
    out = g.op("Add", [g.op("Mul", [pv, g.const(mask[None])]), g.const(base[None])])
    g.nodes.append(helper.make_node("Identity", [out], ["fc1"], name="out"))
    return _save(g.nodes, [helper.make_tensor_value_info(x, TensorProto.FLOAT, [batch, 3, 192, 192])],
                 [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [batch, 3309])], g.inits, path)


def _rot(axis, deg):
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def _dlib5(shape):
    """dlib's 5 points (image-right eye outer, inner, image-left eye outer, inner, subnasale) of a
    68-point shape, for the offline profile's closed-form pose."""
    return shape[[45, 42, 36, 39, 33], :2]


FACES = [  # bbox, colour at its centre
    ((100.0, 80.0, 200.0, 220.0), (255, 0, 0)),   # 100x140 -> crop scale 192 / 210
    ((350.0, 200.0, 430.0, 260.0), (0, 0, 255)),  # 80x60 -> crop scale 192 / 120
]


def landmark_image():
    img = np.full((400, 600, 3), 128, np.uint8)
    for (x1, y1, x2, y2), col in FACES:
        cx, cy = int((x1 + x2) / 2), int((y1 + y2) / 2)
        img[cy - 10:cy + 10, cx - 10:cx + 10] = col
    return img


def expected_landmarks(shape68, probe_values, gain):
    out = []
    for ((x1, y1, x2, y2), _), pv in zip(FACES, probe_values):
        s = 192 / (max(x2 - x1, y2 - y1) * 1.5)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        p = np.array(shape68, float).copy()
        p[:, 0] += gain * pv
        out.append(np.stack([cx + p[:, 0] * 96 / s, cy + p[:, 1] * 96 / s, p[:, 2] * 96 / s], -1))
    return np.array(out)


@pytest.mark.parametrize("mxnet,batch,runs", [(False, "N", [2]), (True, "N", [2]), (False, 1, [1, 1])])
def test_landmarks_crop_decode_and_frontal_pose(tmp_path, mxnet, batch, runs):
    shape = ifp.mean_shape_68() * 0.5
    gain = 0.0001 if mxnet else 0.01
    lm = Landmark3D68(landmark_probe_model(tmp_path / "1k3d68.onnx", shape, probe_gain=gain, batch=batch,
                                           mxnet=mxnet))
    assert (lm.input_mean, lm.input_std) == ((0.0, 1.0) if mxnet else (127.5, 128.0))
    lm.session = CountingSession(lm.session)
    lmk, pose = lm.landmarks(landmark_image(), np.array([f[0] for f in FACES]))
    assert lm.session.batches == runs  # all faces of the image in one run when the batch is dynamic
    # crop centre = box centre; red face: R = 255, blue face: R = 0 (RGB order)
    probes = [255.0, 0.0] if mxnet else [NORM(255.0), NORM(0.0)]
    assert lmk.shape == (2, 68, 3) and lmk.dtype == np.float32
    np.testing.assert_allclose(lmk, expected_landmarks(shape, probes, gain), atol=2e-3)
    np.testing.assert_allclose(pose, 0.0, atol=1e-3)  # the mean face, translated and scaled: frontal


def test_pose_angles_and_faceqc_sign_convention(tmp_path):
    mean = ifp.mean_shape_68().astype(float)
    img = landmark_image()
    boxes = np.array([f[0] for f in FACES])

    def pose_of(shape):
        path = landmark_probe_model(tmp_path / "m.onnx", shape * 0.5, probe_gain=0.0)
        return Landmark3D68(path).landmarks(img, boxes)[1]

    # roll: the face rotated 25 degrees clockwise on screen (y points down: the image-right eye drops)
    rolled = mean @ _rot("z", 25).T
    assert rolled[45, 1] - rolled[36, 1] > 0.2
    np.testing.assert_allclose(pose_of(rolled), [[0, 0, 25]] * 2, atol=1e-3)
    # yaw: the head turned so that the nose tip moves to the image LEFT (z points at the camera)
    turned = mean @ _rot("y", -20).T
    assert turned[30, 0] - turned[:, 0].mean() < mean[30, 0] - mean[:, 0].mean() - 0.05
    np.testing.assert_allclose(pose_of(turned), [[20, 0, 0]] * 2, atol=1e-3)
    # ... the same sign as the offline profile's closed-form pose on the same face
    assert head_pose_dlib5(_dlib5(turned) * 100)[0] > 5
    assert head_pose_dlib5(_dlib5(mean @ _rot("y", 20).T) * 100)[0] < -5
    np.testing.assert_allclose(pose_of(mean @ _rot("y", 20).T), [[-20, 0, 0]] * 2, atol=1e-3)
    # pitch: looking up, the nose tip rises on screen; positive, as head_pose_dlib5's
    up = mean @ _rot("x", 15).T
    assert up[30, 1] - up[:, 1].mean() < mean[30, 1] - mean[:, 1].mean() - 0.05
    np.testing.assert_allclose(pose_of(up), [[0, 15, 0]] * 2, atol=1e-3)
    assert head_pose_dlib5(_dlib5(up) * 100)[1] > head_pose_dlib5(_dlib5(mean) * 100)[1] + 5
    # combined: insightface's Euler order R = Rz(roll) Ry(yaw') Rx(pitch), yaw' = -yaw
    combo = mean @ (_rot("z", 10) @ _rot("y", -30) @ _rot("x", -12)).T
    np.testing.assert_allclose(pose_of(combo), [[30, -12, 10]] * 2, atol=1e-3)


def test_mean_shape_is_insightfaces(tmp_path):
    ms = ifp.mean_shape_68()
    assert ms.shape == (68, 3) and ms.dtype == np.float32
    # image frame: chin (8) below the eyes (36, 45), image-left eye at smaller x, nose tip (30) nearest
    assert ms[8, 1] > ms[36, 1] and ms[36, 0] < ms[45, 0] and ms[30, 2] == ms[:, 2].max()


def test_landmarks_no_faces_and_wrong_model(tmp_path):
    lm = Landmark3D68(landmark_probe_model(tmp_path / "l.onnx", ifp.mean_shape_68()))
    lmk, pose = lm.landmarks(landmark_image(), np.zeros((0, 4)))
    assert lmk.shape == (0, 68, 3) and pose.shape == (0, 3)
    with pytest.raises(ModelError, match="1k3d68"):
        Landmark3D68(arcface_probe_model(tmp_path / "rec.onnx", np.ones((3, 512))))


# ------------------------------------------------------------------------------------ ArcFace

def arcface_probe_model(path, weights, *, batch="N", mxnet=False):
    """(N, 3, 112, 112) -> channel means (N, 3) @ weights (3, D).  ``mxnet``: the graph starts
    with identity nodes named like an MXNet conversion's ``_minus`` / ``_mul``."""
    g = _Graph()
    x = "input.1"
    cur = x
    if mxnet:
        cur = g.op("Sub", [cur, g.const(0.0)], name="_minus0")
        cur = g.op("Mul", [cur, g.const(1.0)], name="_mul0")
    pooled = g.op("GlobalAveragePool", [cur])
    flat = g.op("Reshape", [pooled, g.const([-1, 3], np.int64)])
    out = g.op("MatMul", [flat, g.const(weights)])
    d = np.asarray(weights).shape[1]
    g.nodes.append(helper.make_node("Identity", [out], ["embedding"], name="out"))
    return _save(g.nodes, [helper.make_tensor_value_info(x, TensorProto.FLOAT, [batch, 3, 112, 112])],
                 [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, d])], g.inits, path)


@pytest.mark.parametrize("mxnet,batch", [(False, "N"), (True, "N"), (False, 1)])
def test_arcface_norm_is_the_raw_embedding_norm(tmp_path, mxnet, batch):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 512)).astype(np.float32)
    rec = OnnxFIQA(arcface_probe_model(tmp_path / "w600k_r50.onnx", w, batch=batch, mxnet=mxnet), ARCFACE_NORM)
    assert rec.normalises_itself == mxnet
    rec.session = CountingSession(rec.session)
    crops = np.zeros((70, 112, 112, 3), np.uint8)
    crops[:, :, :, 0] = 255  # red, RGB
    crops[1::2] = crops[1::2] // 5  # every other crop darker: R = 51
    norms, mapped = rec.score(crops)

    def want(r):
        means = np.array([r, 0.0, 0.0]) if mxnet else (np.array([r, 0.0, 0.0]) - 127.5) / 127.5
        return np.linalg.norm(means @ w)

    assert norms.shape == (70,) and norms.dtype == np.float32
    np.testing.assert_allclose(norms[0::2], want(255.0), rtol=1e-5)
    np.testing.assert_allclose(norms[1::2], want(51.0), rtol=1e-5)
    assert rec.session.batches == ([64, 6] if batch == "N" else [1] * 70)
    np.testing.assert_allclose(mapped, np.clip((norms - 10.0) / 15.0, 0, 1) * 100, rtol=1e-5)  # lo 10, hi 25
    assert rec.score(np.zeros((0, 112, 112, 3), np.uint8))[0].shape == (0,)


# ------------------------------------------------------------------------------------ packs

def _touch(d, *names):
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        (d / n).write_bytes(b"not a model")  # found by name: never opened


def test_find_pack_by_file_names(tmp_path):
    _touch(tmp_path / "buffalo_l", "1k3d68.onnx", "2d106det.onnx", "det_10g.onnx", "genderage.onnx",
           "w600k_r50.onnx")
    got = find_pack(str(tmp_path / "buffalo_l"))
    assert {k: v.rsplit("/", 1)[1] for k, v in got.items()} == \
        {"det": "det_10g.onnx", "landmark": "1k3d68.onnx", "rec": "w600k_r50.onnx"}
    _touch(tmp_path / "antelopev2", "1k3d68.onnx", "2d106det.onnx", "genderage.onnx", "glintr100.onnx",
           "scrfd_10g_bnkps.onnx")
    got = find_pack(str(tmp_path / "antelopev2"))
    assert {k: v.rsplit("/", 1)[1] for k, v in got.items()} == \
        {"det": "scrfd_10g_bnkps.onnx", "landmark": "1k3d68.onnx", "rec": "glintr100.onnx"}
    _touch(tmp_path / "buffalo_s", "det_500m.onnx", "1k3d68.onnx", "w600k_mbf.onnx")
    assert find_pack(str(tmp_path / "buffalo_s"))["rec"].endswith("w600k_mbf.onnx")


def test_find_pack_by_shapes_and_missing_models(tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    scrfd_probe_model(d / "face_detector.onnx", PLANTED[:1], [])
    landmark_probe_model(d / "landmarks3d.onnx", ifp.mean_shape_68())
    arcface_probe_model(d / "genderage_like.onnx", np.ones((3, 3)))  # 3 outputs wide: not a recogniser
    arcface_probe_model(d / "embedder.onnx", np.ones((3, 512)))
    (d / "broken.onnx").write_bytes(b"garbage")
    got = find_pack(str(d))
    assert {k: v.rsplit("/", 1)[1] for k, v in got.items()} == \
        {"det": "face_detector.onnx", "landmark": "landmarks3d.onnx", "rec": "embedder.onnx"}
    _touch(tmp_path / "half", "det_10g.onnx")
    with pytest.raises(ModelError, match=r"1k3d68.*ArcFace recognition model .*holds det_10g.onnx"):
        find_pack(str(tmp_path / "half"))
    assert find_pack(str(tmp_path / "half"), need=("det",))["landmark"] is None
    with pytest.raises(ModelError, match="not a directory"):
        find_pack(str(tmp_path / "nowhere"))


# ------------------------------------------------------------------------------------ synthetic

def test_synthetic_stand_ins_have_the_real_contracts(tmp_path):
    import onnxruntime as ort

    from tests.support import synthetic

    det_path = synthetic.scrfd_like(str(tmp_path / "det.onnx"), "tiny")
    s = ort.InferenceSession(det_path, providers=["CPUExecutionProvider"])
    outs = s.run(None, {"input.1": np.zeros((3, 3, 640, 640), np.float32)})
    k = [80 * 80 * 2, 40 * 40 * 2, 20 * 20 * 2]
    assert [o.shape for o in outs] == [(3, n, c) for c in (1, 4, 10) for n in k]
    # the planted face: one detection per image, at the canvas centre's stride-32 anchor
    det = ScrfdDetector(det_path)
    images, scales = two_images()
    res = det.detect(images)
    for (boxes, scores, kps), sc in zip(res, scales):
        assert len(boxes) == 1 and scores[0] > 0.99
        np.testing.assert_allclose(boxes[0] * sc, [220, 195, 420, 445], atol=8)
        assert kps[0, 0, 0] < kps[0, 1, 0] and kps[0, 3, 0] < kps[0, 4, 0]  # left eye / mouth on the left
    # a plain random net with dynamic input size: batched decoding == one image at a time
    free = synthetic.scrfd_like(str(tmp_path / "free.onnx"), "tiny", plant_face=False, seed=1)
    a = ScrfdDetector(free, det_size=(160, 128), score_thresh=0.0)
    assert a.input_size == (160, 128)
    batched = a.detect(images)
    single = [a.detect([im])[0] for im in images]
    assert sum(len(r[0]) for r in batched) > 100
    for (b1, s1, k1), (b2, s2, k2) in zip(batched, single):
        np.testing.assert_allclose(b1, b2, atol=1e-3)
        np.testing.assert_allclose(s1, s2, atol=1e-6)
        np.testing.assert_allclose(k1, k2, atol=1e-3)

    lm_path = synthetic.landmark_1k3d68_like(str(tmp_path / "1k3d68.onnx"), tiny=True)
    lmk, pose = Landmark3D68(lm_path).landmarks(landmark_image(), np.array([f[0] for f in FACES]))
    assert lmk.shape == (2, 68, 3) and pose.shape == (2, 3) and np.isfinite(pose).all()
    rec_path = synthetic.arcface_like(str(tmp_path / "w600k_r50.onnx"), tiny=True)
    s = ort.InferenceSession(rec_path, providers=["CPUExecutionProvider"])
    assert s.get_inputs()[0].shape == ["batch", 3, 112, 112] and s.get_outputs()[0].shape[1] == 512
    norms, _ = OnnxFIQA(rec_path, ARCFACE_NORM).score(np.random.default_rng(0).integers(0, 255, (5, 112, 112, 3), np.uint8))
    assert norms.shape == (5,) and (norms > 0).all()
    assert find_pack(str(tmp_path)) == {"det": det_path, "landmark": lm_path, "rec": rec_path}


def test_synthetic_full_size_models_cost_what_the_real_ones_do():
    """Random weights are only honest for timing when the compute matches: counted on the meta
    device (nothing runs)."""
    from tests.support import synthetic

    macs = synthetic.count_macs(synthetic.scrfd_module("10g", plant_face=False), (1, 3, 480, 640))
    assert 9e9 < macs < 11e9  # SCRFD-10G: 10 GFLOPs (mmcv's count = MACs) at VGA
    macs = synthetic.count_macs(synthetic.scrfd_module("500m", plant_face=False), (1, 3, 480, 640))
    assert 0.4e9 < macs < 0.7e9
    params = sum(p.numel() for p in synthetic.iresnet().parameters())
    assert 43e6 < params < 44e6  # w600k_r50.onnx: iResNet-50, 43.6 M parameters (174 MB)
    params = sum(p.numel() for p in synthetic.landmark_module().parameters())
    assert 28e6 < params < 38e6  # 1k3d68.onnx: 143 MB of float32 = 35.7 M parameters
