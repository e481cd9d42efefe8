"""Drawing for the HTML reports (:mod:`pipeline.tools.report`, :mod:`pipeline.tools.clip_report`):
the verdict colours, HTML escaping, inline SVG plots made here, and JPEG thumbnails with the face
boxes drawn on them.  Nothing here reads a run; the reports hand it numbers and images."""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Optional, Sequence, Tuple

import numpy as np

VERDICT_COLOURS = {"accept": "#2e7d32", "review": "#e0a100", "reject": "#c62828"}
NO_FACE_COLOUR = "#8a8a8a"
BAR_COLOUR = "#3b6ea5"
THUMB_SIDE = 160
SCATTER_MAX_POINTS = 3000


def esc(value) -> str:
    """Escape any value for HTML text and attribute values (quotes included)."""
    return html.escape("" if value is None else str(value), quote=True)


def _fmt_num(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"
    return f"{v:.2g}"


def svg_histogram(values: np.ndarray, lo: float, hi: float, bins: int, title: str, xlabel: str = "",
                  marks: Sequence[Tuple[float, str, str]] = (), bar_colour=BAR_COLOUR,
                  width: int = 300, height: int = 170, note: str = "") -> str:
    """A histogram of the finite ``values`` in [lo, hi]; ``marks`` are (x, label, colour) lines.
    When one bin towers over the rest (e.g. 100 on a flat-topped component) the axis is cut and
    that bar is labelled with its count."""
    v = values[np.isfinite(values)]
    counts, edges = np.histogram(np.clip(v, lo, hi), bins=bins, range=(lo, hi))
    ml, mr, mt, mb = 34, 14, 22, 30
    pw, ph = width - ml - mr, height - mt - mb
    srt = np.sort(counts)
    ymax = float(srt[-1]) if len(srt) else 0.0
    if len(srt) > 1 and srt[-1] > 4 * max(srt[-2], 1):
        ymax = 1.5 * max(float(srt[-2]), 1.0)
    ymax = max(ymax, 1.0)
    out = [f'<svg class="plot" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           f'role="img" aria-label="{esc(title)}"><title>{esc(title)}</title>',
           f'<text x="{ml}" y="14" class="pt">{esc(title)}</text>']
    if note:
        out.append(f'<text x="{width - mr}" y="14" class="pn" text-anchor="end">{esc(note)}</text>')
    out.append(f'<line x1="{ml}" y1="{mt + ph}" x2="{ml + pw}" y2="{mt + ph}" class="ax"/>'
               f'<line x1="{ml}" y1="{mt}" x2="{ml}" y2="{mt + ph}" class="ax"/>')
    bw = pw / bins
    colours = bar_colour if callable(bar_colour) else (lambda _x: bar_colour)
    for i, c in enumerate(counts):
        if c == 0:
            continue
        h = min(1.0, c / ymax) * ph
        x = ml + i * bw
        centre = 0.5 * (edges[i] + edges[i + 1])
        out.append(f'<rect x="{x + 0.5:.1f}" y="{mt + ph - h:.1f}" width="{max(bw - 1, 0.5):.1f}" '
                   f'height="{h:.1f}" fill="{colours(centre)}"><title>{_fmt_num(edges[i])}–'
                   f'{_fmt_num(edges[i + 1])}: {int(c)}</title></rect>')
        if c > ymax:  # cut bar: say how tall it is, beside the bar on the side with room
            right = x + bw / 2 > ml + pw / 2
            out.append(f'<text x="{x - 2 if right else x + bw + 2:.1f}" y="{mt + 9}" class="pn" '
                       f'text-anchor="{"end" if right else "start"}">{int(c)}</text>')
    for x, label, colour in marks:
        if lo <= x <= hi:
            px = ml + (x - lo) / (hi - lo) * pw
            out.append(f'<line x1="{px:.1f}" y1="{mt}" x2="{px:.1f}" y2="{mt + ph}" stroke="{colour}" '
                       f'stroke-dasharray="3,2"/><text x="{px + 2:.1f}" y="{mt + 8}" class="pn" '
                       f'fill="{colour}">{esc(label)}</text>')
    for t in np.linspace(lo, hi, 5):
        px = ml + (t - lo) / (hi - lo) * pw
        out.append(f'<text x="{px:.1f}" y="{mt + ph + 12}" class="pl" text-anchor="middle">{_fmt_num(t)}</text>')
    out.append(f'<text x="{ml - 3}" y="{mt + 4}" class="pl" text-anchor="end">{int(round(ymax))}</text>'
               f'<text x="{ml - 3}" y="{mt + ph}" class="pl" text-anchor="end">0</text>')
    if xlabel:
        out.append(f'<text x="{ml + pw / 2}" y="{height - 3}" class="pl" text-anchor="middle">{esc(xlabel)}</text>')
    out.append("</svg>")
    return "".join(out)


def svg_scatter(x: np.ndarray, y: np.ndarray, colours: Sequence[str], xlim: Tuple[float, float],
                ylim: Tuple[float, float], title: str, xlabel: str, ylabel: str, xlog: bool = False,
                hlines: Sequence[Tuple[float, str, str]] = (), xticks: Sequence[float] = (),
                width: int = 560, height: int = 300, note: str = "") -> str:
    ml, mr, mt, mb = 40, 16, 22, 34
    pw, ph = width - ml - mr, height - mt - mb
    f = (lambda v: np.log10(np.maximum(v, 1e-9))) if xlog else (lambda v: v)
    x0, x1 = f(np.float64(xlim[0])), f(np.float64(xlim[1]))

    def sx(v):
        return ml + (f(np.float64(v)) - x0) / (x1 - x0) * pw

    def sy(v):
        return mt + ph - (v - ylim[0]) / (ylim[1] - ylim[0]) * ph

    out = [f'<svg class="plot" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           f'role="img" aria-label="{esc(title)}"><title>{esc(title)}</title>',
           f'<text x="{ml}" y="14" class="pt">{esc(title)}</text>']
    if note:
        out.append(f'<text x="{width - mr}" y="14" class="pn" text-anchor="end">{esc(note)}</text>')
    out.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" class="frame"/>')
    for yv, label, colour in hlines:
        py = sy(yv)
        out.append(f'<line x1="{ml}" y1="{py:.1f}" x2="{ml + pw}" y2="{py:.1f}" stroke="{colour}" '
                   f'stroke-dasharray="4,3"/><text x="{ml + pw - 2}" y="{py - 2:.1f}" class="pn" '
                   f'text-anchor="end" fill="{colour}">{esc(label)}</text>')
    for t in xticks:
        px = sx(t)
        out.append(f'<line x1="{px:.1f}" y1="{mt + ph}" x2="{px:.1f}" y2="{mt + ph + 3}" class="ax"/>'
                   f'<text x="{px:.1f}" y="{mt + ph + 13}" class="pl" text-anchor="middle">{_fmt_num(t)}</text>')
    for t in np.linspace(ylim[0], ylim[1], 5):
        out.append(f'<text x="{ml - 3}" y="{sy(t) + 3:.1f}" class="pl" text-anchor="end">{_fmt_num(t)}</text>')
    xs = np.clip(x, xlim[0], xlim[1])
    for xv, yv, col in zip(xs, y, colours):
        out.append(f'<circle cx="{sx(xv):.1f}" cy="{sy(yv):.1f}" r="2.6" fill="{col}" fill-opacity="0.7"/>')
    out.append(f'<text x="{ml + pw / 2}" y="{height - 4}" class="pl" text-anchor="middle">{esc(xlabel)}</text>'
               f'<text x="10" y="{mt + ph / 2}" class="pl" text-anchor="middle" '
               f'transform="rotate(-90 10 {mt + ph / 2})">{esc(ylabel)}</text></svg>')
    return "".join(out)


def svg_stacked_bar(parts: Sequence[Tuple[str, int, str]], width: int = 560, height: int = 26) -> str:
    total = sum(n for _, n, _ in parts) or 1
    out = [f'<svg class="plot" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           f'aria-label="verdicts">']
    x = 0.0
    for label, n, colour in parts:
        w = n / total * width
        if w <= 0:
            continue
        out.append(f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="{height}" fill="{colour}">'
                   f'<title>{esc(label)}: {n}</title></rect>')
        if w > 60:
            out.append(f'<text x="{x + 6:.1f}" y="{height / 2 + 4}" class="bar-label">{esc(label)} {n}</text>')
        x += w
    out.append("</svg>")
    return "".join(out)


# ---------------------------------------------------------------- thumbnails
def thumbnail(img: np.ndarray, faces: Sequence[dict], primary: Optional[int], colour: str,
              side: int = THUMB_SIDE) -> str:
    """A JPEG data URI of the region around the primary face (the whole image when there is
    none), at most ``side`` pixels, with every face box drawn (the primary one thicker)."""
    import cv2
    from PIL import Image

    h, w = img.shape[:2]
    a, b, c, d = 0, 0, w, h
    if primary is not None and faces and 0 <= primary < len(faces) and faces[primary].get("bbox"):
        x1, y1, x2, y2 = faces[primary]["bbox"]
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        half = max(8.0, 1.1 * max(x2 - x1, y2 - y1))
        a, b = int(max(0, cx - half)), int(max(0, cy - half))
        c, d = int(min(w, math.ceil(cx + half))), int(min(h, math.ceil(cy + half)))
        if c - a < 2 or d - b < 2:
            a, b, c, d = 0, 0, w, h
    crop = img[b:d, a:c]
    s = side / max(crop.shape[:2])
    size = (max(1, int(round(crop.shape[1] * s))), max(1, int(round(crop.shape[0] * s))))
    small = np.ascontiguousarray(cv2.resize(crop, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR))
    rgb = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
    for j, f in enumerate(faces or []):
        if not f.get("bbox"):
            continue
        x1, y1, x2, y2 = f["bbox"]
        p1 = (int(round((x1 - a) * s)), int(round((y1 - b) * s)))
        p2 = (int(round((x2 - a) * s)), int(round((y2 - b) * s)))
        if j == primary:
            cv2.rectangle(small, p1, p2, rgb, 2)
        else:
            cv2.rectangle(small, p1, p2, (230, 230, 230), 1)
    buf = io.BytesIO()
    Image.fromarray(small).save(buf, "JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _short_name(uri: str) -> str:
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    return name or uri
