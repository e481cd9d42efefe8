"""Deep general-IQA backends on torch, batched over face crops, for GPU actors.

- ``timm``: a timm backbone with a one-output regression head, loaded from a checkpoint your team
  trained — the commercially clean path.  The checkpoint is a dict saved with ``torch.save``:
  ``{"arch": "resnet50", "state_dict": {...}, "input_size": 224, "mean": [...], "std": [...],
  "lo": 0.0, "hi": 1.0}`` (lo/hi: the model output that maps to 0 and to 100).  It is loaded with
  ``weights_only=True``: no pickled code runs.
- ``pyiqa``: a pyiqa metric by name (MUSIQ, MANIQA, HyperIQA, TReS, MetaIQA, TOPIQ,
  ``topiq_nr-face``) with a local weights file.  pyiqa's code is PolyForm Noncommercial and its
  weights CC BY-NC-SA: the run summary records that licence wherever it is used.

Inputs are uint8 HxWx3 RGB crops; on CUDA they travel through pinned host memory and run under
bfloat16 autocast.
"""

from __future__ import annotations

import contextlib

import numpy as np

from ..errors import ConfigError, ModelError, require
from ..models import CATALOGUE, named
from ..registry import register


def _device(use_gpu: bool):
    torch = require("torch", "prod", "deep IQA")
    return torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")


def _to_tensor(crops: np.ndarray, device):
    import torch

    x = torch.from_numpy(np.ascontiguousarray(crops))
    if device.type == "cuda":
        x = x.pin_memory().to(device, non_blocking=True)
    return x.permute(0, 3, 1, 2).float().div_(255.0)


