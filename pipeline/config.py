"""All of faceqc's settings in one typed place.

A run's configuration is a :class:`Config`: a named *profile* (``--profile``), then an optional
YAML/JSON file (``--config``), then overrides, merged key by key and validated once by pydantic.
Types, ranges and allowed values are declared here, next to each setting; unknown keys are
refused at every depth; every mistake becomes one :class:`ConfigError` line naming the key, the
value and what is allowed.  Which backend names exist is the backend registry's to say
(:mod:`pipeline.registry`), and each backend checks the settings it needs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Literal, Optional, Tuple, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from . import SCHEMA_VERSION, __version__
from .errors import ConfigError

# Numbers inside lists and the pose weights keep the type they were written with (2 stays 2, as in
# the run fingerprints of earlier versions, so that their runs still resume)
Number = Union[int, float]


class _Section(BaseModel):
    """A group of settings: unknown keys are errors; values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Resources(_Section):
    """What one stage asks Ray for.

    ``actors``: run as a pool of long-lived actors (models load once per actor; needed for GPU
    stages) instead of Ray tasks (models load once per worker process).  Consecutive task stages
    with equal resources run as one Ray task: no copies between them.  ``concurrency``: an int
    (fixed pool size / task limit), a ``[min, max]`` pair (autoscaling actor pool) or null
    (tasks: Ray decides; actors: 1 to as many as the cluster's CPUs hold)."""

    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    batch_size: int = Field(16, ge=1)
    concurrency: Optional[Union[int, Tuple[int, int]]] = None
    actors: bool = False

    @field_validator("concurrency", mode="before")
    @classmethod
    def _concurrency(cls, v):
        if v is None:
            return v
        if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, (list, tuple)) and len(v) == 2
                                                                and all(isinstance(x, int) and not isinstance(x, bool)
                                                                        for x in v))):
            raise ValueError("must be a whole number or a [min, max] pair of whole numbers")
        if isinstance(v, int) and v < 1:
            raise ValueError("must be at least 1")
        if isinstance(v, (list, tuple)) and not 1 <= v[0] <= v[1]:
            raise ValueError("[min, max] needs 1 <= min <= max")
        return tuple(v) if isinstance(v, list) else v

    @model_validator(mode="after")
    def _pair_needs_actors(self):
        if isinstance(self.concurrency, tuple) and not (self.actors or self.num_gpus):
            raise ValueError("a [min, max] concurrency is an autoscaling actor pool: set actors: true "
                             "(a task stage takes one number)")
        return self

    @property
    def uses_actors(self) -> bool:
        return self.actors or self.num_gpus > 0


def _resources(**kw) -> Any:
    return Field(default_factory=lambda: Resources(**kw))


class InputConfig(_Section):
    # when set, directory and prefix walks keep only files with these suffixes (e.g. [".jpg",
    # ".png"]); empty = every file gets a row, so that nothing is silently skipped
    extensions: Tuple[str, ...] = ()
    # fsspec storage options (endpoint, anon, ...); never written to outputs or logs
    storage_options: Dict[str, Any] = Field(default_factory=dict)

    @field_validator("extensions")
    @classmethod
    def _suffixes(cls, v):
        bad = [e for e in v if not e.startswith(".") or len(e) < 2]
        if bad:
            raise ValueError(f"suffixes start with a dot, e.g. \".jpg\" (got {bad[0]!r})")
        return v


class DecodeConfig(_Section):
    max_pixels: int = Field(80_000_000, ge=1)  # decompression-bomb guard: larger images -> too_large
    max_bytes: int = Field(200 * 1024 * 1024, ge=1)  # larger files -> status too_large, not read
    # opencv: OpenCV (plain JPEGs) / Pillow (everything else), image by image on the CPU.
    # torchvision: plain JPEGs batched through torchvision.io.decode_jpeg, nvJPEG on the GPU when
    # resources.num_gpus > 0 (libjpeg-turbo on CPU otherwise); everything else as opencv.
    backend: str = "opencv"
    resources: Resources = _resources(num_cpus=1.0, batch_size=16)


