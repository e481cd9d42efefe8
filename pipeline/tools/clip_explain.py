"""`faceqc explain CLIP`: one clip scored in process (no Ray): its shots, its tracks, the rules
that judged it and every sampled frame's quality; ``--save`` draws the timeline as a PNG
(quality over time, one line per track, shot cuts as dashed lines)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import InputError

TRACK_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
                 (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def score_clip(entry, cfg):
    """The :class:`pipeline.video.collect.Clip` of one listed video."""
    from ..executor import LocalExecutor
    from ..io.listing import entries_table

    for rows, clips in LocalExecutor(cfg).iter_clips(entries_table([entry])):
        if clips:
            return clips[0]
    raise InputError(f"{entry.uri} is not a video faceqc can read")


def _fmt(v, nd=1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def explain_clip_text(clip, cfg) -> str:
    r, f = clip.row, clip.facts
    lines = [r["uri"]]
    if r["status"] not in ("ok", "no_face"):
        lines += [f"  status {r['status']} ({r['error']})", f"  verdict {r['verdict']}  reasons {', '.join(r['reasons'])}"]
        return "\n".join(lines)
    lines.append(f"  video {f.get('container')}/{f.get('codec')} {f.get('width')}x{f.get('height')}, "
                 f"{_fmt(f.get('duration_s'), 2)} s at {_fmt(f.get('fps'), 2)} fps"
                 + (f", rotation {f.get('rotation')}°" if f.get("rotation") else "")
                 + (", variable frame rate" if f.get("vfr") else "")
                 + f"; {f.get('frames')} frames sampled every {_fmt(f.get('sample_interval_s'), 2)} s")
    if r.get("error"):
        lines.append(f"  note: {r['error']}")
    lines.append(f"  status {r['status']}  quality {_fmt(r['quality'])}  verdict {r['verdict']}  "
                 f"reasons {', '.join(r['reasons']) or '-'}")
    cuts = f.get("cuts") or []
    lines.append(f"  shots: {f.get('shots')}" + (f" (cuts at {', '.join(f'{c:.2f}' for c in cuts[:20])} s)" if cuts else ""))
    tracks = clip.tracks.to_pylist()
    lines.append(f"  tracks: {len(tracks)}")
    for tr in tracks:
        mark = "*" if tr["primary"] else " "
        lines.append(
            f"  {mark}track {tr['track']}  shot {tr['shot']}  {tr['start_s']:.2f}-{tr['end_s']:.2f} s  "
            f"{tr['frames']} frames ({100 * tr['coverage']:.0f}%)  quality {_fmt(tr['quality'])} "
            f"(mean {_fmt(tr['quality_mean'])}, min {_fmt(tr['quality_min'])}, p10 {_fmt(tr['quality_p10'])})  "
            f"accepted {100 * (tr['accepted_share'] or 0):.0f}%  yaw range {_fmt(tr['yaw_range'])}°  "
            f"head motion {_fmt(tr['head_motion'], 2)} ied/s  identity {_fmt(tr['identity_consistency'], 3)}  "
            f"best at {tr['best_t']:.2f} s  {tr['verdict']}" + (f" ({', '.join(tr['reasons'])})" if tr["reasons"] else ""))
    j = clip.judgement
    if j.get("raw"):
        lines.append("  rules (primary track)      raw  score  curve")
        for name, score in j["scores"].items():
            cv = cfg.video.rules[name]
            lines.append(f"      {name:16s} {_fmt(j['raw'].get(name), 3):>9s} {_fmt(score):>6s}  "
                         f"{cv.direction} start {cv.start:g} full {cv.full:g} w {cv.weight:g}")
    lines.append("  frames:      t  shot  track  faces  quality  verdict  reasons")
    for fr in clip.frames.to_pylist():
        lines.append(f"          {fr['t']:7.2f}  {fr['shot']:4d}  {_fmt(fr['track']):>5s}  {fr['num_faces'] or 0:5d}  "
                     f"{_fmt(fr['quality']):>7s}  {fr['verdict'] or '-':7s}  {', '.join(fr['reasons'] or []) or '-'}")
    return "\n".join(lines)


def timeline_png(clip, cfg, path: Optional[str] = None, width: int = 960, height: int = 360) -> np.ndarray:
    """Quality over time per track (primary track thicker), shot cuts dashed, the accept and
    review lines dotted; written to ``path`` when given.  Returns the RGB image."""
    import cv2

    img = np.full((height, width, 3), 255, np.uint8)
    ml, mr, mt, mb = 56, 150, 30, 40
    pw, ph = width - ml - mr, height - mt - mb
    dur = max(float(clip.facts.get("duration_s") or 0.0), 1e-3)

    def sx(t):
        return int(round(ml + min(max(t / dur, 0.0), 1.0) * pw))

    def sy(q):
        return int(round(mt + ph - min(max(q, 0.0), 100.0) / 100.0 * ph))

    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.rectangle(img, (ml, mt), (ml + pw, mt + ph), (120, 120, 120), 1)
    for q in (0, 25, 50, 75, 100):
        cv2.putText(img, str(q), (ml - 34, sy(q) + 4), font, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
    for q, label, col in ((cfg.fuse.accept, "accept", (46, 125, 50)), (cfg.fuse.review, "review", (224, 161, 0))):
        for x in range(ml, ml + pw, 6):
            cv2.line(img, (x, sy(q)), (min(x + 2, ml + pw), sy(q)), col, 1)
        cv2.putText(img, label, (ml + pw + 4, sy(q) + 4), font, 0.4, col, 1, cv2.LINE_AA)
    for c in clip.facts.get("cuts") or []:
        x = sx(c)
        for y in range(mt, mt + ph, 8):
            cv2.line(img, (x, y), (x, min(y + 4, mt + ph)), (90, 90, 90), 1)
    steps = 5
    for k in range(steps + 1):
        t = dur * k / steps
        cv2.putText(img, f"{t:.1f}s", (sx(t) - 14, mt + ph + 16), font, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
    frames = clip.frames.to_pylist()
    tracks = clip.tracks.to_pylist()
    for k, tr in enumerate(tracks):
        col = TRACK_COLOURS[k % len(TRACK_COLOURS)]
        pts = [(sx(fr["t"]), sy(fr["quality"])) for fr in frames if fr["track"] == tr["track"] and fr["quality"] is not None]
        thick = 3 if tr["primary"] else 1
        for a, b in zip(pts, pts[1:]):
            cv2.line(img, a, b, col, thick, cv2.LINE_AA)
        for p in pts:
            cv2.circle(img, p, 3, col, -1, cv2.LINE_AA)
        if k < 12:
            y = mt + 14 + 16 * k
            cv2.line(img, (ml + pw + 60, y - 4), (ml + pw + 80, y - 4), col, thick)
            cv2.putText(img, f"track {tr['track']}" + ("*" if tr["primary"] else ""), (ml + pw + 84, y), font, 0.4,
                        (30, 30, 30), 1, cv2.LINE_AA)
    nofaces = [sx(fr["t"]) for fr in frames if not fr["num_faces"]]
    for x in nofaces:  # sampled frames without a face: grey ticks on the axis
        cv2.line(img, (x, mt + ph - 6), (x, mt + ph), (160, 160, 160), 2)
    title = (f"{clip.uri.rsplit('/', 1)[-1][:60]}  Q {_fmt(clip.row['quality'])}  {clip.row['verdict']}  "
             f"{', '.join(clip.row['reasons'])[:60]}")
    cv2.putText(img, title, (ml, 20), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    if path:
        from PIL import Image

        Image.fromarray(img).save(path)
    return img


def cmd_explain_clip(args, cfg, entry) -> int:
    import json

    clip = score_clip(entry, cfg)
    if args.json:
        print(json.dumps({"row": clip.row, "facts": clip.facts, "tracks": clip.tracks.to_pylist(),
                          "frames": clip.frames.to_pylist()}, indent=2, default=str))
    else:
        print(explain_clip_text(clip, cfg))
    if args.save:
        timeline_png(clip, cfg, args.save)
        print(f"timeline written to {args.save}")
    return 0 if clip.row["status"] in ("ok", "no_face") else 1
