"""SER-FIQ (Terhörst, Kolf, Damer, Kirchbuchner, Kuijper, CVPR 2020) on any ArcFace-like ONNX
recognition model.

A face is good when the embedding of a recognition network stays put while random parts of the
network are switched off.  The method needs no training: the recognition model's graph is split at
the input of its final fully connected layer (where insightface's networks have their dropout
layer, trained at p = 0.4 in its MXNet-era models, and where the authors apply it), the backbone
runs once per face, and the head runs ``m`` times with dropout masks on its input.  With
``x_1..x_m`` the L2-normalised embeddings, the quality is the paper's

    q = 2 · sigmoid(−(2 / m²) · Σ_{i<j} ‖x_i − x_j‖)

(1 = perfectly stable).  The authors' reference code uses the mean over the m(m−1)/2 pairs, i.e.
the same with (m−1)/m in the exponent (1% at m = 100).

The head must be affine: a ``Gemm`` (or a ``MatMul`` with a constant weight) followed only by
``BatchNormalization``, constant ``Add``/``Sub``/``Mul``/``Div``, ``Flatten``/``Reshape``,
``Dropout``/``Identity`` and, last, an ``LpNormalization`` (skipped: SER-FIQ normalises anyway) —
insightface's w600k_r50 / glintr100 (Flatten → Gemm → BatchNormalization), MXNet conversions
(Gemm → BatchNormalization) and MagFace-style heads are.  It is folded into one weight matrix and
bias, so the m passes of a face are one matrix product ``(m, D) @ (D, E)``.  Every face sees the
same m masks (drawn once from ``fiqa.serfiq.seed``), so a face's score depends on nothing but the
face and the settings — not on the batch it came in.  Dropout is inverted (kept units scaled by
1/(1−p)), as in the authors' code.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from ..errors import ConfigError, ModelError, errors_as, require
from ..models import CATALOGUE, named
from ..registry import register
from ..schema import FIQA_KEYS
from .fiqa_onnx import Preprocess, check_image_input, check_input, side_by_side_check
from .onnx_runtime import make_session, run_batched

# ops allowed between the fully connected layer and the embedding output
_AFFINE = {"BatchNormalization", "Add", "Sub", "Mul", "Div", "Identity", "Dropout", "Flatten", "Reshape"}
_PASS_THROUGH = {"Identity", "Dropout", "Flatten", "Reshape"}
_MASK_CHUNK = 1 << 24  # floats of masked head inputs materialised at once (64 MB)


def _constants(graph) -> Dict[str, np.ndarray]:
    from onnx import numpy_helper

    out = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:  # in topological order: constants through Identity (torch's exporter
        if node.op_type == "Constant":  # shares one initializer among tensors that way)
            for a in node.attribute:
                if a.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(a.t)
        elif node.op_type == "Identity" and node.input[0] in out:
            out[node.output[0]] = out[node.input[0]]
    return out


def _attr(node, name: str, default):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def split_head(model, name: str) -> Tuple[str, np.ndarray, np.ndarray]:
    """(the head's input tensor, W (D, E), b (E,)) such that the graph's first output equals
    ``input @ W + b`` up to a final L2 normalisation; ModelError naming the model when the graph
    has no such head."""
    g = model.graph
    consts = _constants(g)
    producer = {o: n for n in g.node for o in n.output}
    out_name = g.output[0].name
    hint = ("SER-FIQ needs a recognition model whose embedding comes from a fully connected layer (Gemm, or "
            "MatMul with a constant weight) followed only by BatchNormalization, constant Add/Sub/Mul/Div, "
            "Flatten/Reshape, Dropout/Identity or a final LpNormalization (insightface's w600k_r50 / glintr100 "
            "layout)")

    def fail(why: str):
        raise ModelError(f"SER-FIQ model {name}: no recognisable embedding head: {why}; {hint}")

    tail: List = []  # nodes after the FC layer, output first
    t = out_name
    while True:
        node = producer.get(t)
        if node is None:
            fail(f"the output '{out_name}' is not computed from a fully connected layer")
        if node.op_type == "Gemm" or (node.op_type == "MatMul" and node.input[1] in consts
                                       and consts[node.input[1]].ndim == 2):
            fc = node
            break
        if node.op_type == "LpNormalization" and not tail and int(_attr(node, "p", 2)) == 2:
            t = node.input[0]
            continue
        if node.op_type not in _AFFINE:
            fail(f"the output '{out_name}' comes from a {node.op_type} node ('{node.name or t}')")
        if node.op_type in _PASS_THROUGH:  # only the data input matters (a shape, a dropout ratio)
            tail.append(node)
            t = node.input[0]
            continue
        varying = [i for i in node.input if i and i not in consts]
        if len(varying) != 1:
            fail(f"the {node.op_type} node '{node.name or t}' combines two computed tensors")
        if node.op_type == "BatchNormalization" and node.input[0] not in varying:
            fail(f"the BatchNormalization node '{node.name or t}' normalises a constant")
        tail.append(node)
        t = varying[0]
    if fc.op_type == "Gemm":
        if fc.input[1] not in consts or int(_attr(fc, "transA", 0)):
            fail(f"the Gemm node '{fc.name}' has no constant weight or transposes its input")
        w = consts[fc.input[1]].astype(np.float64)
        w = w.T if int(_attr(fc, "transB", 0)) else w
        w = w * float(_attr(fc, "alpha", 1.0))
        b = np.zeros(w.shape[1])
        if len(fc.input) > 2 and fc.input[2]:
            if fc.input[2] not in consts:
                fail(f"the Gemm node '{fc.name}' has a computed bias")
            b = b + float(_attr(fc, "beta", 1.0)) * consts[fc.input[2]].astype(np.float64).reshape(-1)
    else:
        w, b = consts[fc.input[1]].astype(np.float64), np.zeros(consts[fc.input[1]].shape[1])
    head_input = fc.input[0]
    e = w.shape[1]

    def vec(x: np.ndarray, what: str) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if x.size not in (1, e):
            fail(f"{what} has {x.size} values for a {e}-wide embedding")
        return np.broadcast_to(x.reshape(-1), (e,)).copy()

    for node in reversed(tail):  # in graph order
        op = node.op_type
        if op == "BatchNormalization":
            scale, beta, mean, var = (vec(consts[i], f"BatchNormalization '{node.name}'") for i in node.input[1:5])
            s = scale / np.sqrt(var + float(_attr(node, "epsilon", 1e-5)))
            w, b = w * s, (b - mean) * s + beta
        elif op in ("Add", "Sub", "Mul", "Div"):
            first_const = node.input[0] in consts
            c = vec(consts[node.input[0] if first_const else node.input[1]], f"{op} '{node.name}'")
            if op == "Add":
                b = b + c
            elif op == "Sub":
                w, b = (-w, c - b) if first_const else (w, b - c)
            elif op == "Mul":
                w, b = w * c, b * c
            elif first_const:  # c / x is not affine
                fail(f"the Div node '{node.name}' divides by the embedding")
            else:
                w, b = w / c, b / c
        # Identity, Dropout (off at inference), Flatten, Reshape: the values are unchanged
    return head_input, w, b


def _cut(model, inputs: List[str], output: str, extractor):
    """The sub-graph from the image input to ``output`` (the backbone), by onnx's Extractor."""
    from onnx import TensorProto, helper, shape_inference

    try:
        model = shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - shapes are a nicety here; ONNX Runtime infers its own
        pass
    if output not in {v.name for v in model.graph.value_info}:
        model.graph.value_info.append(helper.make_tensor_value_info(output, TensorProto.FLOAT, None))
    return extractor(model).extract_model(inputs, [output])


def serfiq_quality(emb: np.ndarray) -> np.ndarray:
    """(n, m, E) stochastic embeddings -> the paper's q = 2·sigmoid(−(2/m²) Σ_{i<j} d_ij) per face."""
    e = np.asarray(emb, np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=2, keepdims=True), 1e-12)
    m = e.shape[1]
    gram = np.einsum("nie,nje->nij", e, e)
    iu = np.triu_indices(m, k=1)
    d = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * gram[:, iu[0], iu[1]]))
    return 2.0 / (1.0 + np.exp(2.0 / (m * m) * d.sum(axis=1)))


