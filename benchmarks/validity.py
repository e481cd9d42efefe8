"""Does the score fall with damage, on families it was tuned on and on families it never saw?

    python -m benchmarks.validity [--profile offline] [--families a,b] [--json out.json]

Real faces from packages (six people cut from insightface's t1.jpg, turned upright, and scikit-
image's astronaut), each under every family of tests/support/degradations.py at six severities
(the first is none), scored in process with the same stage code as the pipeline.  Per family: the
mean over faces of -Spearman(quality, severity) (1.0: quality falls with every step), the median
quality at each severity, and the cross-image AUC of pristine against the worst severity.  Tuned
and held-out families are reported apart.  An image whose face is no longer found counts as
quality 0 (it would be rejected).  Needs the test environment (`make env`); run from the
repository root.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def auc(pos, neg) -> float:
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if not len(pos) or not len(neg):
        return float("nan")
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def faces_of(executor, images: dict) -> dict:
    """The primary face of each pristine image, as degradation operators want it."""
    from tests.support.degradations import Face

    out = {}
    for name, row in zip(images, executor.score_images(list(images.values())).to_pylist()):
        p = row["primary_face"]
        f = row["faces"][p] if p is not None else None
        out[name] = Face(np.array(f["landmarks"], float), float(f["inter_eye_px"])) if f else None
    return out


def evaluate(cfg, families=None, faces=None, large_factor: float = 3.0, verbose: bool = False) -> dict:
    from scipy.stats import spearmanr

    from pipeline.executor import LocalExecutor
    from pipeline.tools import samples
    from tests.support import degradations as dg

    ex = LocalExecutor(cfg)
    base = faces or samples.test_faces()
    large = {k: dg.upscale(v, large_factor) for k, v in base.items()}
    found = {False: faces_of(ex, base), True: faces_of(ex, large)}
    res = {}
    for name in families or list(dg.FAMILIES):
        fam = dg.FAMILIES[name]
        imgs = large if fam.large else base
        q = np.zeros((len(imgs), len(fam.severities)))
        for i, (k, img) in enumerate(imgs.items()):
            face = found[fam.large][k]
            if fam.needs_face and face is None:
                q[i] = np.nan
                continue
            degraded = [dg.apply(name, img, s, face) for s in fam.severities]
            rows = ex.score_images(degraded).to_pylist()
            q[i] = [r["quality"] if r["quality"] is not None else 0.0 for r in rows]
            if verbose:
                comps = [r["faces"][r["primary_face"]]["components"] if r["primary_face"] is not None else {} for r in rows]
                low = sorted({c for cs in comps for c, v in cs.items() if v is not None and v < 99})
                print(f"  {name} {k}: q " + " ".join(f"{v:.0f}" for v in q[i]) + " | " +
                      "; ".join(f"{c} " + ",".join("-" if cs.get(c) is None else f"{cs[c]:.0f}" for cs in comps)
                                for c in low))
        ok = ~np.isnan(q[:, 0])
        rhos = [-spearmanr(np.arange(q.shape[1]), row)[0] if np.ptp(row) > 0 else 0.0 for row in q[ok]]
        res[name] = {"group": fam.group, "tuned": name in dg.TUNING, "rho": float(np.mean(rhos)),
                     "rho_min": float(np.min(rhos)), "median": [round(float(v), 1) for v in np.median(q[ok], axis=0)],
                     "auc": auc(q[ok, 0], q[ok, -1]), "pristine_min": float(np.min(q[ok, 0])),
                     "q": q[ok].round(1).tolist()}
    return res


def summarise(res: dict) -> dict:
    out = {}
    for tuned in (True, False):
        for group in ("classic", "realworld", "reviewer"):
            sel = [v for v in res.values() if v["tuned"] == tuned and v["group"] == group]
            if sel:
                out[f"{'tuned' if tuned else 'held-out'} {group}"] = {
                    "families": len(sel), "rho": round(float(np.mean([v["rho"] for v in sel])), 3),
                    "worst_family": round(float(min(v["rho"] for v in sel)), 3),
                    "auc": round(float(np.mean([v["auc"] for v in sel])), 3)}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="offline")
    ap.add_argument("--config")
    ap.add_argument("--families", help="comma-separated family names (default: all)")
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("-v", "--verbose", action="store_true", help="print each face's components that fall")
    args = ap.parse_args(argv)

    from pipeline.config import load_config

    cfg = load_config(args.config, profile=args.profile)
    t = time.time()
    res = evaluate(cfg, args.families.split(",") if args.families else None, verbose=args.verbose)
    print(f"{'family':22s} {'group':10s} {'set':8s} {'-rho':>6s} {'min':>6s} {'AUC':>6s}  median quality by severity")
    for name, v in sorted(res.items(), key=lambda kv: (kv[1]["group"], not kv[1]["tuned"], kv[0])):
        print(f"{name:22s} {v['group']:10s} {'tuned' if v['tuned'] else 'held-out':8s} {v['rho']:6.3f} "
              f"{v['rho_min']:6.2f} {v['auc']:6.3f}  {' -> '.join(f'{m:.0f}' for m in v['median'])}")
    summary = summarise(res)
    print()
    for k, v in summary.items():
        print(f"{k:22s} {v['families']:2d} families: mean -rho {v['rho']:.3f}, worst family {v['worst_family']:.3f}, "
              f"AUC {v['auc']:.3f}")
    print(f"({time.time() - t:.0f} s, profile {cfg.profile})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"families": res, "summary": summary}, f, indent=1)
    return res


if __name__ == "__main__":
    main()
