"""`faceqc report OUT --html FILE`: one static HTML file that shows what a run decided.

Everything is in the one file and works offline: thumbnails are small JPEG data URIs with the
face box drawn on them, plots are inline SVG made here, there is no JavaScript at all (a
Content-Security-Policy forbids scripts and any fetch), and every string that comes from the
data — file names come from users' buckets — goes through :func:`html.escape`.

Sections: run (counts by status and verdict, throughput), distributions (histograms of
``quality`` and of every component), quality against face size and against yaw, galleries
(best, worst, borderline around the accept and review thresholds, one per reason), settings.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..config import Config, load_config
from ..errors import OutputError, RowError, errors_as
from ..fs import write_bytes_atomic
from ..images import decode_image, read_file
from ..io.results import read_results, run_profile
from ..schema import COMPONENTS, STATUSES, VERDICTS
from .drawing import (
    NO_FACE_COLOUR,
    SCATTER_MAX_POINTS,
    VERDICT_COLOURS,
    _short_name,
    esc,
    svg_histogram,
    svg_scatter,
    svg_stacked_bar,
    thumbnail,
)


def _np(arr) -> np.ndarray:
    """A float numpy array from an Arrow array; nulls become NaN."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return np.asarray(pc.fill_null(arr.cast(pa.float64()), float("nan")).to_numpy(zero_copy_only=False), float)


