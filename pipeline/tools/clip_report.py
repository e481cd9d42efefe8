"""The HTML report's clip section (:mod:`pipeline.tools.report` calls :func:`clip_section`).

Clips by verdict (a stacked bar and counts), then for each verdict the clips (best first for
accept and review, worst first for reject, ``--per-gallery`` of each): name, verdict, quality,
reasons, duration, frames, shots and tracks; the timeline as inline SVG (quality over time, one
line per track, the primary one thicker; shot cuts dashed; the accept and review lines); and
thumbnails of the primary track's best and worst frames, decoded again from the source.  Every
string from the data is escaped; nothing is fetched or scripted.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..video.collect import read_side

TRACK_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def svg_timeline(frames: List[dict], tracks: List[dict], duration: float, cuts: List[float], accept: float,
                 review: float, width: int = 520, height: int = 150) -> str:
    from .drawing import esc

    ml, mr, mt, mb = 30, 8, 8, 20
    pw, ph = width - ml - mr, height - mt - mb
    dur = max(duration, 1e-3)

    def sx(t):
        return ml + min(max(t / dur, 0.0), 1.0) * pw

    def sy(q):
        return mt + ph - min(max(q, 0.0), 100.0) / 100.0 * ph

    out = [f'<svg class="plot" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           f'aria-label="timeline"><rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" class="frame"/>']
    for q, col in ((accept, "#2e7d32"), (review, "#e0a100")):
        out.append(f'<line x1="{ml}" y1="{sy(q):.1f}" x2="{ml + pw}" y2="{sy(q):.1f}" stroke="{col}" stroke-dasharray="2,3"/>')
    for c in cuts:
        out.append(f'<line x1="{sx(c):.1f}" y1="{mt}" x2="{sx(c):.1f}" y2="{mt + ph}" stroke="#555" '
                   f'stroke-dasharray="4,3"><title>cut at {c:.2f} s</title></line>')
    for q in (0, 50, 100):
        out.append(f'<text x="{ml - 3}" y="{sy(q) + 3:.1f}" class="pl" text-anchor="end">{q}</text>')
    for k in range(5):
        t = dur * k / 4
        out.append(f'<text x="{sx(t):.1f}" y="{height - 5}" class="pl" text-anchor="middle">{t:.1f}s</text>')
    for k, tr in enumerate(tracks):
        col = TRACK_COLOURS[k % len(TRACK_COLOURS)]
        pts = [(sx(f["t"]), sy(f["quality"]), f) for f in frames if f["track"] == tr["track"] and f["quality"] is not None]
        if len(pts) > 1:
            d = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in pts)
            out.append(f'<polyline points="{d}" fill="none" stroke="{col}" stroke-width="{3 if tr["primary"] else 1.2}"/>')
        for x, y, f in pts:
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.2" fill="{col}"><title>track {tr["track"]}, '
                       f'{f["t"]:.2f} s: {f["quality"]:.1f}{esc(" " + ", ".join(f["reasons"]) if f["reasons"] else "")}'
                       f'</title></circle>')
    for f in frames:
        if not f["num_faces"]:
            out.append(f'<line x1="{sx(f["t"]):.1f}" y1="{mt + ph - 5}" x2="{sx(f["t"]):.1f}" y2="{mt + ph}" '
                       f'stroke="#999" stroke-width="2"><title>{f["t"]:.2f} s: no face</title></line>')
    out.append("</svg>")
    return "".join(out)


def _frame_thumb(uri: str, t: float, bbox, cfg, colour: str) -> Optional[str]:
    from ..video.decode import VideoSource, read_frame_at
    from .drawing import thumbnail

    try:
        img = read_frame_at(VideoSource.of(uri, cfg.input.storage_options), t)
    except Exception:  # noqa: BLE001 - the report is built whatever one file does
        return None
    faces = [{"bbox": bbox}] if bbox else []
    return thumbnail(img, faces, 0 if faces else None, colour)


def _clip_card(row: dict, frames: List[dict], tracks: List[dict], cfg, thumbs) -> str:
    from .drawing import NO_FACE_COLOUR, VERDICT_COLOURS, _short_name, esc

    colour = VERDICT_COLOURS.get(row["verdict"], NO_FACE_COLOUR)
    name = _short_name(row["uri"])
    q = row["quality"]
    parts = [f'<figure class="clip" title="{esc(row["uri"])}"><figcaption><div class="name">{esc(name)}</div>'
             f'<span class="badge" style="background:{colour}">{esc(row["verdict"])}</span> '
             f'<b>Q {"–" if q is None else f"{q:.1f}"}</b> · {esc(row["status"])}'
             f' · {row["duration_s"] or 0:.1f} s · {row["frames"] or 0} frames · {row["shots"] or 0} shots · '
             f'{row["tracks"] or 0} tracks']
    if row["reasons"]:
        parts.append(f'<div class="reasons">{esc(", ".join(row["reasons"]))}</div>')
    if row.get("error"):
        parts.append(f'<div class="err">{esc(row["error"][:200])}</div>')
    parts.append("</figcaption>")
    primary = next((tr for tr in tracks if tr["primary"]), None)
    if frames:
        cuts = sorted({f["t"] for a, f in zip(frames, frames[1:]) if f["shot"] != a["shot"]})
        parts.append(svg_timeline(frames, tracks, float(row["duration_s"] or frames[-1]["t"]), cuts,
                                  thumbs.cfg.fuse.accept, thumbs.cfg.fuse.review))
    if primary is not None:
        own = [f for f in frames if f["track"] == primary["track"] and f["quality"] is not None]
        worst = min(own, key=lambda f: f["quality"]) if own else None
        shots = []
        for label, t, bbox, fq in (("best", primary["best_t"], primary["best_bbox"], primary["best_quality"]),
                                   ("worst", worst["t"] if worst else None, worst["bbox"] if worst else None,
                                    worst["quality"] if worst else None)):
            if t is None:
                continue
            src = _frame_thumb(row["uri"], t, bbox, cfg, colour)
            if label == "best" and src:
                thumbs.cache[row["uri"]] = (src, "")  # the galleries show the clip by its best frame
            img = f'<img class="thumb" src="{src}" alt="{label}">' if src else \
                '<div class="thumb missing">frame not available</div>'
            shots.append(f'<div class="frameshot">{img}<div class="sub">{label}: {t:.2f} s, Q {fq or 0:.1f}</div></div>')
        parts.append('<div class="frames">' + "".join(shots) + "</div>")
    parts.append("</figure>")
    return "".join(parts)


CSS = (".clip{margin:0 0 10px;background:#fff;border:1px solid #dde2e8;border-radius:6px;padding:8px;"
       "display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}.clip figcaption{width:100%}"
       ".frames{display:flex;gap:8px}.frameshot .sub{text-align:center}")


def clip_section(table: pa.Table, summary: Optional[dict], cfg, out: str, thumbs, per_gallery: int = 12) -> str:
    """The clips' section ("" when the run holds no clip).  Also gives the galleries' thumbnail
    cache each shown clip's best frame."""
    from .drawing import VERDICT_COLOURS, esc, svg_stacked_bar

    if "media" not in table.column_names:
        return ""
    clips = table.filter(pc.fill_null(pc.equal(table.column("media"), "video"), False))
    if not clips.num_rows:
        return ""
    so = cfg.input.storage_options
    try:
        frames_t = read_side(out, "frames", summary, so) if out else None
        tracks_t = read_side(out, "tracks", summary, so) if out else None
    except Exception:  # noqa: BLE001 - a run without them still gets its clip rows shown
        frames_t = tracks_t = None
    by_uri_f: Dict[str, List[dict]] = {}
    by_uri_t: Dict[str, List[dict]] = {}
    rows = clips.select(["uri", "status", "error", "quality", "verdict", "reasons", "duration_s", "frames",
                         "shots", "tracks"]).to_pylist()
    k = max(1, int(per_gallery))
    shown = set()
    order = {}
    for v in ("accept", "review", "reject"):
        sel = [r for r in rows if r["verdict"] == v]
        q = np.array([r["quality"] if r["quality"] is not None else -1.0 for r in sel])
        idx = np.argsort(q if v == "reject" else -q, kind="stable")[:k]
        order[v] = [sel[i] for i in idx]
        shown.update(r["uri"] for r in order[v])
    want = pa.array(sorted(shown), pa.string())
    for t, dest in ((frames_t, by_uri_f), (tracks_t, by_uri_t)):
        if t is not None:
            for r in t.filter(pc.is_in(t.column("uri"), value_set=want)).to_pylist():
                dest.setdefault(r["uri"], []).append(r)
    counts = {v: sum(1 for r in rows if r["verdict"] == v) for v in ("accept", "review", "reject")}
    html = [f'<section id="clips"><style>{CSS}</style><h2>Clips</h2><p class="sub">{len(rows)} video clips, '
            f'judged on their primary track (quality = its mean quality times the clip rules\' penalties). '
            f'Each timeline shows every sampled frame\'s quality by track (the primary one thicker), shot cuts '
            f'dashed, frames without a face as grey ticks.</p>',
            svg_stacked_bar([(v, n, VERDICT_COLOURS[v]) for v, n in counts.items()])]
    for v in ("accept", "review", "reject"):
        html.append(f'<h3>{esc(v)} ({counts[v]})</h3>')
        if not order[v]:
            html.append('<p class="empty">no clips</p>')
        for r in order[v]:
            fr = sorted(by_uri_f.get(r["uri"], []), key=lambda f: f["t"])
            tr = sorted(by_uri_t.get(r["uri"], []), key=lambda x: x["track"])
            html.append(_clip_card(r, fr, tr, cfg, thumbs))
    html.append("</section>")
    return "".join(html)
