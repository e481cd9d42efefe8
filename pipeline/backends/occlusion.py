"""Face occlusion from a segmentation model: which parts of the face something covers.

Classical region checks compare colours with the face's own skin, so a skin-coloured hand, hair
strands or a fringe pass them (README, "Still weak").  A network trained to segment the visible
face from whatever is in front of it does not have that blind spot.  OFIQ (ISO/IEC 29794-5) has
such a network for its FaceOcclusionPrevention measure (the FaceExtraction model of FaceOcc, Yin
and Chen 2022); face-parsing networks (BiSeNet exports with CelebAMask-HQ's classes) do the same
with one class per part.  Any such ONNX model the team supplies runs here, on the primary face's
FFHQ-aligned crop (``face_crop_target``, at ``detect.target_size``).

Model contract (``fiqa.occlusion``): one image input ``(N, 3, size, size)``, channels in
``colour`` order, pixel 0 → ``range[0]`` and 255 → ``range[1]`` (linear), fed the central
``crop`` share of the FFHQ crop (1.0: all of it; OFIQ feeds its network the central 424 px of
its own 616 px alignment).  The output named by ``output_index``
(default: the last, as OFIQ reads it) is either

- ``face_logit``: ``(N, 1, H, W)`` or ``(N, H, W)``, a pixel is visible face where the value is
  at least ``threshold`` (OFIQ's network: logits, threshold 0; a sigmoid output: 0.5), or
- ``classes``: ``(N, C, H, W)`` class scores, a pixel is visible face where its best class is one
  of ``face_classes`` (e.g. skin, brows, eyes, nose, lips for a CelebAMask-HQ parser).

The face's parts are not found by the model but by where FFHQ's alignment puts them: faceqc's
mean 68-point face (:data:`pipeline.pose3d.MODEL_68`, frontal) aligned the way the crop is made
gives, in crop coordinates, the face (the jaw line closed by the brows: OFIQ's landmarked region
without the forehead, so a fringe or a hat is not an occlusion), each eye (its outline grown 1.5x
across and 3x up and down around its centre: the lids and the skin just round them) and the
mouth (the outer lips grown 1.3x).  The alignment fixes the eyes, the face's scale and its
eyes-to-mouth direction, so the parts sit on a frontal face's own; the mouth's height varies with
the face's length, and on faces turned by ~40 degrees and more the parts drift.  Raw outputs
(``FIQA_KEYS``): the share of each part the model does not call visible face — ``occlusion``
(the face), ``occlusion_eyes`` (both eyes together), ``occlusion_mouth`` — NaN for a part less
than 95% inside the fed crop and for a crop whose output is not finite; the component
``occlusion`` reads the largest of those judged.
"""

from __future__ import annotations

import functools
from typing import Sequence

import cv2
import numpy as np

from .. import geometry as geo
from .. import pose3d
from ..errors import ModelError
from ..models import CATALOGUE, named
from ..registry import register
from ..schema import FIQA_KEYS
from .fiqa_onnx import check_image_input, side_by_side_check
from .onnx_runtime import TENSOR_DTYPES, chunks, fixed_batch, image_batch, make_session, pad_to

PARTS = ("face", "eyes", "mouth")
KEYS = {"face": "occlusion", "eyes": "occlusion_eyes", "mouth": "occlusion_mouth"}
# the eye outline (0.39 x 0.08 inter-eye distances) grown to take in the lids and the skin just
# round them: 1.5x across, 3x up and down (0.58 x 0.24); the outer lips grown 1.3x
EYE_GROWTH, MOUTH_GROWTH = (1.5, 3.0), (1.3, 1.3)


def _grown(poly: np.ndarray, k) -> np.ndarray:
    c = poly.mean(0)
    return c + (poly - c) * np.asarray(k, np.float64)