class DetectConfig(_Section):
    detector: str = "dlib_hog"  # dlib_hog | dlib_mmod | scrfd (insightface pack, ONNX)
    # scrfd: an insightface pack directory (buffalo_l layout) or the detector .onnx (path or URI)
    model: str = ""
    pose_model: str = ""  # scrfd: 1k3d68.onnx (path or URI); taken from the pack directory if empty
    det_size: int = Field(640, ge=32)  # scrfd input side (letterboxed)
    detect_max_side: int = Field(800, ge=32)  # detection runs on a copy at most this large
    upsample_below: int = Field(400, ge=0)  # HOG upsampling (x2) when the detection copy is smaller
    min_det_score: float = 0.0
    retry_rotations: Tuple[Number, ...] = (25.0, -25.0, 45.0, -45.0)  # for rolled faces
    retry_equalized: bool = True  # for dark / low-contrast photos
    max_faces: int = Field(8, ge=1)
    fiqa_crop: int = Field(112, ge=16)  # ArcFace template
    iqa_crop: int = Field(224, ge=32)  # same alignment, wider margin
    iqa_margin: float = Field(1.6, ge=1.0)  # iqa crop shows this many times the ArcFace crop's extent
    src_patch: int = Field(192, ge=32)  # un-resampled source pixels around the face (JPEG grid, noise)
    thumb_side: int = Field(256, ge=16)  # whole-image thumbnail for whole-image IQA
    # the face size training sets use (FFHQ-aligned crops of this side): detail is judged at this
    # scale (or at source scale when the face is smaller), restoration models and the crop export
    # see faces framed this way
    target_size: int = Field(512, ge=64, le=2048)
    resources: Resources = _resources(num_cpus=1.0, batch_size=16)

    @field_validator("retry_rotations")
    @classmethod
    def _angles(cls, v):
        if any(not -180 <= a <= 180 for a in v):
            raise ValueError("angles are degrees between -180 and 180")
        return v


class IQAConfig(_Section):
    backend: Literal["classical"] = "classical"  # the no-reference measures; always computed
    # a deep IQA model on top: none | timm (your checkpoint, commercially clean) | pyiqa
    model_backend: str = "none"
    model: str = ""  # checkpoint / weights: registry name, local path or URI
    sha256: str = Field("", pattern=r"^([0-9a-fA-F]{64})?$")
    pyiqa_metric: str = ""  # pyiqa only: musiq, maniqa, hyperiqa, tres, metaiqa, topiq_nr, topiq_nr-face
    # pyiqa: the model outputs mapped to 0 and 100; empty: the metric's own declared score range
    # (pyiqa's score_range, e.g. ~0..~100 for musiq and tres, ~0..~1 for the others)
    model_range: Tuple[Number, ...] = ()
    # pyiqa only: keyword options for the metric's network, e.g. {num_crop: 5} for hyperiqa or
    # {test_sample: 10} for tres (fewer test-time crops: faster, a little noisier)
    pyiqa_options: Dict[str, Any] = Field(default_factory=dict)
    whole_image: bool = True  # also score the whole-image thumbnail
    amp: bool = True  # bfloat16 autocast on CUDA
    resources: Resources = _resources(num_cpus=1.0, batch_size=16)

    @field_validator("model_range")
    @classmethod
    def _range(cls, v):
        if v and (len(v) != 2 or v[0] == v[1]):
            raise ValueError("must be empty or [output at 0, output at 100] with two different values")
        return v


class FIQAConfig(_Section):
    backend: str = "dlib_stability"  # dlib_stability | onnx | none
    model: str = ""  # onnx: registry name, local path or URI (s3://, gs://, https://)
    sha256: str = Field("", pattern=r"^([0-9a-fA-F]{64})?$")  # verified before loading
    contract: Dict[str, Any] = Field(default_factory=dict)  # onnx input contract, overrides the registry's
    contract_from: str = ""  # take the contract of this registry model (e.g. arcface-embedding-norm)
    all_faces: bool = False  # score every face, not only the primary one (slow on CPU)
    resources: Resources = _resources(num_cpus=1.0, batch_size=16)