def primary_faces(table: pa.Table) -> pa.Array:
    """The primary face struct of every row (null where there is none), without a Python loop."""
    faces = table.column("faces").combine_chunks()
    prim = table.column("primary_face").combine_chunks()
    lengths = np.asarray(pc.fill_null(pc.list_value_length(faces), 0).to_numpy(zero_copy_only=False), np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    p = np.asarray(pc.fill_null(prim, -1).to_numpy(zero_copy_only=False), np.int64)
    valid = (p >= 0) & (p < lengths)
    idx = pa.array(np.where(valid, starts + np.maximum(p, 0), 0), mask=~valid)
    flat = pc.list_flatten(faces)
    if len(flat) == 0:
        return pa.nulls(len(table), faces.type.value_type)
    return pc.take(flat, idx)


def _face_field(pf: pa.Array, *path: str) -> np.ndarray:
    """A numeric field of the primary faces as floats (NaN where absent, e.g. a component an
    older run did not have)."""
    arr, typ = pf, pf.type
    for name in path:
        if not pa.types.is_struct(typ) or typ.get_field_index(name) < 0:
            return np.full(len(pf), np.nan)
        arr = pc.struct_field(arr, name)
        typ = typ.field(name).type
    return _np(arr)


# ---------------------------------------------------------------- SVG plots
class Thumbnails:
    """Reads each source image at most once; a file that cannot be read any more gets a note."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.cache: Dict[str, Tuple[Optional[str], str]] = {}

    def get(self, row: dict) -> Tuple[Optional[str], str]:

        uri = row["uri"]
        if uri in self.cache:
            return self.cache[uri]
        if row["status"] in ("read_error", "decode_error", "too_large"):
            res = (None, row["status"])
        else:
            try:
                c = self.cfg
                img = decode_image(read_file(uri, c.input.storage_options, c.decode.max_bytes), c.decode.max_pixels)
                res = (thumbnail(img, row.get("faces") or [], row.get("primary_face"),
                                 VERDICT_COLOURS.get(row["verdict"], NO_FACE_COLOUR)), "")
            except RowError as e:
                res = (None, f"image not available: {e}")
            except Exception as e:  # noqa: BLE001 - the report is built whatever one file does
                res = (None, f"image not available: {type(e).__name__}: {e}")
        self.cache[uri] = res
        return res


# ---------------------------------------------------------------- cards and galleries
def card(row: dict, thumbs: Thumbnails) -> str:
    src, note = thumbs.get(row)
    verdict = row["verdict"]
    colour = VERDICT_COLOURS.get(verdict, NO_FACE_COLOUR)
    name = _short_name(row["uri"])
    q = row["quality"]
    parts = [f'<figure class="card" title="{esc(row["uri"])}">']
    if src:
        parts.append(f'<img class="thumb" src="{src}" alt="{esc(name)}">')
    else:
        parts.append(f'<div class="thumb missing">{esc(note or row["status"])}</div>')
    qtext = f"{q:.1f}" if q is not None else "–"
    parts.append(f'<figcaption><div class="name">{esc(name)}</div>'
                 f'<div><span class="badge" style="background:{colour}">{esc(verdict)}</span> '
                 f'<b>Q {qtext}</b></div>')
    if row["reasons"]:
        parts.append(f'<div class="reasons">{esc(", ".join(row["reasons"]))}</div>')
    if row["status"] != "ok" and row.get("error"):
        err = row["error"] if len(row["error"]) <= 160 else row["error"][:157] + "..."
        parts.append(f'<div class="err">{esc(err)}</div>')
    p = row.get("primary_face")
    faces = row.get("faces") or []
    if p is not None and 0 <= p < len(faces):
        comps = [(s, k) for k, s in (faces[p].get("components") or {}).items() if s is not None]
        comps.sort(key=lambda t: (t[0], t[1]))
        rows = []
        for s, k in comps:
            col = VERDICT_COLOURS["accept"] if s >= 90 else VERDICT_COLOURS["review"] if s >= 70 else VERDICT_COLOURS["reject"]
            rows.append(f'<tr><td>{esc(k)}</td><td class="cb"><span style="width:{max(1.0, s):.0f}%;'
                        f'background:{col}"></span></td><td class="cv">{s:.0f}</td></tr>')
        parts.append('<table class="comps">' + "".join(rows) + "</table>")
    parts.append("</figcaption></figure>")
    return "".join(parts)


def gallery(section_id: str, title: str, subtitle: str, rows: List[dict], thumbs: Thumbnails) -> str:
    body = "".join(card(r, thumbs) for r in rows) or '<p class="empty">no images</p>'
    return (f'<section class="gallery" id="{esc(section_id)}"><h3>{esc(title)}</h3>'
            f'<p class="sub">{esc(subtitle)}</p><div class="cards">{body}</div></section>')


# ---------------------------------------------------------------- the page
CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d1d1f;background:#f6f7f9}
header{background:#1f2a37;color:#fff;padding:16px 24px}header h1{margin:0 0 4px;font-size:22px}
header .meta{color:#c9d3de;font-size:13px;word-break:break-all}
nav{padding:8px 24px;background:#e9edf2;font-size:13px}nav a{margin-right:14px;color:#1f4e85}
main{padding:8px 24px 40px}section{margin:18px 0}h2{font-size:18px;border-bottom:2px solid #d5dbe2;padding-bottom:4px}
h3{font-size:15px;margin:14px 0 2px}.sub{color:#5b6570;margin:0 0 8px;font-size:12px}
.warn{background:#fff3cd;border:1px solid #e0c36a;padding:8px 12px;border-radius:4px}
table.counts{border-collapse:collapse;margin:6px 24px 6px 0;display:inline-table;vertical-align:top}
table.counts td,table.counts th{border-bottom:1px solid #dde2e8;padding:3px 10px;text-align:left}
table.counts td.n{text-align:right;font-variant-numeric:tabular-nums}
.plots{display:flex;flex-wrap:wrap;gap:10px}.plot{background:#fff;border:1px solid #dde2e8;border-radius:4px}
.pt{font-size:12px;font-weight:600;fill:#1d1d1f}.pl{font-size:10px;fill:#5b6570}.pn{font-size:10px;fill:#5b6570}
.ax{stroke:#8996a3;stroke-width:1}.frame{fill:none;stroke:#c5ccd4}.bar-label{font-size:12px;fill:#fff;font-weight:600}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{margin:0;width:184px;background:#fff;border:1px solid #dde2e8;border-radius:6px;padding:8px;box-sizing:border-box}
.thumb{display:block;width:160px;height:160px;object-fit:contain;background:#222;margin:0 auto 6px;border-radius:3px}
.thumb.missing{background:#eceff3;color:#5b6570;font-size:11px;display:flex;align-items:center;justify-content:center;
text-align:center;padding:8px;box-sizing:border-box;word-break:break-word}
.name{font-size:12px;font-weight:600;word-break:break-all}.badge{color:#fff;border-radius:3px;padding:0 5px;font-size:11px}
.reasons{font-size:11px;color:#7a2a2a;word-break:break-word}.err{font-size:11px;color:#5b6570;word-break:break-word}
table.comps{width:100%;border-collapse:collapse;font-size:10px;margin-top:4px}table.comps td{padding:0 2px}
td.cb{width:60px}td.cb span{display:block;height:7px;border-radius:2px}td.cv{text-align:right;width:22px}
.empty{color:#5b6570}details pre{background:#fff;border:1px solid #dde2e8;padding:8px;overflow:auto;font-size:12px}
"""


def _counts_table(title: str, counts: Dict[str, int], total: int, colours: Dict[str, str]) -> str:
    rows = "".join(
        f'<tr><td><span class="badge" style="background:{colours.get(k, NO_FACE_COLOUR)}">&nbsp;</span> {esc(k)}</td>'
        f'<td class="n">{n}</td><td class="n">{100.0 * n / max(total, 1):.1f}%</td></tr>'
        for k, n in counts.items())
    return f'<table class="counts"><tr><th>{esc(title)}</th><th>images</th><th>share</th></tr>{rows}</table>'


def _ordered_counts(column, order: Sequence[str]) -> Dict[str, int]:
    vc = pc.value_counts(pc.fill_null(column, "null")).to_pylist()
    c = {d["values"]: int(d["counts"]) for d in vc}
    keys = [k for k in order if k in c] + sorted(k for k in c if k not in order)
    return {k: c[k] for k in keys}


def rows_by_reason(table: pa.Table) -> Dict[str, np.ndarray]:
    """reason -> the (unique, sorted) indices of the rows that give it; vectorised."""
    col = table.column("reasons").combine_chunks()
    flat = pc.list_flatten(col)
    if len(flat) == 0:
        return {}
    parents = np.asarray(pc.list_parent_indices(col).to_numpy(zero_copy_only=False), np.int64)
    enc = pc.dictionary_encode(pc.fill_null(flat, "null")).combine_chunks() if isinstance(flat, pa.ChunkedArray) \
        else pc.dictionary_encode(pc.fill_null(flat, "null"))
    codes = np.asarray(enc.indices.to_numpy(zero_copy_only=False), np.int64)
    names = enc.dictionary.to_pylist()
    return {name: np.unique(parents[codes == c]) for c, name in enumerate(names)}


@dataclass
class _Run:
    """What every section of a report reads: the rows, the thresholds, the primary faces."""

    table: pa.Table
    summary: dict
    cfg: Config
    accept: float
    review: float
    quality: np.ndarray
    has_face: np.ndarray
    pf: pa.Array

    @classmethod
    def of(cls, table: pa.Table, summary: Optional[dict], cfg: Config) -> "_Run":
        fuse = (summary or {}).get("config", {}).get("fuse") or {}
        pf = primary_faces(table)
        has_face = np.asarray(pf.is_valid().to_numpy(zero_copy_only=False), bool) if len(pf) else np.zeros(0, bool)
        return cls(table, summary or {}, cfg, float(fuse.get("accept", cfg.fuse.accept)),
                   float(fuse.get("review", cfg.fuse.review)), _np(table.column("quality")), has_face, pf)

    @property
    def fuse(self) -> dict:
        return self.summary.get("config", {}).get("fuse") or {}

    def colour(self, q: float) -> str:
        return VERDICT_COLOURS["accept" if q >= self.accept else "review" if q >= self.review else "reject"]

    def lines(self) -> list:
        return [(self.accept, f"accept {self.accept:g}", VERDICT_COLOURS["accept"]),
                (self.review, f"review {self.review:g}", VERDICT_COLOURS["review"])]


def _run_section(r: _Run) -> str:
    n, s = r.table.num_rows, r.summary
    status_counts = _ordered_counts(r.table.column("status"), STATUSES)
    verdict_counts = _ordered_counts(r.table.column("verdict"), VERDICTS)
    secs = s.get("seconds") or {}
    ips = s.get("images_per_second")
    thr = (f"{ips:g} images/s over {secs.get('pipeline', float('nan')):g} s of pipeline time "
           f"({secs.get('total', float('nan')):g} s in total)" if ips else "not recorded")
    models = s.get("models") or json.loads((r.table.schema.metadata or {}).get(b"faceqc.models", b"[]"))
    restricted = [m for m in models if not m.get("commercial_use", True)]
    return "".join([
        '<section id="run"><h2>Run</h2>',
        '' if s else '<p class="warn">No _summary.json: this run did not finish (or is still being '
                     'written); the Parquet files found so far are shown.</p>',
        '' if not restricted else '<p class="warn" id="noncommercial">This run used models not cleared for '
        'commercial use: ' + "; ".join(f"{esc(m['id'])} ({esc(m.get('licence', ''))})" for m in restricted) +
        '. The offline-clean profile avoids them.</p>',
        f'<p><b>{n}</b> images · throughput: {esc(thr)} · profile <b>{esc(s.get("profile") or r.cfg.profile)}</b>'
        f' · faceqc {esc(s.get("faceqc_version", ""))} · finished {esc(s.get("finished_at", "–"))}</p>',
        _counts_table("status", status_counts, n, {"ok": VERDICT_COLOURS["accept"]}),
        _counts_table("verdict", verdict_counts, n, VERDICT_COLOURS),
        "<div>" + svg_stacked_bar([(k, verdict_counts.get(k, 0), VERDICT_COLOURS[k]) for k in VERDICTS]) + "</div>",
        f'<p class="sub">accept when quality ≥ {r.accept:g}, review when ≥ {r.review:g}, else reject; rows '
        f'without a usable face are rejected with their status as the reason.</p>',
        "</section>",
    ])


def _distributions_section(r: _Run) -> str:
    hist = [svg_histogram(r.quality, 0, 100, 20, "quality", "quality (0–100)", marks=r.lines(), bar_colour=r.colour,
                          width=420, height=200, note=f"{int(np.isfinite(r.quality).sum())} faces")]
    for k in COMPONENTS:
        v = _face_field(r.pf, "components", k)
        m = int(np.isfinite(v).sum())
        hist.append(svg_histogram(v, 0, 100, 20, k, "score (0–100)", note=f"{m} measured" if m else "not measured"))
    return ('<section id="distributions"><h2>Distributions</h2><p class="sub">quality of the primary face '
            'and each of its component scores; a cut bar is labelled with its count.</p>'
            f'<div class="plots">{"".join(hist)}</div></section>')


def _relations_section(r: _Run) -> str:
    rng = np.random.default_rng(0)
    ok = np.flatnonzero(np.isfinite(r.quality) & r.has_face)
    shown = ok if len(ok) <= SCATTER_MAX_POINTS else np.sort(rng.choice(ok, SCATTER_MAX_POINTS, replace=False))
    note = f"{len(shown)} of {len(ok)} faces" if len(shown) < len(ok) else f"{len(ok)} faces"
    cols = [r.colour(r.quality[i]) for i in shown]
    size_plot = svg_scatter(_face_field(r.pf, "inter_eye_px")[shown], r.quality[shown], cols, (4, 1000), (0, 100),
                            "quality vs face size", "inter-eye distance (px, log scale)", "quality", xlog=True,
                            hlines=r.lines(), xticks=(4, 12, 24, 48, 100, 250, 1000), note=note)
    yaw_plot = svg_scatter(_face_field(r.pf, "yaw")[shown], r.quality[shown], cols, (-90, 90), (0, 100), "quality vs yaw",
                           "yaw (degrees; > 0: nose towards the image left)", "quality", hlines=r.lines(),
                           xticks=(-90, -60, -40, -20, 0, 20, 40, 60, 90), note=note)
    return (f'<section id="relations"><h2>Quality against face size and yaw</h2>'
            f'<div class="plots">{size_plot}{yaw_plot}</div></section>')


def _gallery_list(r: _Run, k: int) -> list:
    """(id, title, subtitle, row indices) of every gallery: best, worst, borderline, per reason."""
    q = r.quality
    scored = np.flatnonzero(np.isfinite(q))
    out = [
        ("gallery-best", "Best", f"highest quality ({min(k, len(scored))} of {len(scored)} scored faces)",
         scored[np.argsort(-q[scored], kind="stable")][:k]),
        ("gallery-worst", "Worst", "lowest quality among images with a face", scored[np.argsort(q[scored], kind="stable")][:k]),
        ("gallery-borderline-accept", f"Borderline: near the accept threshold ({r.accept:g})",
         "closest to the line between accept and review", scored[np.argsort(np.abs(q[scored] - r.accept), kind="stable")][:k]),
        ("gallery-borderline-review", f"Borderline: near the review threshold ({r.review:g})",
         "closest to the line between review and reject", scored[np.argsort(np.abs(q[scored] - r.review), kind="stable")][:k]),
    ]
    by_reason = rows_by_reason(r.table)
    qsort = np.where(np.isfinite(q), q, -1.0)
    for j, reason in enumerate(sorted(by_reason, key=lambda x: (-len(by_reason[x]), x))):
        idx = by_reason[reason]
        idx = idx[np.argsort(qsort[idx], kind="stable")][:k]
        out.append((f"gallery-reason-{j}", f"Reason: {reason}",
                    f"{len(by_reason[reason])} images; the {len(idx)} lowest quality shown", idx))
    return out


def _galleries_section(r: _Run, thumbs: "Thumbnails", per_gallery: int, shown: list) -> str:
    galleries = _gallery_list(r, max(1, int(per_gallery)))
    # one take for every gallery: a take on a table of many chunks costs per call
    wanted = sorted({int(i) for g in galleries for i in g[3]})
    picked = dict(zip(wanted, r.table.take(pa.array(wanted, pa.int64())).to_pylist())) if wanted else {}
    html_parts = ['<section id="galleries"><h2>Galleries</h2><p class="sub">Each thumbnail shows the region '
                  'around the judged face with its box (coloured by verdict; other faces in grey) and the face\'s '
                  'component scores, lowest first. Hover a card for the full URI.</p>']
    for n, (gid, title, sub, idx) in enumerate(galleries):
        if n == 4:
            html_parts.append('<h2 id="reasons">Galleries by reason</h2>')
        html_parts.append(gallery(gid, title, sub, [picked[int(i)] for i in idx], thumbs))
        shown.append(gid)
    if len(galleries) == 4:
        html_parts.append('<h2 id="reasons">Galleries by reason</h2><p class="empty">no image has a reason</p>')
    html_parts.append("</section>")
    return "".join(html_parts)


def _settings_section(r: _Run) -> str:
    settings = {"fuse": r.fuse or r.cfg.to_dict()["fuse"], "inputs": r.summary.get("inputs"),
                "models": r.summary.get("models")}
    return ('<section id="settings"><h2>Settings</h2><details><summary>fusion settings, inputs and '
            'models of this run</summary><pre>'
            f'{esc(json.dumps(settings, indent=2, default=str))}</pre></details></section>')


NAV = [("run", "Run"), ("distributions", "Distributions"), ("relations", "Size and yaw"),
       ("gallery-best", "Best"), ("gallery-worst", "Worst"), ("gallery-borderline-accept", "Borderline"),
       ("reasons", "By reason"), ("settings", "Settings")]


def build_report(table: pa.Table, summary: Optional[dict], cfg: Config, source: str = "",
                 per_gallery: int = 12) -> Tuple[str, dict]:
    """The report's HTML and a few facts about it (rows, thumbnails, galleries)."""
    r = _Run.of(table, summary, cfg)
    thumbs = Thumbnails(cfg)
    shown: list = []
    from .clip_report import clip_section

    clips = clip_section(table, r.summary, cfg, source, thumbs, per_gallery)  # first: it gives clips' thumbnails
    body = [_run_section(r), _distributions_section(r), _relations_section(r),
            _galleries_section(r, thumbs, per_gallery, shown), clips, _settings_section(r)]
    where = source or r.summary.get("output", "")
    page = "".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        f"<title>{esc('faceqc report — ' + where)}</title><style>{CSS}</style></head><body>",
        f'<header><h1>faceqc report</h1><div class="meta">{esc(where)} · generated '
        f'{esc(time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()))}</div></header>',
        "<nav>" + "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t in NAV + ([("clips", "Clips")] if clips else []))
        + "</nav>",
        "<main>", *body, "</main></body></html>\n",
    ])
    return page, {"rows": table.num_rows, "galleries": shown + (["clips"] if clips else []), "thumbnails": sum(1 for v in thumbs.cache.values() if v[0]),
                  "bytes": len(page.encode())}


def write_report(out: str, html_path: str, cfg: Optional[Config] = None, per_gallery: int = 12) -> dict:
    """Read the run in ``out`` and write its report to ``html_path``; return facts about it."""
    table, summary = read_results(out, cfg.input.storage_options if cfg else None)
    if cfg is None:
        cfg = load_config(profile=run_profile(table, summary))
    page, facts = build_report(table, summary, cfg, source=out, per_gallery=per_gallery)
    with errors_as(OutputError, f"cannot write {html_path}"):
        write_bytes_atomic(html_path, page.encode("utf-8"))
    facts["path"] = html_path
    return facts
