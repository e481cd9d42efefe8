"""Restoration consistency: FaceQgen's idea (Hernandez-Ortega et al., 2021), generalised to any
face-restoration model.

A restorer trained to turn damaged faces into high-quality ones has little to change on a good
face and much on a poor one, so the similarity between a face and its restoration measures its
quality.  FaceQgen trained its own generator for this; here any face-restoration ONNX model the
team supplies does (GFPGAN, CodeFormer, GPEN, RestoreFormer exports: GAN or codebook restorers at
256 or 512 px).  It sees the primary face's FFHQ-aligned crop (``face_crop_target``, made by the
detect stage at ``detect.target_size``, resized to the model's ``size``): the framing these
models are trained on.

Model contract (``fiqa.restoration``): one image input ``(N, 3, size, size)`` (a fixed batch size
is fine), channels in ``colour`` order, pixel 0 → ``range[0]`` and 255 → ``range[1]`` (linear);
one image output ``(N, 3, H, W)`` in the same channel order with black and white at
``output_range`` (default: ``range``), resized to ``size`` if it differs (a restorer that also
upsamples).  Any further inputs (CodeFormer's fidelity ``weight``) are fed the constants in
``extra_inputs``.

Similarity (``metric``), on the luminance (BT.601) of the two images at the model's size:

- ``gmsd`` (default): Gradient Magnitude Similarity Deviation (Xue, Zhang, Mou, Bovik, IEEE TIP
  2014), a full-reference perceptual index with no learned weights: the standard deviation over
  the image of the pixel-wise similarity of gradient magnitudes (Prewitt, after a 2x2 average and
  2x downsampling, c = 170).  0 = unchanged.  Restorers change faces mostly by adding or removing
  texture and edges, which is what gradient magnitudes see; the authors report it agreeing with
  human judgements better than SSIM on LIVE, CSIQ and TID2013.  Measured here (README), it also
  spreads blur, noise, JPEG and downscaling over the same range, where SSIM barely moves under
  blur of an upsampled face and drops steeply under noise and exposure changes.
- ``ssim``: SSIM (Wang et al. 2004) with its standard settings — Gaussian window σ = 1.5,
  population statistics, K1 = 0.01, K2 = 0.03 — by scikit-image.  1 = unchanged.

The raw value is mapped to 0–100 linearly between ``score_range`` = [value scored 0, value scored
100] and clipped; the defaults are in :data:`DEFAULT_SCORE_RANGE` (see README for how they were
chosen).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import cv2
import numpy as np

from ..errors import ModelError
from ..models import CATALOGUE, named
from ..registry import register
from ..schema import FIQA_KEYS
from .fiqa_onnx import check_image_input, side_by_side_check
from .onnx_runtime import TENSOR_DTYPES, chunks, fixed_batch, image_batch, make_session, pad_to

# [metric value scored 0, metric value scored 100]
DEFAULT_SCORE_RANGE = {"gmsd": (0.2, 0.0), "ssim": (0.8, 1.0)}


def luminance(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of RGB values (any float range), float64."""
    x = np.asarray(rgb, np.float64)
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two RGB images on 0..255 (their luminance), Wang et al.'s settings."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(luminance(a), luminance(b), data_range=255.0, gaussian_weights=True,
                                       sigma=1.5, use_sample_covariance=False))


_PREWITT = np.array([[1, 0, -1]] * 3, np.float64) / 3.0


def gmsd(a: np.ndarray, b: np.ndarray, c: float = 170.0) -> float:
    """GMSD of two RGB images on 0..255 (their luminance), Xue et al. 2014's reference recipe."""

    def grad(rgb):
        y = cv2.blur(luminance(rgb), (2, 2), borderType=cv2.BORDER_REPLICATE)[::2, ::2]
        gx = cv2.filter2D(y, -1, _PREWITT, borderType=cv2.BORDER_REPLICATE)
        gy = cv2.filter2D(y, -1, _PREWITT.T, borderType=cv2.BORDER_REPLICATE)
        return np.sqrt(gx * gx + gy * gy)

    ga, gb = grad(a), grad(b)
    gms = (2.0 * ga * gb + c) / (ga * ga + gb * gb + c)
    return float(gms.std())


METRICS = {"gmsd": gmsd, "ssim": ssim}


def map_score(raw: np.ndarray, score_range: Sequence[float]) -> np.ndarray:
    lo, hi = float(score_range[0]), float(score_range[1])
    return np.clip((np.asarray(raw, np.float64) - lo) / (hi - lo), 0.0, 1.0) * 100.0


