"""Face occlusion from a segmentation model (``fiqa.occlusion``, pipeline/backends/occlusion.py).

The models are small ONNX graphs built here with the contract of the real ones (OFIQ's
face-occlusion network: one logit map; face parsers: class scores).  The one the pipeline runs
calls a pixel covered where it is green, so green paint over a real face's eyes or mouth is an
occluder whose place the test knows; the faces are real photos from installed packages."""

from __future__ import annotations

import math

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline import registry
from pipeline.backends.occlusion import OcclusionSegmenter, part_masks, template_parts
from pipeline.config import load_config
from pipeline.errors import ModelError
from pipeline.executor import LocalExecutor
from pipeline.fusion import face_raw
from pipeline.schema import COMPONENTS, FACE_IQA_KEYS, FIQA_KEYS
from pipeline.tools import samples
from pipeline.tools.explain import explain_text
from pipeline.tools.report import build_report

FRONTAL = ("t1-face0", "t1-face2", "t1-face3", "t1-face5", "astronaut")


def save(nodes, path, out_shape, inits=(), size=224, batch="N", dtype=TensorProto.FLOAT) -> str:
    g = helper.make_graph(nodes, "occ", [helper.make_tensor_value_info("input", dtype, [batch, 3, size, size])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, out_shape)],
                          initializer=list(inits))
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def _split(src="input"):
    return helper.make_node("Split", [src], ["r", "g", "b"], axis=1, num_outputs=3)


def green_occluder(path, size=224, batch="N", half=False, pool=False, poison=False) -> str:
    """OFIQ's output form, a face logit per pixel: 0.25 - (G - max(R, B)) on inputs in [0, 1], so
    green (an occluder here) is below 0 and skin, hair, eyes and lips are above.  Variants: a
    fixed ``batch``, a float16 input (``half``), an output at half the input's size (``pool``),
    and one that overflows to NaN (``poison``)."""
    inits = [numpy_helper.from_array(np.array(0.25, np.float32), "c")]
    nodes = [helper.make_node("Cast", ["input"], ["x"], to=TensorProto.FLOAT)] if half else []
    nodes += [_split("x" if half else "input"), helper.make_node("Max", ["r", "b"], ["rb"]),
              helper.make_node("Sub", ["g", "rb"], ["d"])]
    last = "logit" if pool or poison else "out"
    nodes.append(helper.make_node("Sub", ["c", "d"], [last]))
    if pool:
        nodes.append(helper.make_node("AveragePool", [last], ["out"], kernel_shape=[2, 2], strides=[2, 2]))
    if poison:
        inits.append(numpy_helper.from_array(np.array(np.nan, np.float32), "nan"))
        nodes.append(helper.make_node("Add", [last, "nan"], ["out"]))
    side = size // 2 if pool else size
    return save(nodes, path, [batch, 1, side, side], inits, size, batch,
                TensorProto.FLOAT16 if half else TensorProto.FLOAT)


def red_minus_blue(path, size=32) -> str:
    """Face logit R - B: tells the channel order and the input range apart."""
    return save([_split(), helper.make_node("Sub", ["r", "b"], ["out"])], path, ["N", 1, size, size], size=size)


def three_class_parser(path, size=32) -> str:
    """A face parser's output form: (N, 3, H, W) scores of background (B), face (R), hair (G)."""
    nodes = [_split(), helper.make_node("Concat", ["b", "r", "g"], ["out"], axis=1)]
    return save(nodes, path, ["N", 3, size, size], size=size)


@pytest.fixture(scope="module")
def green(tmp_path_factory):
    return green_occluder(tmp_path_factory.mktemp("occ") / "green.onnx")


# --------------------------------------------------------------------------------- the parts


def test_parts_are_where_ffhq_alignment_puts_them():
    """The template's eyes sit on the eye line of FFHQ's crop, mirror images of each other; the
    mouth below them on the midline; all three inside the face; a crop of the central half shows
    the eyes twice as large (four times the area) and cuts the mouth and the chin off."""
    t = template_parts()
    left, right = (e.mean(0) for e in t["eyes"])
    assert left[1] == pytest.approx(right[1]) and left[0] + right[0] == pytest.approx(1.0)
    assert 0.1 < right[0] - left[0] < 0.4  # FFHQ's crop is 4 inter-eye distances across at most
    mouth = t["mouth"][0].mean(0)
    assert mouth[0] == pytest.approx(0.5) and mouth[1] > left[1] + 0.15
    whole, half = part_masks(224, 224, 1.0), part_masks(224, 224, 0.5)
    for part in ("eyes", "mouth"):
        assert whole[part].any() and not (whole[part] & ~whole["face"]).any()
    assert half["eyes"].sum() / whole["eyes"].sum() == pytest.approx(4.0, rel=0.1)
    assert half["mouth"] is None and half["face"] is None  # cut by the crop's edge: not judged
    for m in whole.values():  # mirror images, up to where pixel centres fall
        assert (m ^ m[:, ::-1]).sum() <= 0.1 * m.sum()


# ------------------------------------------------------------------------------- the contract


