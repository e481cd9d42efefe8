"""Face-quality models in ONNX with a declared input contract.

A contract says what the model eats and what its output means:
``size`` (square input side), ``colour`` ("RGB" or "BGR"), ``scale`` (multiplier on 0..255
pixels), ``mean`` / ``std`` (per channel, after scaling), and how the raw output maps to 0–100:
``output: ofiq_sigmoid`` (OFIQ's 100 / (1 + exp((x0 − x) / w)), e.g. MagFace magnitude with
x0 = 23, w = 2.6) or ``output: linear`` (0 at ``lo``, 100 at ``hi``, clipped).  A model whose
output is a vector is scored by its L2 norm.  ``graph_may_normalise: true`` applies insightface's
rule for recognition models converted from MXNet: when the graph starts by subtracting and
multiplying itself, it is fed raw 0..255 pixels (mean 0, std 1) instead of ``mean`` / ``std``.
Inputs are the 112x112 ArcFace-aligned crops the detect stage makes.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import ConfigError, ModelError
from ..models import CATALOGUE, named
from ..registry import register
from ..schema import FIQA_KEYS
from .onnx_runtime import graph_normalises_input, make_session, run_batched

REQUIRED = ("size", "colour", "scale", "mean", "std", "output")


def check_contract(contract: dict, name: str) -> dict:
    missing = [k for k in REQUIRED if k not in contract]
    if missing:
        raise ModelError(f"FIQA model {name}: contract lacks {', '.join(missing)}")
    if contract["colour"] not in ("RGB", "BGR"):
        raise ModelError(f"FIQA model {name}: colour must be RGB or BGR")
    if contract["output"] == "ofiq_sigmoid" and not {"x0", "w"} <= contract.keys():
        raise ModelError(f"FIQA model {name}: output ofiq_sigmoid needs x0 and w")
    if contract["output"] == "linear" and not {"lo", "hi"} <= contract.keys():
        raise ModelError(f"FIQA model {name}: output linear needs lo and hi")
    if contract["output"] not in ("ofiq_sigmoid", "linear"):
        raise ModelError(f"FIQA model {name}: output must be ofiq_sigmoid or linear")
    return contract


def check_input(contract: dict, name: str, what: str = "FIQA model") -> dict:
    """The input half of a contract (size, colour, scale, mean, std), checked."""
    missing = [k for k in REQUIRED[:-1] if k not in contract]
    if missing:
        raise ModelError(f"{what} {name}: contract lacks {', '.join(missing)}")
    if contract["colour"] not in ("RGB", "BGR"):
        raise ModelError(f"{what} {name}: colour must be RGB or BGR")
    return contract


def check_image_input(session, size: int, name: str, what: str = "FIQA model",
                      setting: str = "the contract's size") -> None:
    """The model's first input takes (N, 3, size, size) images: a clear error naming the model and
    the ``setting`` that holds the size otherwise (a dynamic dimension accepts anything)."""
    shape = session.get_inputs()[0].shape
    fixed = [d if isinstance(d, int) and d > 0 else None for d in shape]
    want = [None, 3, size, size]
    if len(shape) != 4 or any(f is not None and f != w for f, w in zip(fixed[1:], want[1:])):
        got = "x".join(str(d) if isinstance(d, int) else "?" for d in shape)
        raise ModelError(f"{what} {name}: its input '{session.get_inputs()[0].name}' has shape {got}, but "
                         f"its contract needs (N, 3, {size}, {size}) images; set {setting} (or use "
                         f"the model it was made for)")


class Preprocess:
    """uint8 RGB crops -> the model's NCHW float input, as a contract says (graph_may_normalise:
    insightface's rule, see the module docstring)."""

    def __init__(self, contract: dict, path: str):
        self.c = contract
        mean, std = contract["mean"], contract["std"]
        self.normalises_itself = bool(contract.get("graph_may_normalise")) and graph_normalises_input(path)
        if self.normalises_itself:
            mean, std = [0.0] * 3, [1.0] * 3
        self.mean = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(1, 3, 1, 1)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        s = int(self.c["size"])
        x = np.stack([c if c.shape[0] == s else cv2.resize(c, (s, s), interpolation=cv2.INTER_AREA) for c in crops])
        if self.c["colour"] == "BGR":
            x = x[..., ::-1]
        x = x.astype(np.float32).transpose(0, 3, 1, 2) * np.float32(self.c["scale"])
        return np.ascontiguousarray((x - self.mean) / self.std)


