"""`faceqc calibrate LABELS --results OUT`: fit the fusion weights and verdict thresholds to a
team's own judgement, measured on held-out folds.

The score is ``quality = 100·exp(−Σ_c w_c·h_c)`` where ``h_c`` is component c's penalty at weight
1 — :func:`pipeline.fusion.curve_penalty` for the curves, :func:`pose_penalty` for head pose,
computed here from the raw values every output row keeps (``faces[primary].iqa / fiqa /
inter_eye_px / yaw / pitch / roll``) with the very functions the pipeline uses.  log(quality) is
linear in the weights, so:

* accept/reject labels: a logistic regression ``P(accept) = σ(b − Σ β_c h_c)`` with β ≥ 0;
* numeric opinion scores: least squares of the scores' normalised ranks on ``b − Σ β_c h_c``;

both with a ridge ``λ·‖β − c·w_default‖²`` that pulls the weights towards the current ones (c, a
free scale, is fitted too).  The weights written are β / c, so labels that agree with the
defaults give back the defaults; λ (∞ = keep the default weights, fit only the thresholds) is
chosen by an inner cross-validation.  Thresholds come from the fitted qualities of the training
images: ``accept`` maximises balanced accuracy (Youden's J), ``review`` is the highest line below
which at most 5 % of the images labelled accept fall, and at least as far below ``accept`` (as a
ratio) as in the current settings.  For numeric scores, which carry no
accept line, the thresholds keep the shares of accept / review the current settings give.

Agreement is reported before (current settings) and after (fitted) on held-out folds of a
stratified k-fold cross-validation: AUC for accept/reject, Spearman's ρ for numeric scores, and
the balanced accuracy of ``verdict == accept``.
"""

from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..config import Config, load_config
from ..errors import InputError, OutputError, errors_as
from ..fs import local_path, write_bytes_atomic
from ..fusion import curve_penalty, face_raw, pose_penalty
from ..io.results import read_results, run_profile
from ..schema import FACE_IQA_KEYS, FIQA_KEYS

POSE = ("yaw", "pitch", "roll")
MIN_LABELS = 20  # labelled images with a scored face
MIN_PER_CLASS = 5  # of each class, for accept/reject labels
MIN_DISTINCT = 3  # distinct values, for numeric labels
# ridge towards the current weights' direction, strongest first; inf = keep the current weights
LAMBDAS = (math.inf, 100.0, 10.0, 1.0, 0.1, 0.01, 0.001)
SCALE_RIDGE = 1e-3  # relative ridge along the current weights: keeps the scale finite when classes separate
INNER_FOLDS = 5  # inner cross-validation that chooses λ
REVIEW_MISS = 0.05  # review line: at most this share of accept-labelled images fall below it
LABEL_COLUMNS = ("label", "verdict", "score", "mos", "rating", "opinion")
ACCEPT_WORDS = {"accept", "accepted", "good", "pass", "keep", "yes", "true"}
REJECT_WORDS = {"reject", "rejected", "bad", "fail", "drop", "no", "false"}


class LabelError(InputError):
    """The labels cannot be used for calibration (too few, one class, unreadable...)."""


# ---------------------------------------------------------------- features
def feature_names(cfg: Config) -> Tuple[str, ...]:
    return tuple(cfg.fuse.curves) + POSE


def current_weights(cfg: Config) -> np.ndarray:
    return np.array([c.weight for c in cfg.fuse.curves.values()]
                    + [float(getattr(cfg.fuse.pose_weights, p)) for p in POSE], float)


def _num(v) -> float:
    return float("nan") if v is None else float(v)


