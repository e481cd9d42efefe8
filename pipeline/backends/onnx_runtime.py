"""One ONNX Runtime session per actor (or worker process): CUDA when a GPU is there and the
stage asked for one, CPU otherwise, with intra-op threads bounded by the stage's CPUs."""

from __future__ import annotations

import math

from . import require


def graph_normalises_input(path: str, landmark: bool = False) -> bool:
    """insightface's test for models converted from MXNet that normalise inside the graph: a
    ``Sub``/``_minus`` and a ``Mul``/``_mul`` node among the first 8 nodes (landmark models also:
    a ``bn_data`` node among the first 3).  Such models take raw 0..255 pixels (mean 0, std 1)."""
    onnx = require("onnx", "onnx", "insightface model packs (reading the graph's first nodes)")
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


def make_session(path: str, num_cpus: float = 1.0, use_gpu: bool = False):
    ort = require("onnxruntime", "onnxruntime", "ONNX models")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(math.ceil(num_cpus)))
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CPUExecutionProvider"]
    if use_gpu and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(path, opts, providers=providers)


def fixed_batch(session) -> int | None:
    """The model's batch size if its first input fixes one, else None (dynamic)."""
    dim = session.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) and dim > 0 else None


def run_batched(session, x, max_batch: int = 64):
    """Run a single-input model over x in chunks that respect a fixed batch dimension."""
    import numpy as np

    name = session.get_inputs()[0].name
    fb = fixed_batch(session)
    step = fb or max_batch
    outs = []
    for i in range(0, len(x), step):
        chunk = x[i:i + step]
        if fb and len(chunk) < fb:  # pad a fixed-batch model's last chunk
            pad = np.repeat(chunk[-1:], fb - len(chunk), axis=0)
            res = session.run(None, {name: np.concatenate([chunk, pad])})
            res = [r[: len(chunk)] for r in res]
        else:
            res = session.run(None, {name: chunk})
        outs.append(res)
    return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]