@functools.lru_cache(maxsize=1)
def template_parts() -> dict:
    """The parts' polygons in unit coordinates of an FFHQ-aligned crop (0..1 across): faceqc's mean
    face, frontal, aligned by :func:`pipeline.geometry.ffhq_matrix` from its own 5 points."""
    p = np.asarray(pose3d.MODEL_68[:, :2], np.float64)
    five = np.vstack([p[pose3d.EYE_L].mean(0), p[pose3d.EYE_R].mean(0), p[30], p[48], p[54]])
    m = geo.ffhq_matrix(five, 1)
    q = geo.transform_points(m, p)
    face = np.vstack([q[pose3d.JAW], q[26:16:-1]])
    return {"face": face,
            "eyes": [_grown(q[pose3d.EYE_L], EYE_GROWTH), _grown(q[pose3d.EYE_R], EYE_GROWTH)],
            "mouth": [_grown(q[pose3d.LIPS_OUTER], MOUTH_GROWTH)]}


# a part less in view than this (``crop`` < 1 cuts the crop's edges: the chin first) is not judged
MIN_IN_VIEW = 0.95


@functools.lru_cache(maxsize=8)
def part_masks(height: int, width: int, crop: float) -> dict:
    """Boolean masks of the parts on a model output of ``height`` x ``width`` covering the central
    ``crop`` share of the FFHQ crop; None for a part less than :data:`MIN_IN_VIEW` inside it.  Each
    part is drawn on the whole crop at the output's scale, then the output's window is cut out."""
    fh, fw = int(round(height / crop)), int(round(width / crop))
    oy, ox = (fh - height) // 2, (fw - width) // 2
    out = {}
    for part, polys in template_parts().items():
        polys = polys if isinstance(polys, list) else [polys]
        m = np.zeros((fh, fw), np.uint8)
        for poly in polys:
            cv2.fillPoly(m, [np.round(poly * [fw, fh] * 16).astype(np.int32)], 1, shift=4)
        window = m[oy:oy + height, ox:ox + width].astype(bool)
        out[part] = window if window.sum() >= MIN_IN_VIEW * max(int(m.sum()), 1) else None
    return out


def _central(crop: np.ndarray, share: float) -> np.ndarray:
    k = max(1, int(round(crop.shape[0] * share)))
    o = (crop.shape[0] - k) // 2
    return crop[o:o + k, o:o + k]