def face_features(cfg: Config, face: dict) -> np.ndarray:
    """Each component's penalty at weight 1 for one face, from its stored raw values; a
    component that was not measured contributes 0, as in the pipeline."""
    iqa = face.get("iqa") or {}
    fiqa = face.get("fiqa") or {}
    raw = face_raw([_num(iqa.get(k)) for k in FACE_IQA_KEYS], [_num(fiqa.get(k)) for k in FIQA_KEYS],
                   _num(face.get("inter_eye_px")), [_num(face.get(p)) for p in POSE])
    h = [curve_penalty(c.model_copy(update={"weight": 1.0}), raw.get(name, float("nan")))
         for name, c in cfg.fuse.curves.items()]
    h += [pose_penalty(_num(face.get(p)), 1.0) for p in POSE]
    return np.array(h, float)


def quality_of(H: np.ndarray, w: np.ndarray) -> np.ndarray:
    # einsum rather than a BLAS product: these are tiny, and BLAS threads spinning up for them
    # cost more CPU than the product itself on a busy machine
    return 100.0 * np.exp(-np.einsum("ij,j->i", H, w))


# ---------------------------------------------------------------- labels
@dataclass
class Labels:
    kind: str  # "binary" (1 = accept) or "numeric" (higher = better)
    values: Dict[str, float]
    column: str
    skipped_empty: int = 0