class Restorer:
    """A face-restoration ONNX model and the similarity of its input and output."""

    def __init__(self, path: str, name: str = "model", size: int = 512, colour: str = "RGB",
                 in_range: Sequence[float] = (-1.0, 1.0), out_range: Sequence[float] = (),
                 extra_inputs: Optional[Dict[str, float]] = None, metric: str = "gmsd",
                 score_range: Sequence[float] = (), num_cpus: float = 1.0, use_gpu: bool = False,
                 max_batch: int = 8):
        self.name, self.size, self.colour = name, int(size), colour
        self.in_range = tuple(float(v) for v in in_range)
        self.out_range = tuple(float(v) for v in (out_range or in_range))
        if metric not in METRICS:
            raise ModelError(f"restoration model {name}: unknown metric '{metric}' (known: {', '.join(METRICS)})")
        self.metric = metric
        self.score_range = tuple(score_range) or DEFAULT_SCORE_RANGE[metric]
        self.max_batch = max_batch
        self.session = make_session(path, num_cpus, use_gpu, what=f"restoration model {name}")
        what = "restoration model"
        check_image_input(self.session, self.size, name, what, setting="fiqa.restoration.size")
        inputs = self.session.get_inputs()
        self.input_name = inputs[0].name
        self.input_dtype = TENSOR_DTYPES.get(inputs[0].type)
        if self.input_dtype not in (np.float32, np.float16, np.float64):
            raise ModelError(f"{what} {name}: its image input '{inputs[0].name}' is {inputs[0].type}, not a float tensor")
        extra = dict(extra_inputs or {})
        names = [i.name for i in inputs[1:]]
        unknown = sorted(set(extra) - set(names))
        if unknown:
            raise ModelError(f"{what} {name}: has no input '{unknown[0]}' (fiqa.restoration.extra_inputs; its "
                             f"inputs: {', '.join(i.name for i in inputs)})")
        self.constants = {}
        for i in inputs[1:]:
            if i.name not in extra:
                raise ModelError(f"{what} {name}: its input '{i.name}' ({i.type}) needs a value: set "
                                 f"fiqa.restoration.extra_inputs: {{{i.name}: <number>}}")
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
            self.constants[i.name] = np.full(shape, extra[i.name], TENSOR_DTYPES.get(i.type, np.float32))
        out = self.session.get_outputs()[0]
        self.output_name = out.name
        oshape = out.shape
        if oshape is not None and len(oshape) and (len(oshape) != 4 or (isinstance(oshape[1], int) and oshape[1] != 3)):
            got = "x".join(str(d) if isinstance(d, int) else "?" for d in oshape)
            raise ModelError(f"{what} {name}: its output '{out.name}' has shape {got}; a restorer returns "
                             f"(N, 3, H, W) images")
        self.fixed = fixed_batch(self.session)

    def _to_model(self, crops: np.ndarray) -> tuple:
        """uint8 RGB crops -> (the crops at the model's size as float RGB 0..255, the model input)."""
        return image_batch(crops, self.size, self.colour, self.in_range, self.input_dtype)

    def _from_model(self, y: np.ndarray) -> np.ndarray:
        """Model output (N, 3, H, W) -> float RGB 0..255 (N, size, size, 3)."""
        y = np.asarray(y, np.float32)
        if y.ndim != 4 or y.shape[1] != 3:
            raise ModelError(f"restoration model {self.name}: returned shape {'x'.join(map(str, y.shape))}; a "
                             f"restorer returns (N, 3, H, W) images")
        lo, hi = self.out_range
        y = np.clip((y - lo) * np.float32(255.0 / (hi - lo)), 0.0, 255.0).transpose(0, 2, 3, 1)
        if self.colour == "BGR":
            y = y[..., ::-1]
        s = self.size
        if y.shape[1:3] != (s, s):
            y = np.stack([cv2.resize(np.ascontiguousarray(im), (s, s), interpolation=cv2.INTER_AREA) for im in y])
        return y

    def restore(self, crops: np.ndarray) -> tuple:
        """(the crops at the model's size, their restorations): float RGB 0..255, (N, size, size, 3)."""
        x, t = self._to_model(np.asarray(crops))
        outs = []
        for i, j in chunks(len(t), self.fixed, self.max_batch):
            feed = {self.input_name: pad_to(t[i:j], self.fixed), **self.constants}
            outs.append(self._from_model(self.session.run([self.output_name], feed)[0][: j - i]))
        return x, np.concatenate(outs)

    def score(self, crops: np.ndarray) -> tuple:
        """(raw similarity, 0-100 score) per crop."""
        if len(crops) == 0:
            return np.zeros(0), np.zeros(0)
        x, y = self.restore(crops)
        fn = METRICS[self.metric]
        raw = np.array([fn(a, b) for a, b in zip(x, y)])
        return raw, map_score(raw, self.score_range)


@register("fiqa", "restoration", models=lambda cfg: [CATALOGUE["face-restoration"],
                                                      named(cfg.fiqa.restoration.model, "fiqa")],
          check=side_by_side_check("restoration"), needs=(("onnxruntime", "prod"),),
          traits={"input": "face_crop_target"})
class RestorationBackend:
    """restoration consistency: how much a face-restoration model changes the primary face"""

    def __init__(self, cfg):
        from ..modelstore import resolve

        s, r = cfg.fiqa.restoration, cfg.fiqa.resources
        path = resolve(s.model, s.sha256, cfg.input.storage_options)
        self.model = Restorer(path, s.model, s.size, s.colour, s.range, s.output_range, s.extra_inputs, s.metric,
                              s.score_range, r.num_cpus, r.num_gpus > 0)

    def score(self, crops: np.ndarray) -> np.ndarray:
        out = np.full((len(crops), len(FIQA_KEYS)), np.nan, np.float32)
        if len(crops):
            raw, mapped = self.model.score(crops)
            out[:, FIQA_KEYS.index("restoration_raw")] = raw
            out[:, FIQA_KEYS.index("restoration_score")] = mapped
        return out
