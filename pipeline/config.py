"""All of faceqc's settings in one typed place.

A run's configuration is a :class:`Config`: built from a named *profile* (``--profile``),
then overridden by an optional YAML/JSON file (``--config``).  Unknown keys are errors, so a
typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Tuple, Union


class ConfigError(ValueError):
    """The configuration is wrong: the job refuses to start."""


@dataclass
class Resources:
    """What one stage asks Ray for.

    ``actors``: run as a pool of long-lived actors (models load once per actor; needed for GPU
    stages) instead of Ray tasks (models load once per worker process).  Consecutive task stages
    with equal resources are fused by Ray Data into one operator: no copies between them.
    ``concurrency``: an int (fixed pool size / task limit), a ``[min, max]`` pair (autoscaling
    actor pool) or null (tasks: Ray decides; actors: 1 to as many as the cluster's CPUs hold)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    batch_size: int = 16
    concurrency: Optional[Union[int, Tuple[int, int]]] = None
    actors: bool = False

    def ray_kwargs(self, cluster_cpus: float = 0) -> dict:
        """map_batches keyword arguments.  Actor stages without a set concurrency autoscale
        from 1 to as many actors as the cluster's CPUs hold."""
        from ray.data import ActorPoolStrategy, TaskPoolStrategy

        kw: dict[str, Any] = {"num_cpus": self.num_cpus, "batch_size": self.batch_size}
        if self.num_gpus:
            kw["num_gpus"] = self.num_gpus
        c = self.concurrency
        if self.actors or self.num_gpus:
            if c is None:
                top = max(1, int(cluster_cpus // max(self.num_cpus, 1e-3))) if cluster_cpus else None
                kw["compute"] = ActorPoolStrategy(min_size=1, max_size=top)
            elif isinstance(c, (list, tuple)):
                kw["compute"] = ActorPoolStrategy(min_size=int(c[0]), max_size=int(c[1]))
            else:
                kw["compute"] = ActorPoolStrategy(size=int(c))
        elif c is not None:
            if isinstance(c, (list, tuple)):
                raise ConfigError("a task stage takes one concurrency number, not a [min, max] pair")
            kw["compute"] = TaskPoolStrategy(size=int(c))
        return kw


@dataclass
class InputConfig:
    # when set, directory and prefix walks keep only files with these suffixes (e.g. [".jpg",
    # ".png"]); empty = every file gets a row, so that nothing is silently skipped
    extensions: Tuple[str, ...] = ()
    # fsspec storage options (endpoint, anon, ...); never written to outputs or logs
    storage_options: dict = field(default_factory=dict)


@dataclass
class DecodeConfig:
    max_pixels: int = 80_000_000  # decompression-bomb guard: larger images -> status too_large
    max_bytes: int = 200 * 1024 * 1024  # larger files -> status too_large, not read
    # opencv: OpenCV (plain JPEGs) / Pillow (everything else), image by image on the CPU.
    # torchvision: plain JPEGs batched through torchvision.io.decode_jpeg, nvJPEG on the GPU when
    # resources.num_gpus > 0 (libjpeg-turbo on CPU otherwise); everything else as opencv.
    backend: str = "opencv"
    resources: Resources = field(default_factory=lambda: Resources(num_cpus=1.0, batch_size=16))


@dataclass
class DetectConfig:
    detector: str = "dlib_hog"  # dlib_hog | dlib_mmod | scrfd (insightface pack, ONNX)
    # scrfd: an insightface pack directory (buffalo_l layout) or the detector .onnx (path or URI)
    model: str = ""
    pose_model: str = ""  # scrfd: 1k3d68.onnx (path or URI); taken from the pack directory if empty
    det_size: int = 640  # scrfd input side (letterboxed)
    detect_max_side: int = 800  # detection runs on a copy at most this large
    upsample_below: int = 400  # HOG upsampling (x2) when the detection copy is smaller
    min_det_score: float = 0.0
    retry_rotations: Tuple[float, ...] = (25.0, -25.0, 45.0, -45.0)  # for rolled faces
    retry_equalized: bool = True  # for dark / low-contrast photos
    max_faces: int = 8
    fiqa_crop: int = 112  # ArcFace template
    iqa_crop: int = 224  # same alignment, wider margin
    iqa_margin: float = 1.6  # iqa crop shows this many times the ArcFace crop's extent
    src_patch: int = 192  # un-resampled source pixels around the face (JPEG grid, noise)
    thumb_side: int = 256  # whole-image thumbnail for whole-image IQA
    resources: Resources = field(default_factory=lambda: Resources(num_cpus=1.0, batch_size=16))


@dataclass
class IQAConfig:
    backend: str = "classical"  # the no-reference measures; always computed
    # a deep IQA model on top: none | timm (your checkpoint, commercially clean) | pyiqa
    model_backend: str = "none"
    model: str = ""  # checkpoint / weights: registry name, local path or URI
    sha256: str = ""
    pyiqa_metric: str = ""  # pyiqa only: musiq, maniqa, hyperiqa, tres, metaiqa, topiq_nr, topiq_nr-face
    # pyiqa: the model outputs mapped to 0 and 100; empty: the metric's own declared score range
    # (pyiqa's score_range, e.g. ~0..~100 for musiq and tres, ~0..~1 for the others)
    model_range: Tuple[float, ...] = ()
    # pyiqa only: keyword options for the metric's network, e.g. {num_crop: 5} for hyperiqa or
    # {test_sample: 10} for tres (fewer test-time crops: faster, a little noisier)
    pyiqa_options: dict = field(default_factory=dict)
    whole_image: bool = True  # also score the whole-image thumbnail
    amp: bool = True  # bfloat16 autocast on CUDA
    resources: Resources = field(default_factory=lambda: Resources(num_cpus=1.0, batch_size=16))


@dataclass
class FIQAConfig:
    backend: str = "dlib_stability"  # dlib_stability | onnx | none
    model: str = ""  # onnx: registry name, local path or URI (s3://, gs://, https://)
    sha256: str = ""  # verified before loading (registry models carry their own when known)
    contract: dict = field(default_factory=dict)  # onnx input contract, overrides the registry's
    contract_from: str = ""  # take the contract of this registry model (e.g. arcface-embedding-norm)
    all_faces: bool = False  # score every face, not only the primary one (slow on CPU)
    resources: Resources = field(default_factory=lambda: Resources(num_cpus=1.0, batch_size=16))


@dataclass
class Curve:
    """Flat-topped penalty on one raw measure.

    ``direction`` "high": no penalty while x <= start, growing past it; "low": no penalty while
    x >= start.  t = (x - start) / (full - start) (or the mirror); penalty = weight * softplus(t),
    softplus(t) = log(1 + exp(8 t)) / 8 (≈ 0 for t < 0, ≈ t beyond).  The component's score is
    100 * exp(-penalty), so at x == full the score is 100 * exp(-weight).
    """

    direction: str
    start: float
    full: float
    weight: float = 2.3
    reason: str = ""


def _default_curves() -> dict:
    return {
        # resolution: inter-eye distance in source pixels
        "resolution": Curve("low", start=48.0, full=12.0, weight=2.3, reason="low_resolution"),
        # sharpness: fine/mid band energy ratio of the denoised aligned face
        "sharpness": Curve("low", start=0.045, full=0.008, weight=2.3, reason="blurry"),
        # noise: robust noise sigma (grey levels) of the un-resampled face pixels
        "noise": Curve("high", start=4.0, full=20.0, weight=2.3, reason="noisy"),
        # compression: 8x8 blockiness of the un-resampled face pixels (1.0 = none)
        "compression": Curve("high", start=1.35, full=3.0, weight=2.3, reason="compression_artifacts"),
        # exposure: fractions of clipped face pixels, mean face luminance (0..1)
        "underexposure": Curve("high", start=0.05, full=0.5, weight=2.3, reason="underexposed"),
        "overexposure": Curve("high", start=0.05, full=0.5, weight=2.3, reason="overexposed"),
        "brightness_low": Curve("low", start=0.50, full=0.12, weight=2.3, reason="dark"),
        "brightness_high": Curve("high", start=0.80, full=0.97, weight=1.2, reason="bright"),
        "contrast": Curve("low", start=0.25, full=0.05, weight=1.5, reason="low_contrast"),
        # face quality (recognisability): embedding stability, 1 = perfectly stable
        "recognisability": Curve("low", start=0.975, full=0.94, weight=0.5, reason="low_recognisability"),
        # face-quality model (fiqa.backend onnx): its output mapped to 0-100 by its contract
        "fiqa_model": Curve("low", start=50.0, full=10.0, weight=1.5, reason="low_face_quality"),
        # deep IQA model (iqa.model_backend timm / pyiqa) on the aligned face, mapped to 0-100
        "iqa_model": Curve("low", start=50.0, full=10.0, weight=1.5, reason="low_perceptual_quality"),
    }


@dataclass
class FuseConfig:
    curves: dict = field(default_factory=_default_curves)
    # head pose: OFIQ's mapping 100 * max(0, cos(angle))^2, raised to this weight (0 = ignored).
    # Pitch from 5 landmarks is too weak to judge by (see geometry.head_pose_dlib5).
    pose_weights: dict = field(default_factory=lambda: {"yaw": 1.0, "pitch": 0.0, "roll": 1.0})
    accept: float = 60.0  # quality >= accept -> accept
    review: float = 35.0  # quality >= review -> review, else reject
    reason_below: float = 70.0  # a component scoring below this is named in `reasons`
    multiple_faces_ratio: float = 0.25  # a 2nd face this large (area vs primary) adds a reason
    resources: Resources = field(default_factory=lambda: Resources(num_cpus=1.0, batch_size=16))


@dataclass
class OutputConfig:
    max_rows_per_file: int = 50_000
    compression: str = "zstd"


@dataclass
class Config:
    profile: str = "offline"
    input: InputConfig = field(default_factory=InputConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    iqa: IQAConfig = field(default_factory=IQAConfig)
    fiqa: FIQAConfig = field(default_factory=FIQAConfig)
    fuse: FuseConfig = field(default_factory=FuseConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self, redact: bool = True) -> dict:
        d = dataclasses.asdict(self)
        if redact:
            d["input"]["storage_options"] = {k: "***" for k in d["input"]["storage_options"]}
        return d


PROFILES = {
    # everything offline, CPU only: dlib HOG + 5-point landmarks, classical IQA, dlib FIQA
    "offline": {},
    # as offline without the dlib face-quality network (~300 ms per face on one core) and
    # without detection retries: ~5x faster; misses more rolled / dark faces, no
    # recognisability component
    "offline-fast": {"detect": {"retry_rotations": [], "retry_equalized": False}, "fiqa": {"backend": "none"}},
}


def _merge(dc_type, current, override: dict, path: str):
    if not isinstance(override, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(override).__name__}")
    names = {f.name: f for f in dataclasses.fields(dc_type)}
    kw = {}
    for key, value in override.items():
        where = f"{path}.{key}" if path else key
        if key not in names:
            raise ConfigError(f"unknown setting '{where}' (known: {', '.join(sorted(names))})")
        cur = getattr(current, key)
        if dataclasses.is_dataclass(cur):
            kw[key] = _merge(type(cur), cur, value, where)
        elif key == "curves":
            curves = dict(cur)
            for cname, cval in value.items():
                base = curves.get(cname)
                if base is None:
                    raise ConfigError(f"unknown curve '{where}.{cname}' (known: {', '.join(sorted(curves))})")
                curves[cname] = _merge(Curve, base, cval, f"{where}.{cname}")
            kw[key] = curves
        elif isinstance(cur, dict) and isinstance(value, dict):
            kw[key] = {**cur, **value}
        elif isinstance(cur, tuple) and isinstance(value, list):
            kw[key] = tuple(value)
        else:
            if cur is not None and value is not None and not isinstance(value, type(cur)):
                if isinstance(cur, float) and isinstance(value, int):
                    value = float(value)
                elif not (key == "concurrency"):
                    raise ConfigError(f"{where}: expected {type(cur).__name__}, got {value!r}")
            kw[key] = value
    return dataclasses.replace(current, **kw)


def load_config(path: Optional[str] = None, profile: Optional[str] = None, overrides: Optional[dict] = None) -> Config:
    """Profile defaults, then the file at ``path`` (YAML or JSON), then ``overrides``."""
    data: dict = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {path}")
        text = p.read_text()
        try:
            if p.suffix.lower() == ".json":
                data = json.loads(text) or {}
            else:
                import yaml

                data = yaml.safe_load(text) or {}
        except Exception as e:  # noqa: BLE001 - report any parse error the same way
            raise ConfigError(f"cannot parse config file {path}: {e}") from e
    name = profile or data.get("profile") or "offline"
    if name not in PROFILES:
        raise ConfigError(f"unknown profile '{name}' (known: {', '.join(PROFILES)})")
    cfg = _merge(Config, Config(), PROFILES[name], "")
    cfg = _merge(Config, cfg, {k: v for k, v in data.items() if k != "profile"}, "")
    if overrides:
        cfg = _merge(Config, cfg, overrides, "")
    cfg = dataclasses.replace(cfg, profile=name)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    f = cfg.fuse
    if not 0 <= f.review <= f.accept <= 100:
        raise ConfigError(f"fuse thresholds need 0 <= review ({f.review}) <= accept ({f.accept}) <= 100")
    for name, c in f.curves.items():
        if c.direction not in ("high", "low"):
            raise ConfigError(f"fuse.curves.{name}.direction must be 'high' or 'low'")
        if c.start == c.full:
            raise ConfigError(f"fuse.curves.{name}: start and full must differ")
        if (c.direction == "high") != (c.full > c.start):
            raise ConfigError(f"fuse.curves.{name}: for direction '{c.direction}', full must be "
                              f"{'above' if c.direction == 'high' else 'below'} start")
        if c.weight < 0:
            raise ConfigError(f"fuse.curves.{name}.weight must be >= 0")
    if cfg.detect.detector not in ("dlib_hog", "dlib_mmod", "scrfd"):
        raise ConfigError(f"detect.detector '{cfg.detect.detector}' unknown (dlib_hog, dlib_mmod, scrfd)")
    if cfg.detect.detector == "scrfd" and not cfg.detect.model:
        raise ConfigError("detect.detector 'scrfd' needs detect.model: an insightface pack directory or a "
                          "detector .onnx path/URI")
    if cfg.fiqa.backend not in ("dlib_stability", "onnx", "none"):
        raise ConfigError(f"fiqa.backend '{cfg.fiqa.backend}' unknown (dlib_stability, onnx, none)")
    if cfg.fiqa.backend == "onnx" and not cfg.fiqa.model:
        raise ConfigError("fiqa.backend 'onnx' needs fiqa.model: a registry name, local path or URI")
    if cfg.iqa.backend != "classical":
        raise ConfigError(f"iqa.backend '{cfg.iqa.backend}' unknown (classical)")
    if cfg.iqa.model_backend not in ("none", "timm", "pyiqa"):
        raise ConfigError(f"iqa.model_backend '{cfg.iqa.model_backend}' unknown (none, timm, pyiqa)")
    if cfg.iqa.model_backend != "none" and not cfg.iqa.model:
        raise ConfigError(f"iqa.model_backend '{cfg.iqa.model_backend}' needs iqa.model (checkpoint path or URI)")
    if cfg.iqa.model_backend == "pyiqa" and not cfg.iqa.pyiqa_metric:
        raise ConfigError("iqa.model_backend 'pyiqa' needs iqa.pyiqa_metric (e.g. topiq_nr-face)")
    r = cfg.iqa.model_range
    if r and (len(r) != 2 or r[0] == r[1]):
        raise ConfigError(f"iqa.model_range must be empty or [output at 0, output at 100], got {list(r)}")
    if cfg.decode.backend not in ("opencv", "torchvision"):
        raise ConfigError(f"decode.backend '{cfg.decode.backend}' unknown (opencv, torchvision)")
    if cfg.decode.resources.num_gpus > 0 and cfg.decode.backend != "torchvision":
        raise ConfigError("decode.resources.num_gpus > 0 needs decode.backend torchvision (nvJPEG); "
                          "the opencv backend decodes on the CPU")
    if cfg.decode.max_pixels <= 0:
        raise ConfigError("decode.max_pixels must be positive")
