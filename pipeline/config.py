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
from typing import Annotated, Any, Dict, Literal, Optional, Tuple, Union

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
    # dense landmarks for true head pose and eye / mouth openness, where the detector gives only 5
    # points: dlib68 (dlib's 68-point model: its training data, iBUG 300-W, is non-commercial) |
    # none (the commercially clean profile: pose from the 5 points, pitch not judged)
    dense_landmarks: str = "dlib68"
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


_SHA256 = r"^([0-9a-fA-F]{64})?$"


class SERFIQConfig(_Section):
    """SER-FIQ (Terhörst et al., CVPR 2020) on an ArcFace-like ONNX recognition model: the graph is
    split at the input of its final fully connected layer; the backbone runs once per face, the
    head ``passes`` times with dropout masks on its input (the same ``passes`` masks, drawn from
    ``seed``, for every face).  Off while ``model`` is empty."""

    model: str = ""  # registry name, local path or URI of the recognition model (.onnx)
    sha256: str = Field("", pattern=_SHA256)
    passes: int = Field(100, ge=2, le=10_000)  # m, the stochastic forward passes (paper: 100)
    dropout: float = Field(0.5, gt=0, lt=1)  # dropout rate on the head's input (paper: 0.5)
    seed: int = Field(0, ge=0)  # the dropout masks' seed: same seed, same scores
    # input contract of the recognition model (size, colour, scale, mean, std), over the registry's
    # "serfiq" entry: insightface's ArcFace convention (RGB, (x - 127.5) / 127.5, 112 px)
    contract: Dict[str, Any] = Field(default_factory=dict)


class SDDFIQAConfig(_Section):
    """SDD-FIQA (Ou et al., CVPR 2021), the authors' released regression network exported to ONNX,
    with the registry's "sdd-fiqa" input contract.  Off while ``model`` is empty."""

    model: str = ""  # local path or URI of the exported .onnx (see README for the export)
    sha256: str = Field("", pattern=_SHA256)


class RestorationConfig(_Section):
    """Restoration consistency (FaceQgen's idea): how much a face-restoration model changes the
    primary face's FFHQ-aligned crop (``face_crop_target``).  Off while ``model`` is empty."""

    model: str = ""  # local path or URI of a face-restoration .onnx (GFPGAN, CodeFormer, GPEN...)
    sha256: str = Field("", pattern=_SHA256)
    size: int = Field(512, ge=16, le=2048)  # the model's input side (the crop is resized to it)
    colour: Literal["RGB", "BGR"] = "RGB"  # channel order the model eats and returns
    # the model input's values for pixel 0 and pixel 255 (GFPGAN, CodeFormer, GPEN: [-1, 1])
    range: Tuple[Number, Number] = (-1.0, 1.0)
    output_range: Tuple[Number, ...] = ()  # the output's values for black and white; empty: as range
    # further model inputs fed as constants, e.g. {weight: 0.5} for CodeFormer's fidelity weight
    extra_inputs: Dict[str, float] = Field(default_factory=dict)
    # how much the restoration differs from the crop (see README): gmsd (gradient magnitude
    # similarity deviation, 0 = unchanged) or ssim (1 = unchanged)
    metric: Literal["gmsd", "ssim"] = "gmsd"
    # [metric value scored 0, metric value scored 100], linear between, clipped; empty: the metric's
    # default (gmsd: [0.2, 0.0], ssim: [0.8, 1.0]; how they were chosen: README)
    score_range: Tuple[Number, ...] = ()

    @field_validator("range", "output_range", "score_range")
    @classmethod
    def _pair(cls, v):
        if v and (len(v) != 2 or v[0] == v[1]):
            raise ValueError("must be empty or a pair of two different numbers")
        return v


class OcclusionConfig(_Section):
    """Face occlusion from a segmentation model (OFIQ's FaceOcclusionPrevention network, or a
    face parser): the share of the face, the eyes and the mouth something covers, on the primary
    face's FFHQ-aligned crop (``face_crop_target``).  Off while ``model`` is empty."""

    model: str = ""  # local path or URI of a face-occlusion / face-parsing segmentation .onnx
    sha256: str = Field("", pattern=_SHA256)
    size: int = Field(224, ge=16, le=2048)  # the model's input side
    colour: Literal["RGB", "BGR"] = "RGB"  # channel order the model eats
    range: Tuple[Number, Number] = (0.0, 1.0)  # the model input's values for pixel 0 and pixel 255
    # the central share of the FFHQ crop fed to the model (1.0: all of it), to match its training framing
    crop: float = Field(1.0, gt=0.1, le=1.0)
    # face_logit: (N, 1, H, W) or (N, H, W), visible face where >= threshold (OFIQ's network: logits,
    # threshold 0); classes: (N, C, H, W), visible face where the best class is in face_classes
    output: Literal["face_logit", "classes"] = "face_logit"
    threshold: float = 0.0
    face_classes: Tuple[Annotated[int, Field(ge=0)], ...] = ()
    output_index: int = -1  # which output to read (OFIQ reads the last)

    @field_validator("range")
    @classmethod
    def _pair(cls, v):
        if len(v) != 2 or v[0] == v[1]:
            raise ValueError("must be a pair of two different numbers")
        return v

    @model_validator(mode="after")
    def _classes_named(self):
        if self.output == "classes" and not self.face_classes:
            raise ValueError("output 'classes' needs face_classes: the class indices that are visible face")
        return self