class Curve(_Section):
    """Flat-topped penalty on one raw measure (see :func:`pipeline.stages.fuse.curve_penalty`).

    ``direction`` "high": no penalty while x <= start, growing past it; "low": no penalty while
    x >= start.  With t = (x - start) / (full - start) (or the mirror), the penalty grows
    quadratically over the first fifth of the way (t <= 0.2), then linearly (a Huber curve),
    normalised so that it equals ``weight`` at x == full.  The component's score is
    100 * exp(-penalty): 100 * exp(-weight) at full (10 for the default weight 2.3)."""

    direction: Literal["high", "low"]
    start: float
    full: float
    weight: float = Field(2.3, ge=0)
    reason: str = ""

    @model_validator(mode="after")
    def _ordered(self):
        if self.start == self.full:
            raise ValueError("start and full must differ")
        if (self.direction == "high") != (self.full > self.start):
            raise ValueError(f"for direction '{self.direction}', full must be "
                             f"{'above' if self.direction == 'high' else 'below'} start")
        return self


def _default_curves() -> Dict[str, Curve]:
    return {
        # resolution: inter-eye distance in source pixels
        "resolution": Curve(direction="low", start=48.0, full=12.0, weight=2.3, reason="low_resolution"),
        # sharpness: fine/mid band energy ratio of the denoised aligned face
        "sharpness": Curve(direction="low", start=0.045, full=0.008, weight=2.3, reason="blurry"),
        # noise: robust noise sigma (grey levels) of the un-resampled face pixels
        "noise": Curve(direction="high", start=4.0, full=20.0, weight=2.3, reason="noisy"),
        # compression: 8x8 blockiness of the un-resampled face pixels (1.0 = none)
        "compression": Curve(direction="high", start=1.35, full=3.0, weight=2.3, reason="compression_artifacts"),
        # exposure: fractions of clipped face pixels, mean face luminance (0..1)
        "underexposure": Curve(direction="high", start=0.05, full=0.5, weight=2.3, reason="underexposed"),
        "overexposure": Curve(direction="high", start=0.05, full=0.5, weight=2.3, reason="overexposed"),
        "brightness_low": Curve(direction="low", start=0.50, full=0.12, weight=2.3, reason="dark"),
        "brightness_high": Curve(direction="high", start=0.80, full=0.97, weight=1.2, reason="bright"),
        "contrast": Curve(direction="low", start=0.25, full=0.05, weight=1.5, reason="low_contrast"),
        # face quality (recognisability): embedding stability, 1 = perfectly stable
        "recognisability": Curve(direction="low", start=0.975, full=0.94, weight=0.5, reason="low_recognisability"),
        # face-quality model (fiqa.backend onnx): its output mapped to 0-100 by its contract
        "fiqa_model": Curve(direction="low", start=50.0, full=10.0, weight=1.5, reason="low_face_quality"),
        # deep IQA model (iqa.model_backend timm / pyiqa) on the aligned face, mapped to 0-100
        "iqa_model": Curve(direction="low", start=50.0, full=10.0, weight=1.5, reason="low_perceptual_quality"),
    }


CURVE_NAMES = tuple(_default_curves())


class PoseWeights(_Section):
    """Exponents on OFIQ's head-pose mapping 100·max(0, cos θ)² (0 = not judged).  Pitch from 5
    landmarks is too weak to judge by (see geometry.head_pose_dlib5)."""

    yaw: Number = Field(1.0, ge=0)
    pitch: Number = Field(0.0, ge=0)
    roll: Number = Field(1.0, ge=0)


class FuseConfig(_Section):
    curves: Dict[str, Curve] = Field(default_factory=_default_curves)
    pose_weights: PoseWeights = Field(default_factory=PoseWeights)
    accept: float = Field(60.0, ge=0, le=100)  # quality >= accept -> accept
    review: float = Field(35.0, ge=0, le=100)  # quality >= review -> review, else reject
    reason_below: float = Field(70.0, ge=0, le=100)  # a component scoring below this is named in `reasons`
    multiple_faces_ratio: float = Field(0.25, gt=0, le=1)  # a 2nd face this large (area vs primary) adds a reason
    resources: Resources = _resources(num_cpus=1.0, batch_size=16)

    @field_validator("curves", mode="before")
    @classmethod
    def _known_curves(cls, v):
        if not isinstance(v, dict):
            return v
        unknown = sorted(set(v) - set(CURVE_NAMES))
        if unknown:
            raise ValueError(f"unknown curve '{unknown[0]}' (known: {', '.join(CURVE_NAMES)})")
        return v

    @model_validator(mode="after")
    def _thresholds(self):
        if self.review > self.accept:
            raise ValueError(f"thresholds need review ({self.review:g}) <= accept ({self.accept:g})")
        return self


