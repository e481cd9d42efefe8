"""`faceqc` command line: score, explain, demo, bench, report, calibrate, nightly."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from . import __version__
from .config import ConfigError, load_config


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML or JSON file overriding the profile's settings")
    p.add_argument("--profile", help="named settings preset (default: offline)")
    p.add_argument("--storage-options", help="JSON of fsspec storage options (endpoint, credentials, ...), "
                                             "or @FILE to read that JSON from a file (keeps secrets off command lines)")


def _config(args):
    overrides = {}
    if getattr(args, "storage_options", None):
        text = args.storage_options
        if text.startswith("@"):
            try:
                with open(text[1:], encoding="utf-8") as f:
                    text = f.read()
            except OSError as e:
                raise ConfigError(f"--storage-options file {text[1:]}: {e.strerror or e}") from e
        try:
            overrides["input"] = {"storage_options": json.loads(text)}
        except json.JSONDecodeError as e:  # the message quotes no part of the (secret) text
            raise ConfigError(f"--storage-options is not valid JSON (line {e.lineno}, column {e.colno})") from None
    return load_config(args.config, args.profile, overrides)


def cmd_score(args) -> int:
    from .runner import run, summary_table

    cfg = _config(args)
    summary = run(args.sources, args.out, cfg, limit=args.limit, address=args.address,
                  overwrite=args.overwrite, progress=not args.no_progress)
    print(summary_table(summary))
    ok_like = sum(v for k, v in summary["status_counts"].items() if k in ("ok", "no_face"))
    if summary.get("error"):
        return 1
    if summary["rows"] and ok_like == 0:
        print("every input failed to read or decode", file=sys.stderr)
        return 1
    return 0


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def explain_text(row: dict, cfg) -> str:
    from .stages.fuse import face_raw

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
                       f["inter_eye_px"])
        raw.update(yaw=f["yaw"], pitch=f["pitch"], roll=f["roll"])
        lines.append(f"      {'component':16s} {'raw':>9s} {'score':>6s}  curve")
        for name, score in f["components"].items():
            curve = cfg.fuse.curves.get(name)
            desc = (f"{curve.direction} start {curve.start:g} full {curve.full:g} w {curve.weight:g}" if curve
                    else f"OFIQ cos² w {cfg.fuse.pose_weights.get(name, 1.0):g}")
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


def cmd_explain(args) -> int:
    from .local import LocalPipeline
    from .stages.decode import DecodeFailure, decode_image, read_file
    from .stages.listing import InputError, expand_inputs

    cfg = _config(args)
    entries = expand_inputs([args.image], cfg.input.storage_options)
    if len(entries) != 1:
        raise InputError(f"explain takes one image; {args.image} holds {len(entries)} files")
    lp = LocalPipeline(cfg)
    row = lp.score_entries(entries).to_pylist()[0]
    if args.json:
        print(json.dumps(row, indent=2, default=str))
    else:
        print(explain_text(row, cfg))
    if args.save:
        from PIL import Image

        try:
            img = decode_image(read_file(entries[0].uri, cfg), cfg.decode.max_pixels)
        except DecodeFailure as e:
            print(f"cannot annotate: {e}", file=sys.stderr)
            return 1
        Image.fromarray(annotate(img, row)).save(args.save)
        print(f"annotated image written to {args.save}")
    return 0 if row["status"] in ("ok", "no_face") else 1


def cmd_demo(args) -> int:
    from .demo import make_demo_set
    from .runner import run, summary_table

    cfg = _config(args)
    paths = make_demo_set(args.data)
    print(f"demo set: {len(paths)} images from packaged photos in {args.data}")
    summary = run([args.data], args.out, cfg, overwrite=True, progress=not args.no_progress)
    print(summary_table(summary))
    import pyarrow.parquet as pq

    t = pq.read_table(args.out, columns=["uri", "status", "quality", "verdict", "reasons"]).to_pylist()
    t.sort(key=lambda r: -(r["quality"] if r["quality"] is not None else -1))
    print(f"\n{'quality':>7s}  {'verdict':7s}  {'image':32s} reasons")
    for r in t:
        q = f"{r['quality']:.1f}" if r["quality"] is not None else "-"
        print(f"{q:>7s}  {r['verdict']:7s}  {os.path.basename(r['uri'])[:32]:32s} {', '.join(r['reasons'])}")
    return 0


def cmd_bench(args) -> int:
    from .bench import bench

    cfg = _config(args)
    bench(cfg, args.n, args.size, args.workdir, loop=not args.no_loop, loop_n=args.loop_n)
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    cfg = _config(args) if (args.config or args.profile or args.storage_options) else None
    facts = write_report(args.out, args.html, cfg, per_gallery=args.per_gallery)
    print(f"report written to {facts['path']}: {facts['rows']} images, {facts['thumbnails']} thumbnails, "
          f"{len(facts['galleries'])} galleries, {facts['bytes'] / 1e6:.1f} MB")
    return 0


def cmd_calibrate(args) -> int:
    from .calibrate import calibrate, config_text, format_text, write_config

    cfg = _config(args) if (args.config or args.profile) else None
    so = _config(args).input.storage_options if args.storage_options else None
    result = calibrate(args.labels, args.results, cfg, k=args.folds, seed=args.seed, storage_options=so)
    print(format_text(result))
    if args.write_config:
        write_config(result, args.write_config)
        print(f"config written to {args.write_config}: faceqc score SRC --out DST --config {args.write_config}")
    else:
        print("\nfitted settings (save them with --write-config FILE):\n" + config_text(result))
    return 0


def cmd_nightly(args) -> int:
    from .nightly import nightly, summary_text

    cfg = _config(args)
    summary = nightly(args.source, args.out, cfg, address=args.address, progress=not args.no_progress)
    print(summary_text(summary))
    return 0


def cmd_models(args) -> int:
    from . import modelstore
    from .models import REGISTRY

    so = json.loads(args.storage_options) if getattr(args, "storage_options", None) else None
    if args.action == "list":
        print(f"{'model':26s} {'task':30s} {'commercial':10s} {'size':>10s}  licence / source")
        for info in REGISTRY.values():
            d = modelstore.describe(info)
            size = f"{d['size'] / 1e6:.1f} MB" if d["size"] else ("-" if not info.uri else "not cached")
            print(f"{info.id:26s} {info.task:30s} {'yes' if info.commercial_use else 'NO':10s} {size:>10s}  "
                  f"{info.licence}\n{'':80s}{info.source}")
        return 0
    if not args.names:
        print("faceqc models: name the models (registry names or URIs)", file=sys.stderr)
        return 2
    for ref in args.names:
        if args.action == "pull":
            where = modelstore.pull(ref, to=args.to, storage_options=so)
            print(f"{ref}: {where}")
        else:  # verify
            path = modelstore.resolve(ref, storage_options=so)
            print(f"{ref}: ok  sha256 {modelstore.sha256_file(path)}  {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="faceqc", description="Score the quality of face images at scale.")
    p.add_argument("--version", action="version", version=f"faceqc {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("score", help="score images into a Parquet dataset (Ray Data pipeline)")
    s.add_argument("sources", nargs="+", metavar="SRC",
                   help="files, directories, globs or manifests (.parquet/.csv/.jsonl/.lst); local or fsspec URIs")
    s.add_argument("--out", required=True, help="output directory or URI")
    s.add_argument("--limit", type=int, help="score only the first N listed files")
    s.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    s.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    s.add_argument("--no-progress", action="store_true", help="hide Ray Data progress bars")
    _add_config_args(s)
    s.set_defaults(func=cmd_score)

    e = sub.add_parser("explain", help="score one image without Ray and explain every component")
    e.add_argument("image")
    e.add_argument("--save", metavar="PNG", help="write an annotated copy (boxes, landmarks, pose axes, scores)")
    e.add_argument("--json", action="store_true", help="print the output row as JSON")
    _add_config_args(e)
    e.set_defaults(func=cmd_explain)

    d = sub.add_parser("demo", help="build a demo set from packaged photos and score it")
    d.add_argument("--data", default="demo_data/images", help="where to write the demo images")
    d.add_argument("--out", default="demo_data/scores", help="where to write the scores")
    d.add_argument("--no-progress", action="store_true")
    _add_config_args(d)
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser("bench", help="throughput and memory benchmark: pipeline vs single-process loop")
    b.add_argument("-n", type=int, default=2000, help="number of generated images")
    b.add_argument("--size", type=int, default=256, help="image side in pixels")
    b.add_argument("--workdir", default="/tmp/faceqc-bench")
    b.add_argument("--no-loop", action="store_true", help="skip the single-process baseline")
    b.add_argument("--loop-n", type=int, help="images for the baseline loop (default: min(n, 2000))")
    _add_config_args(b)
    b.set_defaults(func=cmd_bench)

    r = sub.add_parser("report", help="one static HTML file showing what a run decided (thumbnails, plots, galleries)")
    r.add_argument("out", metavar="OUT", help="a 'faceqc score --out' directory or URI")
    r.add_argument("--html", required=True, metavar="FILE", help="where to write the report")
    r.add_argument("--per-gallery", type=int, default=12, help="thumbnails per gallery (default 12)")
    _add_config_args(r)
    r.set_defaults(func=cmd_report)

    c = sub.add_parser("calibrate", help="fit fusion weights and verdict thresholds to human labels")
    c.add_argument("labels", metavar="LABELS", help="CSV with a 'uri' column and a label (accept/reject or a number)")
    c.add_argument("--results", required=True, metavar="OUT", help="the 'faceqc score --out' run the labels refer to")
    c.add_argument("--write-config", metavar="FILE", help="write the fitted settings as a YAML config for 'score --config'")
    c.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    c.add_argument("--seed", type=int, default=0, help="seed of the fold assignment")
    _add_config_args(c)
    c.set_defaults(func=cmd_calibrate)

    n = sub.add_parser("nightly", help="incremental run: score only objects new or changed since the last run")
    n.add_argument("--source", required=True, help="the prefix (or folder) to clean, e.g. s3://bucket/photos/")
    n.add_argument("--out", required=True, help="where runs, the latest view and the accept/reject lists live")
    n.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    n.add_argument("--no-progress", action="store_true", help="hide Ray Data progress bars")
    _add_config_args(n)
    n.set_defaults(func=cmd_nightly)
    _add_models_parser(sub)
    return p


def _add_models_parser(sub) -> None:
    m = sub.add_parser("models", help="list, pull or verify models (cache, bucket mirrors for air-gapped clusters)")
    m.add_argument("action", choices=["list", "pull", "verify"])
    m.add_argument("names", nargs="*", help="registry names or URIs (local path, s3://, gs://, https://)")
    m.add_argument("--to", help="pull: copy to this directory or bucket prefix instead of the local cache")
    m.add_argument("--storage-options", help="JSON of fsspec storage options")
    m.set_defaults(func=cmd_models)


def main(argv=None) -> int:
    from .models import ModelError
    from .runner import OutputError
    from .stages.listing import InputError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, InputError, OutputError, ModelError) as e:
        print(f"faceqc: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