def map_output(raw: np.ndarray, c: dict) -> np.ndarray:
    raw = np.asarray(raw, np.float64)
    if c["output"] == "ofiq_sigmoid":
        return 100.0 / (1.0 + np.exp((c["x0"] - raw) / c["w"]))
    return np.clip((raw - c["lo"]) / (c["hi"] - c["lo"]), 0.0, 1.0) * 100.0


class OnnxFIQA:
    def __init__(self, path: str, contract: dict, name: str = "model", num_cpus: float = 1.0, use_gpu: bool = False):
        self.c = check_contract(dict(contract), name)
        self.session = make_session(path, num_cpus, use_gpu, what=f"face-quality model {name}")
        check_image_input(self.session, int(self.c["size"]), name)
        self.preprocess = Preprocess(self.c, path)
        self.normalises_itself = self.preprocess.normalises_itself

    def score(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(raw model output, mapped 0–100) per crop."""
        if len(crops) == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        out = run_batched(self.session, self.preprocess(np.asarray(crops)))[0]
        raw = np.asarray(out, np.float64).reshape(len(crops), -1)
        raw = raw[:, 0] if raw.shape[1] == 1 else np.linalg.norm(raw, axis=1)  # vector -> its norm
        return raw.astype(np.float32), map_output(raw, self.c).astype(np.float32)


# --------------------------------------------------------------------------------------------
# the fiqa backend


def _check(cfg) -> None:
    f = cfg.fiqa
    if not f.model:
        raise ConfigError("fiqa.backend 'onnx' needs fiqa.model: a registry name, local path or URI")
    if f.contract_from and f.contract_from not in CATALOGUE:
        raise ConfigError(f"fiqa.contract_from: unknown model '{f.contract_from}' (known: {', '.join(CATALOGUE)})")


@register("fiqa", "onnx", models=lambda cfg: [named(cfg.fiqa.model, "fiqa")], check=_check,
          needs=(("onnxruntime", "prod"),))
class OnnxModel:
    """any ONNX face-quality model with a declared input contract"""

    def __init__(self, cfg):
        from ..modelstore import resolve

        f = cfg.fiqa
        info = CATALOGUE.get(f.contract_from or f.model)
        contract = {**(info.contract if info else {}), **f.contract}
        path = resolve(f.model, f.sha256, cfg.input.storage_options)
        self.model = OnnxFIQA(path, contract, f.model, f.resources.num_cpus, f.resources.num_gpus > 0)

    def score(self, crops: np.ndarray) -> np.ndarray:
        out = np.full((len(crops), len(FIQA_KEYS)), np.nan, np.float32)
        if len(crops):
            raw, mapped = self.model.score(crops)
            out[:, 1], out[:, 2] = raw, mapped
        return out


# --------------------------------------------------------------------------------------------
# SDD-FIQA beside the primary method: the registry's "sdd-fiqa" contract on the exported model


def side_by_side_check(name: str):
    """A method that runs beside fiqa.backend is not itself a primary method."""

    def check(cfg) -> None:
        if cfg.fiqa.backend == name:
            raise ConfigError(f"fiqa.backend: '{name}' runs beside the primary method: set fiqa.{name}.model "
                              f"instead (fiqa.backend is dlib_stability, onnx or none)")

    return check


@register("fiqa", "sdd_fiqa", models=lambda cfg: [CATALOGUE["sdd-fiqa"], named(cfg.fiqa.sdd_fiqa.model, "fiqa")],
          check=side_by_side_check("sdd_fiqa"), needs=(("onnxruntime", "prod"),))
class SDDFIQA:
    """SDD-FIQA's regression network (ONNX export of the authors' weights), beside the primary method"""

    def __init__(self, cfg):
        from ..modelstore import resolve

        s, r = cfg.fiqa.sdd_fiqa, cfg.fiqa.resources
        path = resolve(s.model, s.sha256, cfg.input.storage_options)
        self.model = OnnxFIQA(path, CATALOGUE["sdd-fiqa"].contract, s.model, r.num_cpus, r.num_gpus > 0)

    def score(self, crops: np.ndarray) -> np.ndarray:
        out = np.full((len(crops), len(FIQA_KEYS)), np.nan, np.float32)
        if len(crops):
            raw, mapped = self.model.score(crops)
            out[:, FIQA_KEYS.index("sdd_raw")], out[:, FIQA_KEYS.index("sdd_score")] = raw, mapped
        return out