def read_labels(path: str) -> Labels:
    if not os.path.isfile(path):
        raise InputError(f"labels file not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            cols = [c.strip() for c in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise LabelError(f"cannot read labels {path}: {e}") from e
    key = next((c for c in ("uri", "path", "file") if c in cols), None)
    if key is None:
        raise LabelError(f"labels {path}: needs a 'uri' column (found: {', '.join(cols) or 'none'})")
    others = [c for c in cols if c != key]
    col = next((c for c in LABEL_COLUMNS if c in cols), others[0] if len(others) == 1 else None)
    if col is None:
        raise LabelError(f"labels {path}: which column is the label? name it one of {', '.join(LABEL_COLUMNS)} "
                         f"(found: {', '.join(cols)})")
    raw: Dict[str, str] = {}
    empty = 0
    for r in rows:
        u, v = r.get(key, ""), r.get(col, "")
        if not u:
            continue
        if not v:
            empty += 1
            continue
        if u in raw and raw[u].lower() != v.lower():
            raise LabelError(f"labels {path}: {u} is labelled both {raw[u]!r} and {v!r}")
        raw[u] = v
    if not raw:
        raise LabelError(f"labels {path}: no labelled rows")
    nums = {}
    for u, v in raw.items():
        try:
            nums[u] = float(v)
        except ValueError:
            break
    if len(nums) == len(raw) and all(math.isfinite(x) for x in nums.values()):
        if set(nums.values()) <= {0.0, 1.0}:
            return Labels("binary", nums, col, empty)
        return Labels("numeric", nums, col, empty)
    values, bad = {}, []
    for u, v in raw.items():
        w = v.lower()
        if w in ACCEPT_WORDS:
            values[u] = 1.0
        elif w in REJECT_WORDS:
            values[u] = 0.0
        else:
            bad.append(v)
    if bad:
        raise LabelError(f"labels {path}: column '{col}' must hold accept/reject (or 1/0) or numbers; "
                         f"found {', '.join(repr(b) for b in sorted(set(bad))[:5])}")
    return Labels("binary", values, col, empty)


def _match(label_uris: Sequence[str], result_uris: Sequence[str], labels_path: str) -> Dict[str, int]:
    """label uri -> result row: exact URI, then as a local path (relative to the working directory
    or to the labels file), then by a file name that is unique among the results."""
    exact = {u: i for i, u in enumerate(result_uris)}
    local = {}
    for i, u in enumerate(result_uris):
        p = local_path(u)
        if "://" not in p:
            local[os.path.normpath(p)] = i
    names: Dict[str, List[int]] = {}
    for i, u in enumerate(result_uris):
        names.setdefault(u.rstrip("/").rsplit("/", 1)[-1], []).append(i)
    base = os.path.dirname(os.path.abspath(labels_path))
    out = {}
    for lu in label_uris:
        if lu in exact:
            out[lu] = exact[lu]
            continue
        p = local_path(lu)
        hit = None
        if "://" not in p:
            for cand in (os.path.abspath(p), os.path.normpath(os.path.join(base, p))):
                if cand in local:
                    hit = local[cand]
                    break
        if hit is None:
            same = names.get(lu.rstrip("/").rsplit("/", 1)[-1], [])
            if len(same) == 1:
                hit = same[0]
        if hit is not None:
            out[lu] = hit
    return out


@dataclass
class Dataset:
    kind: str
    uris: List[str]
    H: np.ndarray  # (n, d) penalties at weight 1
    y: np.ndarray  # 1/0 for binary, the score for numeric
    stored_quality: np.ndarray
    notes: List[str] = field(default_factory=list)


def build_dataset(labels: Labels, table, cfg: Config, labels_path: str) -> Dataset:
    uris = table.column("uri").to_pylist()
    match = _match(list(labels.values), uris, labels_path)
    notes = []
    unmatched = [u for u in labels.values if u not in match]
    if unmatched:
        notes.append(f"{len(unmatched)} labelled URIs are not in the results (e.g. {unmatched[0]})")
    rows_idx = sorted(set(match.values()))
    sub = table.take(rows_idx).to_pylist() if rows_idx else []
    by_row = {i: r for i, r in zip(rows_idx, sub)}
    H, y, q, kept = [], [], [], []
    no_face = 0
    for lu, i in match.items():
        r = by_row[i]
        p = r.get("primary_face")
        if p is None or r.get("quality") is None or not r.get("faces"):
            no_face += 1
            continue
        H.append(face_features(cfg, r["faces"][p]))
        y.append(labels.values[lu])
        q.append(float(r["quality"]))
        kept.append(r["uri"])
    if no_face:
        notes.append(f"{no_face} labelled images have no scored face (every setting rejects them) and are left out")
    if labels.skipped_empty:
        notes.append(f"{labels.skipped_empty} rows with an empty label are ignored")
    d = len(feature_names(cfg))
    ds = Dataset(labels.kind, kept, np.array(H, float).reshape(-1, d), np.array(y, float), np.array(q, float), notes)
    check_dataset(ds)
    return ds


def check_dataset(ds: Dataset) -> None:
    n = len(ds.y)
    if n < MIN_LABELS:
        raise LabelError(f"too few labels: {n} labelled images with a scored face; calibration needs at least "
                         f"{MIN_LABELS}" + (f" ({'; '.join(ds.notes)})" if ds.notes else ""))
    if ds.kind == "binary":
        pos = int(ds.y.sum())
        if pos in (0, n):
            which = "accept" if pos else "reject"
            raise LabelError(f"all {n} labels are '{which}': calibration needs both accept and reject examples")
        if min(pos, n - pos) < MIN_PER_CLASS:
            raise LabelError(f"too few labels of one class: {pos} accept, {n - pos} reject; calibration needs at "
                             f"least {MIN_PER_CLASS} of each")
    else:
        if len(np.unique(ds.y)) < MIN_DISTINCT:
            raise LabelError(f"numeric labels need at least {MIN_DISTINCT} distinct values "
                             f"(found {len(np.unique(ds.y))}); use accept/reject for two classes")


# ---------------------------------------------------------------- metrics
def auc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve of score s for y == 1 (ties count one half)."""
    from scipy.stats import rankdata

    pos, neg = int((y == 1).sum()), int((y == 0).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def spearman(y: np.ndarray, s: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if len(np.unique(y)) < 2 or len(np.unique(s)) < 2:
        return 0.0
    return float(spearmanr(y, s)[0])


def balanced_accuracy(y: np.ndarray, accepted: np.ndarray) -> float:
    pos, neg = y == 1, y == 0
    if not pos.any() or not neg.any():
        return float("nan")
    return float(0.5 * (accepted[pos].mean() + (~accepted[neg]).mean()))


def folds(y: np.ndarray, k: int, kind: str, seed: int) -> np.ndarray:
    """Fold number of each row: stratified by class (binary) or by label order (numeric)."""
    rng = np.random.default_rng(seed)
    f = np.empty(len(y), int)
    if kind == "binary":
        for cls in (0.0, 1.0):
            idx = np.flatnonzero(y == cls)
            idx = idx[rng.permutation(len(idx))]
            f[idx] = (np.arange(len(idx)) + int(rng.integers(k))) % k
    else:
        order = np.lexsort((rng.random(len(y)), y))
        f[order] = np.arange(len(y)) % k
    return f


# ---------------------------------------------------------------- fitting
@dataclass
class Model:
    weights: np.ndarray
    accept: float
    review: float
    lam: float


def _fit_weights(H: np.ndarray, y: np.ndarray, w0: np.ndarray, lam: float, kind: str,
                 start: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(component weights on the scale of w0, the optimiser's solution for warm starts).

    Minimises  data(b − Hβ) + λ·(‖β⊥‖² + ε‖β∥‖²)  over b and β ≥ 0, where ∥ / ⊥ are the parts of
    β along / across the current weights w0: the ridge pulls the weights' *direction* towards
    the current one and leaves their overall scale (which labels cannot fix) nearly free.  The
    weights returned are β rescaled so that their projection on w0 equals w0."""
    from scipy.optimize import minimize

    if math.isinf(lam):  # keep the current weights: only the thresholds are fitted
        return w0.copy(), None
    n, d = H.shape
    if kind == "binary":  # classes weighted equally; the weights sum to n
        sw = np.where(y == 1, 0.5 * n / max((y == 1).sum(), 1), 0.5 * n / max((y == 0).sum(), 1))
        target = y
    else:
        from scipy.stats import rankdata

        sw = np.ones(n)
        target = (rankdata(y) - 1) / max(n - 1, 1)
    nw = float(w0 @ w0)
    u = w0 / math.sqrt(nw) if nw > 0 else np.zeros(d)
    P = lam * (np.eye(d) - (1 - SCALE_RIDGE) * np.outer(u, u))

    def f(theta):
        b, beta = theta[0], theta[1:]
        z = b - np.einsum("ij,j->i", H, beta)  # einsum, not BLAS: tiny products, no thread spin-up
        if kind == "binary":
            p = 0.5 * (1 + np.tanh(0.5 * z))  # a sigmoid that cannot overflow
            val = float(np.sum(sw * (np.logaddexp(0.0, z) - target * z)))
            g = sw * (p - target)
        else:
            r = z - target
            val = float(np.sum(sw * r * r))
            g = 2 * sw * r
        pb = np.einsum("ij,j->i", P, beta)
        return val + float(beta @ pb), np.concatenate([[g.sum()], -np.einsum("ij,i->j", H, g) + 2 * pb])

    if start is None:
        scale = 1.0 if kind == "binary" else 0.2
        start = np.concatenate([[0.5 if kind == "numeric" else 0.0], scale * w0])
    res = minimize(f, start, jac=True, method="L-BFGS-B", bounds=[(None, None)] + [(0, None)] * d,
                   options={"maxiter": 3000, "ftol": 1e-12, "gtol": 1e-8})
    beta = np.maximum(res.x[1:], 0.0)
    proj = float(beta @ w0)
    if proj > 1e-9 and nw > 0:
        return beta * (nw / proj), res.x
    if beta.sum() > 0:
        return beta * (w0.sum() / beta.sum()), res.x
    return w0.copy(), res.x


def _thresholds(q: np.ndarray, y: np.ndarray, kind: str, q_current: np.ndarray, cfg: Config) -> Tuple[float, float]:
    if kind == "binary":
        vals = np.unique(q)
        cands = np.concatenate([[vals[0] - 1e-6], 0.5 * (vals[1:] + vals[:-1]), [vals[-1] + 1e-6]])
        pos, neg = y == 1, y == 0
        qp, qn = np.sort(q[pos]), np.sort(q[neg])
        tpr = 1.0 - np.searchsorted(qp, cands, "left") / max(len(qp), 1)  # share of accepts with q >= t
        fpr = 1.0 - np.searchsorted(qn, cands, "left") / max(len(qn), 1)
        j = tpr - fpr
        best = np.flatnonzero(j >= j.max() - 1e-12)
        accept = float(cands[best[len(best) // 2]])
        qa = np.sort(q[pos])
        review = float(qa[int(math.floor(REVIEW_MISS * len(qa)))]) if len(qa) else accept
        # at least as wide a band (in log quality) as the current settings' review band
        review = min(review, accept * cfg.fuse.review / max(cfg.fuse.accept, 1e-9))
    else:  # keep the current shares of accept and review on these images
        srt = np.sort(q)[::-1]
        n_acc = int((q_current >= cfg.fuse.accept).sum())
        n_rev = int((q_current >= cfg.fuse.review).sum())
        accept = float(srt[n_acc - 1]) if n_acc > 0 else 100.0
        review = float(srt[n_rev - 1]) if n_rev > 0 else accept
        review = min(review, accept)
    accept = float(np.clip(accept, 0.0, 100.0))
    review = float(np.clip(review, 0.0, accept))
    # round down to 0.01: an image exactly on the fitted line stays on the accepting side
    return math.floor(accept * 100) / 100, math.floor(review * 100) / 100


def _metric(kind: str, y: np.ndarray, q: np.ndarray) -> float:
    return auc(y, q) if kind == "binary" else spearman(y, q)


def _one_se_choice(per_lam: Dict[float, List[float]]) -> float:
    """The one-standard-error rule: the strongest ridge (closest to the current weights) whose
    inner-fold agreement is within one standard error of the best λ's, fold by fold (paired)."""
    ok = {lam: np.asarray(v) for lam, v in per_lam.items() if len(v) and len(v) == max(map(len, per_lam.values()))}
    if not ok:
        return math.inf
    best = max(ok, key=lambda lam: (ok[lam].mean(), lam))
    chosen = best
    for lam in sorted(ok, reverse=True):  # strongest first
        diff = ok[best] - ok[lam]
        se = diff.std(ddof=1) / math.sqrt(len(diff)) if len(diff) > 1 else 0.0
        if diff.mean() <= se + 1e-12:
            chosen = lam
            break
    return chosen


def fitted_components(H: np.ndarray, cfg: Config) -> np.ndarray:
    """Which weights calibration may change: components the settings judge (weight > 0; pitch is
    0 by default because 5 landmarks measure it poorly) that penalise at least one labelled image.
    The others keep their current weight: the labels say nothing about them."""
    return (current_weights(cfg) > 0) & np.any(H > 0, axis=0)


def fit(H: np.ndarray, y: np.ndarray, kind: str, cfg: Config, seed: int = 0, inner_k: int = INNER_FOLDS) -> Model:
    """Choose λ by an inner cross-validation, then fit weights and thresholds on all of (H, y)."""
    w0 = current_weights(cfg)
    act = fitted_components(H, cfg)

    def weights(Ht, yt, lam, start=None):
        if not act.any():
            return w0.copy(), None
        wa, sol = _fit_weights(Ht[:, act], yt, w0[act], lam, kind, start)
        w = w0.copy()
        w[act] = wa
        return w, sol

    k = inner_k if kind == "numeric" else min(inner_k, int(min((y == 1).sum(), (y == 0).sum())))
    lam_best = 10.0
    if k >= 2 and len(y) >= 2 * k:
        f = folds(y, k, kind, seed + 1)
        per_lam: Dict[float, List[float]] = {lam: [] for lam in LAMBDAS}
        for i in range(k):
            tr, te = f != i, f == i
            if kind == "binary" and len(np.unique(y[tr])) < 2:
                continue
            start = None  # warm start along the path, strongest ridge first
            for lam in LAMBDAS:
                w, sol = weights(H[tr], y[tr], lam, start)
                start = sol if sol is not None else start
                m = _metric(kind, y[te], quality_of(H[te], w))
                if math.isfinite(m):
                    per_lam[lam].append(m)
        lam_best = _one_se_choice(per_lam)
    w, _ = weights(H, y, lam_best)
    accept, review = _thresholds(quality_of(H, w), y, kind, quality_of(H, w0), cfg)
    return Model(w, accept, review, lam_best)


@dataclass
class Calibration:
    kind: str
    n: int
    n_accept: int
    k: int
    names: Tuple[str, ...]
    current: Model
    fitted: Model
    before: List[float]  # per held-out fold: AUC or Spearman with the current settings
    after: List[float]  # the same with weights and thresholds fitted on the other folds
    bacc_before: List[float]
    bacc_after: List[float]
    profile: str
    notes: List[str]
    fitted_mask: np.ndarray
    labels_path: str = ""
    results: str = ""
    max_quality_error: float = 0.0

    @property
    def metric(self) -> str:
        return "AUC" if self.kind == "binary" else "Spearman"

    def overrides(self) -> dict:
        names, w = self.names, self.fitted.weights
        curves = {nm: {"weight": _r(x)} for nm, x in zip(names, w) if nm not in POSE}
        pose = {nm: _r(x) for nm, x in zip(names, w) if nm in POSE}
        return {"profile": self.profile,
                "fuse": {"accept": self.fitted.accept, "review": self.fitted.review,
                         "pose_weights": pose, "curves": curves}}


def _r(x: float) -> float:
    x = round(float(x), 4)
    return 0.0 if abs(x) < 1e-4 else x


def calibrate(labels_path: str, results: str, cfg: Optional[Config] = None, k: int = 5, seed: int = 0,
              storage_options: Optional[dict] = None) -> Calibration:
    """Fit to the labels in ``labels_path`` the run in ``results``; see the module docstring.
    Hundreds of tiny optimisations: BLAS worker threads would only spin (twice the CPU, far worse
    on a busy machine), so calibration runs with one."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _calibrate(labels_path, results, cfg, k, seed, storage_options)


def _calibrate(labels_path: str, results: str, cfg: Optional[Config], k: int, seed: int,
               storage_options: Optional[dict]) -> Calibration:
    labels = read_labels(labels_path)
    table, summary = read_results(results, storage_options)
    notes = [] if summary else [f"{results} has no _summary.json (unfinished run): using the Parquet files found"]
    if cfg is None:
        cfg = load_config(profile=run_profile(table, summary))
    ds = build_dataset(labels, table, cfg, labels_path)
    notes += ds.notes
    w0 = current_weights(cfg)
    q0 = quality_of(ds.H, w0)
    err = float(np.max(np.abs(q0 - ds.stored_quality))) if len(q0) else 0.0
    if err > 0.05:
        notes.append(f"the results were scored with other fusion settings than these (quality differs by up to "
                     f"{err:.1f}): 'before' figures use the settings given here")
    y, kind = ds.y, ds.kind
    kk = k if kind == "numeric" else min(k, int(min(y.sum(), len(y) - y.sum())))
    kk = max(2, min(kk, len(y) // 4))
    f = folds(y, kk, kind, seed)
    before, after, bb, ba = [], [], [], []
    for i in range(kk):
        tr, te = f != i, f == i
        m = fit(ds.H[tr], y[tr], kind, cfg, seed=seed + 10 * (i + 1))
        qa = quality_of(ds.H[te], m.weights)
        before.append(_metric(kind, y[te], q0[te]))
        after.append(_metric(kind, y[te], qa))
        if kind == "binary":
            bb.append(balanced_accuracy(y[te], q0[te] >= cfg.fuse.accept))
            ba.append(balanced_accuracy(y[te], qa >= m.accept))
    final = fit(ds.H, y, kind, cfg, seed=seed)
    current = Model(w0, cfg.fuse.accept, cfg.fuse.review, math.inf)
    return Calibration(kind, len(y), int(y.sum()) if kind == "binary" else 0, kk, feature_names(cfg), current,
                       final, before, after, bb, ba, cfg.profile, notes, fitted_components(ds.H, cfg),
                       labels_path, results, err)


# ---------------------------------------------------------------- output
def format_text(c: Calibration) -> str:
    lines = []
    if c.kind == "binary":
        lines.append(f"calibrate: {c.n} labelled images with a scored face ({c.n_accept} accept, "
                     f"{c.n - c.n_accept} reject), profile {c.profile}")
    else:
        lines.append(f"calibrate: {c.n} labelled images with a scored face (numeric scores), profile {c.profile}")
    for note in c.notes:
        lines.append(f"  note: {note}")
    lines.append(f"held-out agreement ({c.k}-fold {'stratified ' if c.kind == 'binary' else ''}cross-validation, "
                 f"mean ± sd over folds):")
    lines.append(f"  {'':36s} {'current':>14s} {'calibrated':>14s}")
    fmt = lambda v: f"{np.mean(v):.3f} ± {np.std(v):.3f}"  # noqa: E731
    lines.append(f"  {c.metric + (' (accept vs reject)' if c.kind == 'binary' else ' (label vs quality)'):36s} "
                 f"{fmt(c.before):>14s} {fmt(c.after):>14s}")
    if c.kind == "binary":
        lines.append(f"  {'balanced accuracy (verdict accept)':36s} {fmt(c.bacc_before):>14s} {fmt(c.bacc_after):>14s}")
    how = ("the current weights kept (λ = ∞)" if math.isinf(c.fitted.lam) else
           f"ridge λ = {c.fitted.lam:g} towards the current weights")
    lines.append(f"fitted on all labels ({how}, chosen by inner cross-validation):")
    lines.append(f"  {'weight':20s} {'current':>8s} {'calibrated':>10s}")
    for nm, a, b, fitted in zip(c.names, c.current.weights, c.fitted.weights, c.fitted_mask):
        flag = ("  (kept: not judged)" if a == 0 else "  (kept: no labelled image is penalised by it)") \
            if not fitted else ("  *" if abs(a - b) >= 0.05 * max(a, 0.1) else "")
        lines.append(f"  {nm:20s} {a:8.3f} {b:10.3f}{flag}")
    lines.append(f"  {'accept threshold':20s} {c.current.accept:8.2f} {c.fitted.accept:10.2f}")
    lines.append(f"  {'review threshold':20s} {c.current.review:8.2f} {c.fitted.review:10.2f}")
    return "\n".join(lines)


def config_text(c: Calibration) -> str:
    import yaml

    head = [
        f"# faceqc calibrate: fitted to {c.n} labels ({os.path.basename(c.labels_path)}) on the results in {c.results}",
        f"# {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime())}; held-out {c.metric} "
        f"{np.mean(c.before):.3f} (current) -> {np.mean(c.after):.3f} (calibrated), {c.k}-fold cross-validation",
        "# use: faceqc score SRC --out DST --config THIS_FILE   (holds only the fusion settings; "
        "merge other settings in by hand)",
    ]
    return "\n".join(head) + "\n" + yaml.safe_dump(c.overrides(), sort_keys=False, default_flow_style=False)


def write_config(c: Calibration, path: str) -> None:
    with errors_as(OutputError, f"cannot write {path}"):
        write_bytes_atomic(path, config_text(c).encode("utf-8"))
    # the file must load as a configuration and reproduce the fitted weights
    cfg = load_config(path)
    got = current_weights(cfg)
    if not np.allclose(got, c.fitted.weights, atol=1e-3):
        raise OutputError(f"written config {path} does not reproduce the fitted weights")