class TimmIQA:
    def __init__(self, path: str, use_gpu: bool = False, amp: bool = True):
        torch = require("torch", "prod", "deep IQA")
        timm = require("timm", "prod", "the timm IQA backend")
        from ..modelstore import load_torch_weights

        ck = load_torch_weights(path)
        missing = [k for k in ("arch", "state_dict") if k not in ck]
        if missing:
            raise ModelError(f"IQA checkpoint {path} lacks {', '.join(missing)} "
                             f"(expected {{'arch', 'state_dict', 'input_size', 'mean', 'std', 'lo', 'hi'}})")
        self.device = _device(use_gpu)
        self.model = timm.create_model(ck["arch"], pretrained=False, num_classes=1)
        self.model.load_state_dict(ck["state_dict"])
        self.model.eval().to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.size = int(ck.get("input_size", 224))
        self.mean = torch.tensor(ck.get("mean", [0.485, 0.456, 0.406]), device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(ck.get("std", [0.229, 0.224, 0.225]), device=self.device).view(1, 3, 1, 1)
        self.lo, self.hi = float(ck.get("lo", 0.0)), float(ck.get("hi", 1.0))
        self.amp = amp and self.device.type == "cuda"
        self.arch = ck["arch"]

    def score(self, crops: np.ndarray, max_batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """(raw output, mapped 0–100) per crop."""
        import torch
        import torch.nn.functional as F

        if len(crops) == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        outs = []
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            for i in range(0, len(crops), max_batch):
                x = _to_tensor(crops[i:i + max_batch], self.device)
                if x.shape[-1] != self.size or x.shape[-2] != self.size:
                    x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True,
                                      align_corners=False)
                x = (x - self.mean) / self.std
                if self.device.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                outs.append(self.model(x).float().reshape(-1).cpu().numpy())
        raw = np.concatenate(outs)
        mapped = np.clip((raw - self.lo) / (self.hi - self.lo), 0, 1) * 100
        return raw.astype(np.float32), mapped.astype(np.float32)


class _NoFaceAligner:
    """Stands in for facexlib's RetinaFace aligner, which pyiqa's TOPIQ-face builds (downloading
    its weights) even with ``align_crop_face=False``.  faceqc aligns faces itself, so it is never
    called."""

    def __init__(self, *a, **kw):
        pass

    def __getattr__(self, name):
        raise RuntimeError("faceqc aligns faces itself: pyiqa's facexlib aligner is not loaded")


@contextlib.contextmanager
def _no_backbone_downloads():
    """While a pyiqa network is constructed, build its ImageNet backbones random-init.

    HyperIQA, TReS and MANIQA call ``timm.create_model(..., pretrained=True)`` or torchvision's
    ``resnet50(weights="IMAGENET1K_V1")`` in their constructors, a download that fails offline,
    before the metric's own checkpoint is loaded over every weight.  :class:`PyiqaIQA` loads that
    checkpoint strictly, so a backbone built random-init here never survives into scoring.
    TOPIQ-face's face aligner is not built at all (:class:`_NoFaceAligner`)."""
    import importlib

    import timm
    import torchvision

    try:
        topiq = importlib.import_module("pyiqa.archs.topiq_arch")
    except ImportError:  # facexlib missing: TOPIQ is unavailable anyway
        topiq = None
    aligner = topiq and topiq.FaceRestoreHelper

    create = timm.create_model

    def create_model(*a, **kw):
        kw["pretrained"] = False
        return create(*a, **kw)

    saved = {}
    for name in torchvision.models.list_models():
        builder = getattr(torchvision.models, name, None)
        if builder is None:
            continue
        saved[name] = builder

        def offline(*a, _b=builder, **kw):
            kw.pop("pretrained", None)
            kw["weights"] = None
            return _b(*a, **kw)

        setattr(torchvision.models, name, offline)
    timm.create_model = create_model
    if topiq:
        topiq.FaceRestoreHelper = _NoFaceAligner
    try:
        yield
    finally:
        timm.create_model = create
        if topiq:
            topiq.FaceRestoreHelper = aligner
        for name, builder in saved.items():
            setattr(torchvision.models, name, builder)


def pyiqa_state_dict(path: str) -> dict:
    """The state dict in a pyiqa weights file: the ``params`` entry of pyiqa's release files, or
    a bare state dict; ``module.`` prefixes (DataParallel) removed.  Loaded with
    ``weights_only=True``: pyiqa's own loader unpickles with ``weights_only=False``, which runs
    any code a file carries."""
    from ..modelstore import load_torch_weights

    ck = load_torch_weights(path)
    if isinstance(ck, dict) and isinstance(ck.get("params"), dict):
        ck = ck["params"]
    if not isinstance(ck, dict) or not ck:
        raise ModelError(f"pyiqa weights {path}: expected a state dict or {{'params': state_dict}}")
    return {k[7:] if k.startswith("module.") else k: v for k, v in ck.items()}


def offline_kwargs(metric: str, options: dict | None = None) -> dict:
    """``create_metric`` keywords that build ``metric``'s network without any weights: no
    release checkpoint, no TOPIQ backbone, and TOPIQ-face without its own face alignment (faceqc
    aligns, so it batches); ``options`` (``iqa.pyiqa_options``) on top."""
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    kw = {"pretrained": False}
    if DEFAULT_CONFIGS[metric]["metric_opts"]["type"] == "CFANet":  # TOPIQ
        kw["backbone_pretrain"] = False
    if metric == "topiq_nr-face":
        kw["align_crop_face"] = False
    return {**kw, **(options or {})}


def declared_range(config: dict) -> tuple[float, float]:
    """pyiqa's declared ``score_range`` of a metric ("~0, ~100") as numbers, or (0, 1)."""
    try:
        lo, hi = (float(v.strip().lstrip("~")) for v in config.get("score_range", "0, 1").split(","))
    except ValueError:
        return 0.0, 1.0
    return lo, hi


class PyiqaIQA:
    """A pyiqa metric by name with weights from a local file, never downloaded.

    The network is built without weights (backbones random-init, see
    :func:`_no_backbone_downloads`); then the file is loaded by us, safely and strictly: a file
    that lacks or adds a parameter is an error naming them, not a silently half-random model.
    ``topiq_nr-face`` runs on our aligned crops (``align_crop_face=False``) so that it batches.
    pyiqa's inference wrapper takes RGB in [0, 1]; it runs in float32 (its metrics are not
    validated under bfloat16)."""

    def __init__(self, metric: str, path: str, use_gpu: bool = False, lo: float | None = None,
                 hi: float | None = None, options: dict | None = None):
        """``lo``/``hi``: the outputs mapped to 0 and 100; None: the metric's declared score range."""
        pyiqa = require("pyiqa", "pyiqa", "the pyiqa IQA backend (non-commercial licence)")
        from pyiqa.default_model_configs import DEFAULT_CONFIGS

        if metric not in DEFAULT_CONFIGS:
            raise ConfigError(f"pyiqa has no metric '{metric}' (iqa.pyiqa_metric); "
                             f"no-reference ones include musiq, maniqa, hyperiqa, tres, metaiqa, topiq_nr, topiq_nr-face")
        self.device = _device(use_gpu)
        with _no_backbone_downloads():
            self.metric = pyiqa.create_metric(metric, as_loss=False, device=self.device,
                                              **offline_kwargs(metric, options))
        try:
            missing, unexpected = self.metric.net.load_state_dict(pyiqa_state_dict(path), strict=False)
        except RuntimeError as e:  # a parameter of the wrong shape
            raise ModelError(f"pyiqa weights {path} do not fit {metric}: {e}") from None
        if missing or unexpected:
            def few(keys):
                return ", ".join(list(keys)[:5]) + (" ..." if len(keys) > 5 else "")
            raise ModelError(f"pyiqa weights {path} do not fit {metric}: "
                             f"{len(missing)} missing ({few(missing)}), {len(unexpected)} unexpected ({few(unexpected)})")
        self.metric.net.eval()
        self.name = metric
        if lo is None or hi is None:
            lo, hi = declared_range(DEFAULT_CONFIGS[metric])
        self.lo, self.hi = float(lo), float(hi)

    def score(self, crops: np.ndarray, max_batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """(raw output, mapped 0–100) per crop."""
        import torch

        if len(crops) == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        outs = []
        with torch.inference_mode():
            for i in range(0, len(crops), max_batch):
                outs.append(self.metric(_to_tensor(crops[i:i + max_batch], self.device)).float().reshape(-1).cpu().numpy())
        raw = np.concatenate(outs)
        return raw.astype(np.float32), (np.clip((raw - self.lo) / (self.hi - self.lo), 0, 1) * 100).astype(np.float32)


# --------------------------------------------------------------------------------------------
# the iqa backends


def _model_path(cfg) -> str:
    from ..modelstore import resolve

    return resolve(cfg.iqa.model, cfg.iqa.sha256 or None, cfg.input.storage_options)


def _needs_model(cfg) -> None:
    if not cfg.iqa.model:
        raise ConfigError(f"iqa.model_backend '{cfg.iqa.model_backend}' needs iqa.model (checkpoint path or URI)")


def _pyiqa_check(cfg) -> None:
    _needs_model(cfg)
    if not cfg.iqa.pyiqa_metric:
        raise ConfigError("iqa.model_backend 'pyiqa' needs iqa.pyiqa_metric (e.g. topiq_nr-face)")


@register("iqa", "timm", models=lambda cfg: [named(cfg.iqa.model, "iqa")], check=_needs_model,
          needs=(("torch", "prod"), ("timm", "prod")))
def timm_iqa(cfg) -> TimmIQA:
    """a timm backbone + regression head from your own checkpoint (commercially clean)"""
    return TimmIQA(_model_path(cfg), use_gpu=cfg.iqa.resources.num_gpus > 0, amp=cfg.iqa.amp)


@register("iqa", "pyiqa", models=lambda cfg: [CATALOGUE["pyiqa"], named(cfg.iqa.model, "iqa")],
          check=_pyiqa_check, needs=(("torch", "pyiqa"), ("pyiqa", "pyiqa")))
def pyiqa_iqa(cfg) -> PyiqaIQA:
    """pyiqa 0.1.16 metrics with a local weights file (PolyForm Noncommercial)"""
    c = cfg.iqa
    lo, hi = c.model_range or (None, None)
    return PyiqaIQA(c.pyiqa_metric, _model_path(cfg), use_gpu=c.resources.num_gpus > 0, lo=lo, hi=hi,
                    options=c.pyiqa_options)