class SerFIQ:
    """A recognition model split into backbone (ONNX Runtime) and folded head (NumPy)."""

    def __init__(self, path: str, name: str = "model", passes: int = 100, dropout: float = 0.5, seed: int = 0,
                 contract: dict | None = None, num_cpus: float = 1.0, use_gpu: bool = False):
        onnx = require("onnx", "prod", "SER-FIQ (splitting an ONNX graph)")
        from onnx.utils import Extractor

        self.name = name
        c = {**CATALOGUE["serfiq"].contract, **(contract or {})}
        self.contract = check_input(c, name, "SER-FIQ model")
        try:
            model = onnx.load(path)
        except Exception as e:  # noqa: BLE001 - not an ONNX file, truncated...
            raise ModelError(f"SER-FIQ model {name}: cannot read it as ONNX: {type(e).__name__}: {e}") from e
        inputs = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
        if len(inputs) != 1:
            raise ModelError(f"SER-FIQ model {name}: expected one image input, found {len(inputs)} ({', '.join(inputs)})")
        self.head_input, w, b = split_head(model, name)
        self.w, self.b = w.astype(np.float32), b.astype(np.float32)
        with errors_as(ModelError, f"SER-FIQ model {name}: cannot cut its backbone at the head's input"):
            backbone = _cut(model, inputs, self.head_input, Extractor)
        self.session = make_session(backbone.SerializeToString(), num_cpus, use_gpu, what=f"SER-FIQ model {name} (its backbone)")
        check_image_input(self.session, int(self.contract["size"]), name, "SER-FIQ model")
        self.preprocess = Preprocess(self.contract, path)
        self.passes, self.dropout, self.seed = int(passes), float(dropout), int(seed)
        # the same m masks for every face: kept units scaled by 1/(1-p) (inverted dropout)
        rng = np.random.default_rng(self.seed)
        keep = rng.random((self.passes, self.w.shape[0])) >= self.dropout
        self.masks = keep.astype(np.float32) / np.float32(1.0 - self.dropout)

    def features(self, crops: np.ndarray) -> np.ndarray:
        """The head's input for each crop: (n, D)."""
        x = run_batched(self.session, self.preprocess(np.asarray(crops)))[0]
        x = np.asarray(x, np.float32).reshape(len(crops), -1)
        if x.shape[1] != self.w.shape[0]:
            raise ModelError(f"SER-FIQ model {self.name}: the head's input '{self.head_input}' has {x.shape[1]} "
                             f"values per face, its weight expects {self.w.shape[0]}")
        return x

    def embeddings(self, feats: np.ndarray) -> np.ndarray:
        """(n, D) head inputs -> (n, m, E) embeddings of the m masked passes, the passes of a
        chunk of faces as one matrix product."""
        n, d = feats.shape
        m = self.passes
        out = np.empty((n, m, self.w.shape[1]), np.float32)
        step = max(1, _MASK_CHUNK // (m * d))
        for i in range(0, n, step):
            x = feats[i:i + step]
            masked = (self.masks[None, :, :] * x[:, None, :]).reshape(-1, d)
            out[i:i + step] = (masked @ self.w + self.b).reshape(len(x), m, -1)
        return out

    def score(self, crops: np.ndarray) -> np.ndarray:
        """SER-FIQ quality q per crop (float64)."""
        if len(crops) == 0:
            return np.zeros(0)
        return serfiq_quality(self.embeddings(self.features(crops)))


def _check(cfg) -> None:
    side_by_side_check("serfiq")(cfg)
    unknown = sorted(set(cfg.fiqa.serfiq.contract) - {"size", "colour", "scale", "mean", "std", "graph_may_normalise"})
    if unknown:
        raise ConfigError(f"fiqa.serfiq.contract: unknown key '{unknown[0]}' "
                          f"(known: colour, graph_may_normalise, mean, scale, size, std)")


@register("fiqa", "serfiq", models=lambda cfg: [CATALOGUE["serfiq"], named(cfg.fiqa.serfiq.model, "fiqa")],
          check=_check, needs=(("onnxruntime", "prod"), ("onnx", "prod")))
class SerFIQBackend:
    """SER-FIQ on an ArcFace-like ONNX recognition model, beside the primary method"""

    def __init__(self, cfg):
        from ..modelstore import resolve

        s, r = cfg.fiqa.serfiq, cfg.fiqa.resources
        path = resolve(s.model, s.sha256, cfg.input.storage_options)
        self.model = SerFIQ(path, s.model, s.passes, s.dropout, s.seed, s.contract, r.num_cpus, r.num_gpus > 0)

    def score(self, crops: np.ndarray) -> np.ndarray:
        out = np.full((len(crops), len(FIQA_KEYS)), np.nan, np.float32)
        if len(crops):
            out[:, FIQA_KEYS.index("serfiq")] = self.model.score(crops)
        return out