class FIQAConfig(_Section):
    # the primary method (components recognisability / fiqa_model): dlib_stability | onnx | none
    backend: str = "dlib_stability"
    model: str = ""  # onnx: registry name, local path or URI (s3://, gs://, https://)
    sha256: str = Field("", pattern=r"^([0-9a-fA-F]{64})?$")  # verified before loading
    contract: Dict[str, Any] = Field(default_factory=dict)  # onnx input contract, overrides the registry's
    contract_from: str = ""  # take the contract of this registry model (e.g. arcface-embedding-norm)
    all_faces: bool = False  # score every face, not only the primary one (slow on CPU)
    # methods that run beside the primary one, each its own component; each is off while its
    # model is empty
    serfiq: SERFIQConfig = Field(default_factory=SERFIQConfig)
    sdd_fiqa: SDDFIQAConfig = Field(default_factory=SDDFIQAConfig)
    restoration: RestorationConfig = Field(default_factory=RestorationConfig)
    occlusion: OcclusionConfig = Field(default_factory=OcclusionConfig)
    resources: Resources = _resources(num_cpus=1.0, batch_size=16)


# the face-quality methods that run beside fiqa.backend, each when its model is set: backend names
FIQA_METHODS = ("serfiq", "sdd_fiqa", "restoration", "occlusion")


