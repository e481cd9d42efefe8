"""`faceqc explain`: one image scored in process, every component shown with its raw value, its
0–100 score and the curve that mapped it; and an annotated copy (boxes, landmarks, pose axes)."""

from __future__ import annotations

import math

from ..fusion import face_raw


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def explain_text(row: dict, cfg) -> str:
    lines = [f"{row['uri']}", f"  status {row['status']}" + (f" ({row['error']})" if row["error"] else "")]
    if row["status"] not in ("ok",):
        lines.append(f"  verdict {row['verdict']}  reasons {', '.join(row['reasons'])}")
        return "\n".join(lines)
    lines.append(f"  {row['width']}x{row['height']}, {row['num_faces']} face(s), primary face #{row['primary_face']}")
    lines.append(f"  quality {row['quality']:.1f}  verdict {row['verdict']}  reasons {', '.join(row['reasons']) or '-'}")
    for j, f in enumerate(row["faces"]):
        mark = "*" if j == row["primary_face"] else " "
        lines.append(f" {mark}face {j}: quality {f['quality']:.1f}  det_score {f['det_score']:.2f}  "
                     f"bbox {[round(v) for v in f['bbox']]}")
        raw = face_raw([f["iqa"][k] if f["iqa"][k] is not None else float("nan") for k in f["iqa"]],
                       [f["fiqa"][k] if f["fiqa"][k] is not None else float("nan") for k in f["fiqa"]],
                       f["inter_eye_px"], [f[k] if f[k] is not None else float("nan") for k in ("yaw", "pitch", "roll")])
        raw.update(yaw=f["yaw"], pitch=f["pitch"], roll=f["roll"])
        lines.append(f"      {'component':16s} {'raw':>9s} {'score':>6s}  curve")
        for name, score in f["components"].items():
            curve = cfg.fuse.curves.get(name)
            desc = (f"{curve.direction} start {curve.start:g} full {curve.full:g} w {curve.weight:g}" if curve
                    else f"OFIQ cos² w {getattr(cfg.fuse.pose_weights, name):g}")
            lines.append(f"      {name:16s} {_fmt(raw.get(name)):>9s} {_fmt(score):>6s}  {desc}")
    return "\n".join(lines)


def annotate(img, row: dict):
    """An RGB copy of ``img`` with boxes, landmarks, pose axes and scores drawn on it."""
    import cv2
    import numpy as np

    out = np.ascontiguousarray(img.copy())
    scale = max(1.0, max(out.shape[:2]) / 800)
    th = max(1, int(round(2 * scale)))
    for j, f in enumerate(row["faces"] or []):
        x1, y1, x2, y2 = [int(round(v)) for v in f["bbox"]]
        colour = (0, 200, 0) if f["quality"] >= 60 else (230, 160, 0) if f["quality"] >= 35 else (220, 0, 0)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, th)
        for x, y in f["landmarks"]:
            cv2.circle(out, (int(round(x)), int(round(y))), th + 1, (255, 255, 0), -1)
        # pose axes from the nose: x (red), y (green), z (blue), orthographic projection
        yaw, pitch, roll = (math.radians(f[k] or 0.0) for k in ("yaw", "pitch", "roll"))
        cy, sy, cp, sp, cr, sr = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch), math.cos(roll), math.sin(roll)
        rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
        ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        rx = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
        r = rz @ ry @ rx
        nx, ny = f["landmarks"][2]
        length = 0.5 * (x2 - x1)
        for axis, col in ((0, (255, 0, 0)), (1, (0, 255, 0)), (2, (0, 0, 255))):
            v = r[:, axis] * (1 if axis != 1 else -1) * length
            if axis == 2:
                v = r @ np.array([0, 0, -1.0]) * length
            cv2.line(out, (int(nx), int(ny)), (int(nx + v[0]), int(ny + v[1])), col, th)
        label = f"#{j} Q{f['quality']:.0f}"
        cv2.putText(out, label, (x1, max(12, y1 - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, colour, th)
        low = sorted((s, k) for k, s in f["components"].items() if s is not None and s < 95)[:4]
        for i, (s, k) in enumerate(low):
            cv2.putText(out, f"{k} {s:.0f}", (x1, y2 + int((16 + 16 * i) * scale)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.45 * scale, colour, th)
    head = f"{row['verdict']}  Q {row['quality']:.1f}" if row["quality"] is not None else f"{row['verdict']} ({row['status']})"
    cv2.putText(out, head, (8, int(24 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, (255, 255, 255), th + 2)
    cv2.putText(out, head, (8, int(24 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, (0, 0, 0), th)
    return out