class OutputConfig(_Section):
    max_rows_per_file: int = Field(50_000, ge=1)
    compression: Literal["zstd", "snappy", "gzip", "brotli", "lz4", "none"] = "zstd"


class StorageConfig(_Section):
    """How faceqc talks to storage: it does not change a single score, so it is left out of the
    fingerprint (as storage options are).

    Listing pages, object reads, part-file writes and commits that fail for a transient reason
    (throttling: SlowDown, 429/503; a dropped connection; a timeout) are retried up to ``retries``
    times, waiting a random time up to ``min(backoff_cap, backoff_base * 2**attempt)`` seconds
    (capped exponential backoff with full jitter).  faceqc owns these retries, and counts them in
    ``_summary.json``: on S3 it turns botocore's and s3fs's own retry layers off (unless the
    storage options set them), so that no retry goes uncounted.  ``timeout``: seconds to connect
    or to wait for a read on S3 (an unanswered request is a timeout, and retried).

    ``lock_lease``: a run holds ``OUT/_lock.json`` and refreshes it every ``lock_heartbeat``
    seconds; a lock not refreshed for ``lock_lease`` seconds belongs to a dead run and is taken
    over (at once when its holder's process is gone on this host)."""

    retries: int = Field(8, ge=0, le=100)
    backoff_base: float = Field(0.2, gt=0, le=60)
    backoff_cap: float = Field(20.0, gt=0, le=600)
    timeout: float = Field(60.0, gt=0, le=3600)
    lock_lease: float = Field(300.0, ge=2, le=86400)
    lock_heartbeat: float = Field(30.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _heartbeat_within_lease(self):
        if self.lock_heartbeat * 2 > self.lock_lease:
            raise ValueError(f"lock_heartbeat ({self.lock_heartbeat:g} s) must be at most half of "
                             f"lock_lease ({self.lock_lease:g} s)")
        if self.backoff_base > self.backoff_cap:
            raise ValueError(f"backoff_base ({self.backoff_base:g}) must not exceed backoff_cap ({self.backoff_cap:g})")
        return self


# settings that never change a score: left out of the scoring fingerprint of nightly runs
_NOT_SCORING = ("output", "storage")


class Config(_Section):
    profile: str = "offline"
    input: InputConfig = Field(default_factory=InputConfig)
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    detect: DetectConfig = Field(default_factory=DetectConfig)
    iqa: IQAConfig = Field(default_factory=IQAConfig)
    fiqa: FIQAConfig = Field(default_factory=FIQAConfig)
    fuse: FuseConfig = Field(default_factory=FuseConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)

    def to_dict(self, redact: bool = True) -> dict:
        """Plain data (tuples stay tuples); storage options masked unless ``redact`` is False."""
        d = self.model_dump()
        if redact:
            d["input"]["storage_options"] = {k: "***" for k in d["input"]["storage_options"]}
        return d

    def backends(self) -> list:
        """(stage, backend name, the setting that names it) of every backend this configuration
        runs, in pipeline order; the registry (:mod:`pipeline.registry`) knows what each is."""
        out = [("decode", self.decode.backend, "decode.backend"), ("detect", self.detect.detector, "detect.detector"),
               ("iqa", self.iqa.backend, "iqa.backend")]
        if self.iqa.model_backend != "none":
            out.append(("iqa", self.iqa.model_backend, "iqa.model_backend"))
        if self.fiqa.backend != "none":
            out.append(("fiqa", self.fiqa.backend, "fiqa.backend"))
        return out

    def fingerprint(self) -> str:
        """What decides the scores: every setting except storage options (credentials may rotate
        between a killed attempt and its restart), and the faceqc and schema versions."""
        d = self.to_dict(redact=False)
        d["input"].pop("storage_options", None)
        d.pop("storage", None)
        return hashlib.sha256(json.dumps([d, __version__, SCHEMA_VERSION], sort_keys=True, default=str)
                              .encode()).hexdigest()[:32]

    def parts(self) -> dict:
        """The settings split by what a change of them redoes (nightly runs compare these):
        ``scoring``: what decides the raw measures (every stage's settings but its resources, the
        input filter, the faceqc and schema versions); ``fusion``: how raw measures become
        components, a quality and a verdict (``fuse.*`` but its resources).  Neither holds
        storage options, storage / output settings or resources, which change no score."""
        d = self.to_dict(redact=False)
        d["input"].pop("storage_options", None)
        for k in _NOT_SCORING:
            d.pop(k, None)
        for section in d.values():
            if isinstance(section, dict):
                section.pop("resources", None)
        fusion = d.pop("fuse")
        return {"scoring": d, "fusion": fusion}

    def fingerprints(self) -> dict:
        """Digests of :meth:`parts`: {"scoring": .., "fusion": ..} (models are added by the
        nightly run, which hashes their files)."""
        p = self.parts()
        h = lambda x: hashlib.sha256(json.dumps(x, sort_keys=True, default=str).encode()).hexdigest()[:32]  # noqa: E731
        return {"scoring": h([p["scoring"], __version__, SCHEMA_VERSION]), "fusion": h(p["fusion"])}


PROFILES: Dict[str, dict] = {
    # everything offline, CPU only: dlib HOG + 5-point landmarks, classical IQA, dlib FIQA
    "offline": {},
    # as offline without the dlib face-quality network (~150 ms per pass on one core, two passes
    # per face) and without detection retries: ~5x faster; misses more rolled / dark faces, no
    # recognisability component
    "offline-fast": {"detect": {"retry_rotations": [], "retry_equalized": False}, "fiqa": {"backend": "none"}},
}


def merge(base: dict, override: dict) -> dict:
    """``override`` laid over ``base`` key by key: mappings merge, everything else replaces."""
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out


def _read(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = p.read_text()
        if p.suffix.lower() == ".json":
            data = json.loads(text) or {}
        else:
            import yaml

            data = yaml.safe_load(text) or {}
    except Exception as e:  # noqa: BLE001 - report any parse error the same way
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"cannot parse config file {path}: {first}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def load_config(path: Optional[str] = None, profile: Optional[str] = None, overrides: Optional[dict] = None) -> Config:
    """Profile defaults, then the file at ``path`` (YAML or JSON), then ``overrides``."""
    data = _read(path) if path else {}
    name = profile or data.get("profile") or "offline"
    if not isinstance(name, str) or name not in PROFILES:
        raise ConfigError(f"unknown profile '{name}' (known: {', '.join(PROFILES)})")
    merged = merge(Config().model_dump(), PROFILES[name])
    for layer in ({k: v for k, v in data.items() if k != "profile"}, overrides or {}):
        if not isinstance(layer, dict):
            raise ConfigError(f"config: expected a mapping of settings, got {type(layer).__name__}")
        merged = merge(merged, layer)
    merged["profile"] = name
    try:
        cfg = Config.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(describe(e)) from None
    from .registry import (
        check_config,  # the backends' own checks (names, required settings)
    )

    check_config(cfg)
    return cfg


# ------------------------------------------------------------------------------ messages
_SECRET_PATHS = ("input.storage_options",)


def _known_keys(loc: tuple) -> list:
    """The setting names allowed where ``loc`` points (for 'unknown setting' messages)."""
    model: Any = Config
    for part in loc:
        if isinstance(model, type) and issubclass(model, BaseModel):
            field = model.model_fields.get(part)
            if field is None:
                return []
            ann = field.annotation
            model = ann
            if getattr(ann, "__origin__", None) in (dict, Dict):
                model = "curves"
        elif model == "curves":
            model = Curve
        else:
            return []
    if model == "curves":
        return list(CURVE_NAMES)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def describe(e: ValidationError) -> str:
    """A pydantic error as one line per mistake (joined by '; '): key, value, what is allowed."""
    lines, seen = [], set()
    for err in e.errors(include_url=False):
        # a Number (int | float) reports once per member: one line per place is enough
        loc = tuple(str(p) for p in err["loc"] if p not in ("int", "float"))
        if loc in seen:
            continue
        seen.add(loc)
        where = ".".join(loc) or "config"
        if err["type"] in ("int_parsing", "float_parsing", "int_type", "float_type") and len(loc) < len(err["loc"]):
            lines.append(f"{where}: must be a number (got {err.get('input')!r})")
            continue
        if err["type"] == "extra_forbidden":
            known = _known_keys(loc[:-1])
            lines.append(f"unknown setting '{where}'" + (f" (known: {', '.join(sorted(known))})" if known else ""))
            continue
        msg = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        shown = "" if where.startswith(_SECRET_PATHS) or isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"{where}: {msg[0].lower() + msg[1:] if msg else msg}{shown}")
    return "; ".join(lines)