class Curve(_Section):
    """Flat-topped penalty on one raw measure (see :func:`pipeline.fusion.curve_penalty`).

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
        # resolution: inter-eye distance in source pixels, as if facing the camera (over cos yaw)
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
        # --- the primary face as a reviewer sees it (pipeline/regions.py, pipeline/measures.py)
        # detail: blur sigma (px) of the face's strongest edges at the resolution it is used at
        # (detect.target_size; a smaller face at its own): defocus, motion, upscaling, codecs
        "detail": Curve(direction="high", start=2.0, full=6.0, weight=2.3, reason="blurry"),
        # pixelation: blocks on a grid of any period in un-resampled pixels (1.0 = none)
        "pixelation": Curve(direction="high", start=2.5, full=8.0, weight=2.3, reason="pixelated"),
        # banding: share of empty levels in the face's histogram (posterisation)
        "banding": Curve(direction="high", start=0.25, full=0.85, weight=2.3, reason="banding"),
        # interlacing: vertical over horizontal Nyquist energy (1.0 = none)
        "interlacing": Curve(direction="high", start=1.8, full=5.0, weight=2.3, reason="interlaced"),
        # colour noise: band-pass chroma of the skin (a*b* units)
        "colour_noise": Curve(direction="high", start=4.0, full=9.0, weight=2.3, reason="colour_noise"),
        # haze: the face's black level (0..1; veiling glare, fog, a washed-out photo)
        "haze": Curve(direction="high", start=0.45, full=0.7, weight=2.3, reason="hazy"),
        # framing: share of the face's FFHQ crop outside the image (cut by the frame)
        "framing": Curve(direction="high", start=0.05, full=0.35, weight=2.3, reason="cut_off"),
        # eyes visible: lightness spread inside the less visible eye over the skin's lightness
        "eyes_visible": Curve(direction="low", start=0.25, full=0.06, weight=2.3, reason="eyes_hidden"),
        # glare: share of the eyes near white (L* >= 90: specular glare, blown-out highlights)
        "glare": Curve(direction="high", start=0.04, full=0.3, weight=2.3, reason="glare"),
        # lower face: share of it that is not skin (mask, microphone, object)
        "lower_face": Curve(direction="high", start=0.15, full=0.6, weight=2.3, reason="lower_face_covered"),
        # mouth visible: horizontal over vertical edges of the lips region (1-3 on visible mouths,
        # towards 0 behind a hand or an object of the skin's own colour, which lower_face passes)
        "mouth_visible": Curve(direction="low", start=0.45, full=0.1, weight=2.3, reason="lower_face_covered"),
        # colour: a*b* distance of the skin's colour from the region of natural skin colours
        "colour": Curve(direction="high", start=1.0, full=15.0, weight=2.3, reason="unnatural_colour"),
        # vignetting: the frame's darkening towards its edges, the median radial slope of log
        # luminance per half-diagonal (pipeline.measures.vignetting; untouched photos -4.5 to 1.7):
        # a one-stop fall to the corners, which lenses give and reviewers pass, adds ~1; two stops
        # ~2; black corners 4 to 12 (README "Validity")
        "vignetting": Curve(direction="high", start=2.0, full=8.0, weight=2.3, reason="vignetting"),
        # illumination: lightness difference of the face's halves over their mean
        "illumination": Curve(direction="high", start=0.3, full=0.65, weight=2.3, reason="uneven_light"),
        # eyes open: eye aspect ratio from dense landmarks, pose-corrected: the mean of both eyes
        # on a face turned less than 20 degrees, else the eye nearer the camera
        # (~0.25-0.35 open, ~0.17 in a broad smile, < 0.1 closed)
        "eyes_open": Curve(direction="low", start=0.14, full=0.06, weight=2.3, reason="eyes_closed"),
        # mouth open: inner-lip gap over mouth width (0 closed): reported, judged only where a team
        # wants neutral frames (give it a weight); talking heads speak
        "mouth_open": Curve(direction="high", start=0.15, full=0.5, weight=0.0, reason="mouth_open"),
        # hard pose limits (degrees), on top of OFIQ's cos² mapping (fuse.pose_weights)
        "yaw_limit": Curve(direction="high", start=30.0, full=60.0, weight=2.3, reason="pose_yaw"),
        "pitch_limit": Curve(direction="high", start=20.0, full=45.0, weight=2.3, reason="pose_pitch"),
        "roll_limit": Curve(direction="high", start=30.0, full=60.0, weight=2.3, reason="pose_roll"),
        # SER-FIQ (fiqa.serfiq): 2·sigmoid(-mean embedding distance), 1 = perfectly stable.  On
        # ArcFace the authors rescale it by sigmoid(130 (q - 0.88)) (their reference code): the
        # curve starts where that rescaling gives 0.93 (q = 0.90) and is full where it gives
        # 0.07 (q = 0.86).  Another recognition model spreads q differently: calibrate.
        "serfiq": Curve(direction="low", start=0.90, full=0.86, weight=1.5, reason="low_serfiq"),
        # SDD-FIQA (fiqa.sdd_fiqa): the model regresses pseudo-labels min-max normalised to 0-100
        # over its training set (MS1M), so 0 and 100 are that set's extremes and most faces lie
        # between: no penalty above 40, full at 10 (a starting point, not fitted: calibrate)
        "sdd_fiqa": Curve(direction="low", start=40.0, full=10.0, weight=1.5, reason="low_sdd_fiqa"),
        # restoration consistency (fiqa.restoration): similarity of the face and its restoration
        # mapped to 0-100 by fiqa.restoration.score_range; as fiqa_model / iqa_model
        "restoration": Curve(direction="low", start=50.0, full=10.0, weight=1.5,
                             reason="low_restoration_consistency"),
        # face occlusion (fiqa.occlusion): the largest covered share of the face, the eyes and the
        # mouth by the segmentation model; a segmenter errs by a few percent along the face's edge,
        # so up to a tenth passes, and half of a part covered is full (a starting point: calibrate)
        "occlusion": Curve(direction="high", start=0.10, full=0.50, weight=2.3, reason="occluded"),
    }


CURVE_NAMES = tuple(_default_curves())


class PoseWeights(_Section):
    """Exponents on OFIQ's head-pose mapping 100·max(0, cos θ)² (0 = not judged).  Pitch from 5
    landmarks is too weak to judge by (see geometry.head_pose_dlib5): the commercially clean
    profile, which has no dense landmarks, gives it 0."""

    yaw: Number = Field(1.0, ge=0)
    pitch: Number = Field(1.0, ge=0)
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


def _default_clip_rules() -> Dict[str, Curve]:
    # raw measures of a clip's primary track (pipeline/video/tracks.py); each maps to a penalty as
    # the fusion curves do, and the clip's quality is the track's mean quality times them all
    return {
        # share of the clip's sampled frames the primary track covers
        "coverage": Curve(direction="low", start=0.8, full=0.3, weight=2.3, reason="low_coverage"),
        # the primary track's lowest frame quality (0-100)
        "quality_min": Curve(direction="low", start=35.0, full=5.0, weight=1.2, reason="low_min_quality"),
        # share of sampled frames with a second face at least fuse.multiple_faces_ratio as large
        "multiple_faces": Curve(direction="high", start=0.1, full=0.5, weight=2.3, reason="multiple_faces"),
        # yaw / pitch range (max - min, degrees) over the primary track
        "yaw_range": Curve(direction="high", start=40.0, full=90.0, weight=2.3, reason="pose_range"),
        "pitch_range": Curve(direction="high", start=30.0, full=60.0, weight=0.0, reason="pose_range"),
        # head motion: 90th percentile of the face's landmark motion between sampled frames, in
        # inter-eye distances per second
        "head_motion": Curve(direction="high", start=1.5, full=6.0, weight=2.3, reason="unstable_head"),
        # identity change: cosine distance between the primary track's mean face embedding and
        # that of another track covering at least video.identity_min_share of the clip (only where
        # the profile computes embeddings: the offline profile's dlib embedding)
        "identity_change": Curve(direction="high", start=0.03, full=0.07, weight=2.3, reason="identity_change"),
    }


CLIP_RULE_NAMES = tuple(_default_clip_rules())


class VideoConfig(_Section):
    """Video clips (mp4, mov, mkv, webm, avi; recognised by content): sampling, shots, tracks and
    the clip's verdict (see pipeline/video/)."""

    fps: float = Field(2.0, gt=0, le=120)  # frames sampled per second of video
    # at most this many frames per clip: a longer clip is sampled more sparsely, evenly
    max_frames: int = Field(600, ge=1)
    # a shot cut: the mean absolute change of a 64x36 grey thumbnail between two decoded frames
    # (0..1) above this, and at least shot_ratio times the median change of the frames before
    shot_threshold: float = Field(0.12, gt=0, le=1)
    shot_ratio: float = Field(3.0, ge=1)
    # guards: larger or longer clips get the status too_large before any frame is decoded
    max_pixels: int = Field(36_000_000, ge=1)
    max_duration_s: float = Field(4 * 3600.0, gt=0)
    # tracking: a face joins a track when its box overlaps the track's last box by this IoU, or
    # its landmarks moved by at most max_motion inter-eye distances; never across a shot cut,
    # never over more than max_gap sampled frames without the face
    track_iou: float = Field(0.3, ge=0, le=1)
    track_max_motion: float = Field(3.0, gt=0)
    track_max_gap: int = Field(2, ge=1)
    # where embeddings exist, two faces whose cosine similarity is below this are never linked
    track_min_similarity: float = Field(0.85, ge=-1, le=1)
    identity_min_share: float = Field(0.15, gt=0, le=1)  # tracks this long count for identity_change
    rules: Dict[str, Curve] = Field(default_factory=_default_clip_rules)

    @field_validator("rules", mode="before")
    @classmethod
    def _known_rules(cls, v):
        if not isinstance(v, dict):
            return v
        unknown = sorted(set(v) - set(CLIP_RULE_NAMES))
        if unknown:
            raise ValueError(f"unknown clip rule '{unknown[0]}' (known: {', '.join(CLIP_RULE_NAMES)})")
        return v