def test_channel_order_range_threshold_and_classes(tmp_path):
    red = np.zeros((2, 40, 40, 3), np.uint8)
    red[..., 0] = 128  # half-bright red: R - B is 0.5 on [0, 1], 128 on [0, 255]
    path = red_minus_blue(tmp_path / "rb.onnx")
    assert OcclusionSegmenter(path, size=32).score(red) == pytest.approx(np.zeros((2, 3)))
    # BGR: the model sees the red in its third channel, so nothing is face
    assert OcclusionSegmenter(path, size=32, colour="BGR").score(red) == pytest.approx(np.ones((2, 3)))
    assert OcclusionSegmenter(path, size=32, threshold=0.6).score(red) == pytest.approx(np.ones((2, 3)))
    assert OcclusionSegmenter(path, size=32, threshold=0.6, in_range=(0, 255)).score(red) == pytest.approx(np.zeros((2, 3)))
    # a parser: face where class 1 (red) wins; hair (green) over the crop's top 5/8 (past the eyes)
    crop = np.zeros((1, 64, 64, 3), np.uint8)
    crop[..., 0] = 200
    crop[:, :40, :, 1] = 255
    parser = OcclusionSegmenter(three_class_parser(tmp_path / "parser.onnx"), size=32, output="classes",
                                face_classes=[1])
    share = parser.score(crop)[0]
    covered = ~parser.visible(crop)[0][0]  # (masks, finite): the first crop's mask
    masks = part_masks(32, 32, 1.0)
    assert covered[:20].all() and not covered[20:].any()
    assert share == pytest.approx([covered[masks[p]].mean() for p in ("face", "eyes", "mouth")])
    assert share[1] == 1.0 and share[2] == 0.0 and 0 < share[0] < 1


def _painted_crops(n=3, side=512):
    """Skin-coloured FFHQ-sized crops, green over the template's eye band in the first and over
    its mouth in the second, untouched in the third."""
    crops = np.zeros((n, side, side, 3), np.uint8)
    crops[:] = (200, 150, 120)
    eyes = np.vstack(template_parts()["eyes"])
    mouth = template_parts()["mouth"][0]
    for k, poly in ((0, eyes), (1, mouth)):
        (x0, y0), (x1, y1) = poly.min(0) * side - 4, poly.max(0) * side + 4
        crops[k, int(y0):int(y1) + 1, int(x0):int(x1) + 1] = (0, 255, 0)
    return crops


def test_fixed_batch_float16_smaller_output_and_crop_agree(tmp_path):
    """A fixed batch size (the last chunk padded), a float16 input, an output at half the input's
    size: the same shares as the plain model.  A crop of the central 0.69 (OFIQ's share of its
    own alignment) cuts the chin: the face is not judged (NaN), the eyes and mouth are."""
    crops = _painted_crops()
    plain = OcclusionSegmenter(green_occluder(tmp_path / "g.onnx")).score(crops)
    assert plain[0, 1] == 1.0 and plain[0, 2] == 0.0 and plain[1, 2] == 1.0 and plain[1, 1] == 0.0
    assert 0 < plain[0, 0] < 0.5 and 0 < plain[1, 0] < 0.5 and (plain[2] == 0).all()
    for kw in ({"batch": 2}, {"half": True}, {"pool": True}):
        got = OcclusionSegmenter(green_occluder(tmp_path / "v.onnx", **kw)).score(crops)
        assert got == pytest.approx(plain, abs=0.03), kw
    cropped = OcclusionSegmenter(green_occluder(tmp_path / "g.onnx"), crop=0.69).score(crops)
    assert np.isnan(cropped[:, 0]).all()
    assert cropped[:, 1:] == pytest.approx(plain[:, 1:], abs=0.03)


def test_a_model_that_overflows_judges_nothing(tmp_path):
    """NaN output is not 'everything covered': the shares are NaN, so the component is null."""
    got = OcclusionSegmenter(green_occluder(tmp_path / "nan.onnx", poison=True)).score(_painted_crops())
    assert np.isnan(got).all()


def test_bad_models_and_settings_are_named(tmp_path):
    path = red_minus_blue(tmp_path / "rb32.onnx", size=32)
    with pytest.raises(ModelError, match=r"occlusion model rb32: its input 'input' has shape \?x3x32x32.*"
                                         r"\(N, 3, 224, 224\) images; set fiqa.occlusion.size"):
        OcclusionSegmenter(path, name="rb32")
    with pytest.raises(ModelError, match=r"occlusion model p: output 'classes' needs fiqa.occlusion.face_classes"):
        OcclusionSegmenter(path, name="p", size=32, output="classes")
    three = OcclusionSegmenter(three_class_parser(tmp_path / "p3c.onnx"), name="p3c", size=32, output="classes",
                               face_classes=[1, 3])
    with pytest.raises(ModelError, match=r"occlusion model p3c: returns 3 classes, but fiqa.occlusion.face_classes "
                                         r"names class 3"):
        three.score(np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(ModelError, match=r"occlusion model p: has 1 output\(s\); fiqa.occlusion.output_index 2"):
        OcclusionSegmenter(path, name="p", size=32, output_index=2)
    parser = OcclusionSegmenter(three_class_parser(tmp_path / "p3.onnx"), name="p3", size=32)  # read as a logit map
    with pytest.raises(ModelError, match=r"occlusion model p3: returned shape 1x3x32x32; output 'face_logit' needs"):
        parser.score(np.zeros((1, 32, 32, 3), np.uint8))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelError, match=r"occlusion model junk: ONNX Runtime cannot load it"):
        OcclusionSegmenter(str(junk), name="junk")


