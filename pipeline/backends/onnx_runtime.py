"""One ONNX Runtime session per actor (or worker process): CUDA when a GPU is there and the
stage asked for one, CPU otherwise, with intra-op threads bounded by the stage's CPUs."""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..errors import ModelError, require


def graph_normalises_input(path: str, landmark: bool = False) -> bool:
    """insightface's test for models converted from MXNet that normalise inside the graph: a
    ``Sub``/``_minus`` and a ``Mul``/``_mul`` node among the first 8 nodes (landmark models also:
    a ``bn_data`` node among the first 3).  Such models take raw 0..255 pixels (mean 0, std 1)."""
    onnx = require("onnx", "prod", "reading an ONNX graph")
    try:
        model = onnx.load(path, load_external_data=False)
    except TypeError:  # very old onnx
        model = onnx.load(path)
    find_sub = find_mul = False
    for nid, node in enumerate(model.graph.node[:8]):
        if node.name.startswith("Sub") or node.name.startswith("_minus"):
            find_sub = True
        if node.name.startswith("Mul") or node.name.startswith("_mul"):
            find_mul = True
        if landmark and nid < 3 and node.name == "bn_data":
            find_sub = find_mul = True
    return find_sub and find_mul


def make_session(path, num_cpus: float = 1.0, use_gpu: bool = False, what: str = "model"):
    """An ONNX Runtime session of a model file (or its bytes); a file ONNX Runtime cannot load (not
    ONNX, truncated, unsupported operators) is one ModelError naming ``what``."""
    ort = require("onnxruntime", "prod", "ONNX models")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(math.ceil(num_cpus)))
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CPUExecutionProvider"]
    if use_gpu and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(path, opts, providers=providers)
    except Exception as e:  # noqa: BLE001 - not an ONNX file, truncated, unsupported ops...
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelError(f"{what}: ONNX Runtime cannot load it: {type(e).__name__}: {first}") from None


def fixed_batch(session) -> int | None:
    """The model's batch size if its first input fixes one, else None (dynamic)."""
    dim = session.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) and dim > 0 else None


def chunks(n: int, fixed: int | None, max_batch: int):
    """(start, stop) of each model call over n inputs: a fixed batch dimension's size, or up to
    ``max_batch`` when the model takes any batch size."""
    step = fixed or max(1, int(max_batch))
    for i in range(0, n, step):
        yield i, min(n, i + step)


def pad_to(x: np.ndarray, fixed: int | None) -> np.ndarray:
    """A chunk padded to a fixed batch size by repeating its last element."""
    if fixed and len(x) < fixed:
        return np.concatenate([x, np.repeat(x[-1:], fixed - len(x), axis=0)])
    return x


def run_batched(session, x: np.ndarray, max_batch: int = 64) -> list:
    """Run a single-input model over x in chunks that respect a fixed batch dimension."""
    name = session.get_inputs()[0].name
    fb = fixed_batch(session)
    outs = [[np.asarray(r)[: j - i] for r in session.run(None, {name: pad_to(x[i:j], fb)})]
            for i, j in chunks(len(x), fb, max_batch)]
    return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]


# numpy types of ONNX tensor element types (model inputs fed by faceqc)
TENSOR_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
                 "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


def image_batch(crops, size: int, colour: str = "RGB", in_range=(0.0, 1.0), dtype=np.float32) -> tuple:
    """uint8 RGB crops -> (the crops at ``size`` x ``size`` as float RGB 0..255 (N, size, size, 3),
    the model input (N, 3, size, size) in ``colour`` order with pixel 0 at ``in_range[0]`` and 255
    at ``in_range[1]``, as ``dtype``).  Larger crops are area-averaged down, smaller ones cubic."""
    s = int(size)
    x = np.stack([c if c.shape[0] == s and c.shape[1] == s else
                  cv2.resize(c, (s, s), interpolation=cv2.INTER_AREA if c.shape[0] > s else cv2.INTER_CUBIC)
                  for c in crops]).astype(np.float32)
    t = x[..., ::-1] if colour == "BGR" else x
    lo, hi = (float(v) for v in in_range)
    t = t.transpose(0, 3, 1, 2) * np.float32((hi - lo) / 255.0) + np.float32(lo)
    return x, np.ascontiguousarray(t, dtype=dtype)