class ExportConfig(_Section):
    """`faceqc export --faces`: FFHQ-aligned face crops (pipeline/tools/export.py)."""

    size: int = Field(512, ge=16, le=4096)  # crop side in pixels
    margin: float = Field(1.0, ge=0.5, le=4.0)  # >1 shows more around FFHQ's framing
    format: Literal["png", "jpg"] = "png"
    jpeg_quality: int = Field(95, ge=1, le=100)


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
    video: VideoConfig = Field(default_factory=VideoConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
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
        out = [("decode", self.decode.backend, "decode.backend"), ("detect", self.detect.detector, "detect.detector")]
        if self.detect.dense_landmarks != "none" and self.detect.detector != "scrfd":
            out.append(("landmarks", self.detect.dense_landmarks, "detect.dense_landmarks"))
        out.append(("iqa", self.iqa.backend, "iqa.backend"))
        if self.iqa.model_backend != "none":
            out.append(("iqa", self.iqa.model_backend, "iqa.model_backend"))
        if self.fiqa.backend != "none":
            out.append(("fiqa", self.fiqa.backend, "fiqa.backend"))
        for name in FIQA_METHODS:
            if getattr(self.fiqa, name).model:
                out.append(("fiqa", name, f"fiqa.{name}.model"))
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
    # as offline, commercially clean: no 68-point model (its training data, iBUG 300-W, excludes
    # commercial use); pose from dlib's 5 points, pitch and eye / mouth openness not judged
    "offline-clean": {"detect": {"dense_landmarks": "none"},
                      "fuse": {"pose_weights": {"pitch": 0.0}, "curves": {"pitch_limit": {"weight": 0.0}}}},
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