def test_off_by_default_and_recorded_with_its_licence_when_on(green, capsys):
    from pipeline.cli import main

    assert ("fiqa", "occlusion", "fiqa.occlusion.model") not in load_config().backends()
    cfg = load_config(overrides={"fiqa": {"occlusion": {"model": green}}})
    assert ("fiqa", "occlusion", "fiqa.occlusion.model") in cfg.backends()
    ids = {m.id: m for m in registry.models_for(cfg)}
    assert not ids["face-occlusion"].commercial_use and "CelebAMask-HQ" in ids["face-occlusion"].licence
    assert green in ids
    assert main(["models", "list"]) == 0
    assert "\nface-occlusion " in capsys.readouterr().out


def test_the_component_reads_the_most_covered_part():
    iqa = np.full(len(FACE_IQA_KEYS), np.nan)
    fiqa = np.full(len(FIQA_KEYS), np.nan)
    assert "occlusion" in COMPONENTS and math.isnan(face_raw(iqa, fiqa, 50.0)["occlusion"])
    fiqa[FIQA_KEYS.index("occlusion")], fiqa[FIQA_KEYS.index("occlusion_eyes")] = 0.2, 0.7
    assert face_raw(iqa, fiqa, 50.0)["occlusion"] == pytest.approx(0.7)


# ----------------------------------------------------------------------- real faces, whole job


def _paint(img, lm, part):
    """Green over both eyes (to 0.45 inter-eye distances past each eye, 0.25 above and below) or
    over the mouth (0.3 past its corners, above and below)."""
    out, ied = img.copy(), float(np.linalg.norm(lm[1] - lm[0]))
    if part == "eyes":
        y = lm[:2, 1].mean()
        a, b = (lm[:2, 0].min() - 0.45 * ied, y - 0.25 * ied), (lm[:2, 0].max() + 0.45 * ied, y + 0.25 * ied)
    else:
        y = lm[3:5, 1].mean()
        a, b = (lm[3, 0] - 0.3 * ied, y - 0.3 * ied), (lm[4, 0] + 0.3 * ied, y + 0.3 * ied)
    cv2.rectangle(out, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), (0, 255, 0), -1)
    return out


def test_covered_eyes_and_mouth_of_real_faces_are_found_and_judged(green):
    """Pristine faces: nothing covered, component 100.  Green over the eyes: the eyes covered,
    the mouth not, about a quarter of the face, reason `occluded`; over the mouth, the reverse.
    Frontal faces (the parts come from FFHQ's alignment, which fixes the eyes and the mouth)."""
    cfg = load_config(profile="offline-fast", overrides={"fiqa": {"occlusion": {"model": green}}})
    ex = LocalExecutor(cfg)
    faces = {k: v for k, v in samples.test_faces().items() if k in FRONTAL}
    pristine = ex.score_images(list(faces.values())).to_pylist()
    painted, which = [], []
    for (k, img), r in zip(faces.items(), pristine):
        f = r["faces"][r["primary_face"]]
        assert max(f["fiqa"][x] for x in ("occlusion", "occlusion_eyes", "occlusion_mouth")) <= 0.01, k
        assert f["components"]["occlusion"] == pytest.approx(100.0)
        for j, other in enumerate(r["faces"]):  # only the primary face is segmented
            assert (other["fiqa"]["occlusion"] is not None) == (j == r["primary_face"])
        lm = np.asarray(f["landmarks"], np.float64)
        for part in ("eyes", "mouth"):
            painted.append(_paint(img, lm, part))
            which.append((k, part))
    judged = {"eyes": 0, "mouth": 0}
    table = ex.score_images(painted)
    for (k, part), r in zip(which, table.to_pylist()):
        if r["primary_face"] is None:  # eyes painted over can hide the face from the detector
            continue
        f = r["faces"][r["primary_face"]]["fiqa"]
        other = "mouth" if part == "eyes" else "eyes"
        assert f[f"occlusion_{part}"] >= 0.85 and f[f"occlusion_{other}"] <= 0.05, (k, part, f)
        assert 0.1 <= f["occlusion"] <= 0.45, (k, part, f)
        assert r["faces"][r["primary_face"]]["components"]["occlusion"] < 10 and "occluded" in r["reasons"]
        assert "      occlusion " in explain_text(r, cfg)
        judged[part] += 1
    assert judged["mouth"] == len(faces) and judged["eyes"] >= 3
    page, _ = build_report(table, None, cfg)  # the report's histogram of the component
    svg = page[page.index('aria-label="occlusion"'):]
    assert f"{sum(judged.values())} measured" in svg[:svg.index("</svg>")]