class OcclusionSegmenter:
    """A face-occlusion (or face-parsing) ONNX model and the covered share of each face part."""

    def __init__(self, path: str, name: str = "model", size: int = 224, colour: str = "RGB",
                 in_range: Sequence[float] = (0.0, 1.0), crop: float = 1.0, output: str = "face_logit",
                 threshold: float = 0.0, face_classes: Sequence[int] = (), output_index: int = -1,
                 num_cpus: float = 1.0, use_gpu: bool = False, max_batch: int = 16):
        self.name, self.size, self.colour, self.crop = name, int(size), colour, float(crop)
        self.in_range = tuple(float(v) for v in in_range)
        self.output, self.threshold = output, float(threshold)
        self.face_classes = np.asarray(sorted(set(int(c) for c in face_classes)), np.int64)
        if output == "classes" and (not len(self.face_classes) or self.face_classes.min() < 0):
            raise ModelError(f"occlusion model {name}: output 'classes' needs fiqa.occlusion.face_classes (the "
                             f"class indices, from 0, that are visible face)")
        self.max_batch = max_batch
        what = "occlusion model"
        self.session = make_session(path, num_cpus, use_gpu, what=f"{what} {name}")
        check_image_input(self.session, self.size, name, what, setting="fiqa.occlusion.size")
        inp = self.session.get_inputs()[0]
        self.input_name, self.input_dtype = inp.name, TENSOR_DTYPES.get(inp.type)
        if self.input_dtype not in (np.float32, np.float16, np.float64):
            raise ModelError(f"{what} {name}: its image input '{inp.name}' is {inp.type}, not a float tensor")
        if len(self.session.get_inputs()) > 1:
            raise ModelError(f"{what} {name}: takes {len(self.session.get_inputs())} inputs; an occlusion model "
                             f"takes one image input")
        outs = self.session.get_outputs()
        if not -len(outs) <= output_index < len(outs):
            raise ModelError(f"{what} {name}: has {len(outs)} output(s); fiqa.occlusion.output_index "
                             f"{output_index} names none")
        self.output_name = outs[output_index].name
        self.fixed = fixed_batch(self.session)

    def _to_model(self, crops: np.ndarray) -> np.ndarray:
        """uint8 RGB crops -> the model input: the central ``crop`` share of each, at the model's size."""
        if self.crop < 1.0:
            crops = [_central(c, self.crop) for c in crops]
        return image_batch(crops, self.size, self.colour, self.in_range, self.input_dtype)[1]

    def _visible(self, y: np.ndarray) -> tuple:
        """Model output -> ((N, H, W) bool, True where the pixel is visible face; (N,) bool, True
        where the crop's output is finite: a model that overflows judges nothing)."""
        y = np.asarray(y)
        if self.output == "classes":
            if y.ndim != 4 or y.shape[1] < 2:
                raise ModelError(f"occlusion model {self.name}: returned shape {'x'.join(map(str, y.shape))}; "
                                 f"output 'classes' needs (N, C, H, W) class scores")
            if self.face_classes.max() >= y.shape[1]:
                raise ModelError(f"occlusion model {self.name}: returns {y.shape[1]} classes, but "
                                 f"fiqa.occlusion.face_classes names class {self.face_classes.max()}")
            finite = np.isfinite(y).all(axis=(1, 2, 3))
            return np.isin(y.argmax(1), self.face_classes), finite
        if y.ndim == 4 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 3:
            raise ModelError(f"occlusion model {self.name}: returned shape {'x'.join(map(str, y.shape))}; output "
                             f"'face_logit' needs (N, 1, H, W) or (N, H, W)")
        return y >= self.threshold, np.isfinite(y).all(axis=(1, 2))

    def visible(self, crops: np.ndarray) -> tuple:
        """((N, H, W) bool at the model's output size: visible face over the fed part of each crop;
        (N,) bool: the model's output for the crop is finite)."""
        t = self._to_model(np.asarray(crops))
        vis, finite = [], []
        for i, j in chunks(len(t), self.fixed, self.max_batch):
            y = self.session.run([self.output_name], {self.input_name: pad_to(t[i:j], self.fixed)})[0]
            v, f = self._visible(y[: j - i])
            vis.append(v)
            finite.append(f)
        return np.concatenate(vis), np.concatenate(finite)

    def score(self, crops: np.ndarray) -> np.ndarray:
        """(N, 3): the covered share of the face, the eyes and the mouth; NaN for a part not in
        the fed crop, and for every part of a crop whose output is not finite."""
        if len(crops) == 0:
            return np.zeros((0, len(PARTS)))
        vis, finite = self.visible(crops)
        masks = part_masks(vis.shape[1], vis.shape[2], self.crop)
        out = np.array([[np.nan if masks[p] is None else 1.0 - v[masks[p]].mean() for p in PARTS] for v in vis])
        out[~finite] = np.nan
        return out


@register("fiqa", "occlusion", models=lambda cfg: [CATALOGUE["face-occlusion"], named(cfg.fiqa.occlusion.model, "fiqa")],
          check=side_by_side_check("occlusion"), needs=(("onnxruntime", "prod"),),
          traits={"input": "face_crop_target"})
class OcclusionBackend:
    """face occlusion: the share of the face, eyes and mouth a segmentation model says is covered"""

    def __init__(self, cfg):
        from ..modelstore import resolve

        s, r = cfg.fiqa.occlusion, cfg.fiqa.resources
        path = resolve(s.model, s.sha256, cfg.input.storage_options)
        self.model = OcclusionSegmenter(path, s.model, s.size, s.colour, s.range, s.crop, s.output, s.threshold,
                                        s.face_classes, s.output_index, r.num_cpus, r.num_gpus > 0)

    def score(self, crops: np.ndarray) -> np.ndarray:
        out = np.full((len(crops), len(FIQA_KEYS)), np.nan, np.float32)
        if len(crops):
            shares = self.model.score(crops)
            for k, part in enumerate(PARTS):
                out[:, FIQA_KEYS.index(KEYS[part])] = shares[:, k]
        return out
