"""`faceqc` command line: score, explain, demo, bench, report, calibrate, nightly, models, export."""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import __version__
from .config import load_config
from .errors import ConfigError, FaceqcError, InputError, RowError


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
    from .run import run, summary_text

    cfg = _config(args)
    summary = run(args.sources, args.out, cfg, limit=args.limit, address=args.address,
                  overwrite=args.overwrite, progress=not args.no_progress)
    print(summary_text(summary))
    ok_like = sum(v for k, v in summary["status_counts"].items() if k in ("ok", "no_face"))
    if summary.get("error"):
        return 1
    if summary["rows"] and ok_like == 0:
        print("every input failed to read or decode", file=sys.stderr)
        return 1
    return 0


def cmd_explain(args) -> int:
    from .executor import LocalExecutor
    from .images import decode_image, read_file
    from .io.listing import expand_inputs
    from .registry import check_installed
    from .tools.explain import annotate, explain_text

    cfg = _config(args)
    check_installed(cfg)
    entries = expand_inputs([args.image], cfg.input.storage_options)
    if len(entries) != 1:
        raise InputError(f"explain takes one image; {args.image} holds {len(entries)} files")
    from .video.decode import is_video

    if is_video(entries[0].uri, cfg):  # a clip: shots, tracks, per-frame quality (pipeline/tools/clip_explain.py)
        from .tools.clip_explain import cmd_explain_clip

        return cmd_explain_clip(args, cfg, entries[0])
    row = LocalExecutor(cfg).score_entries(entries).to_pylist()[0]
    if args.json:
        print(json.dumps(row, indent=2, default=str))
    else:
        print(explain_text(row, cfg))
    if args.save:
        from PIL import Image

        try:
            img = decode_image(read_file(entries[0].uri, cfg.input.storage_options, cfg.decode.max_bytes),
                               cfg.decode.max_pixels)
        except RowError as e:
            print(f"cannot annotate: {e}", file=sys.stderr)
            return 1
        Image.fromarray(annotate(img, row)).save(args.save)
        print(f"annotated image written to {args.save}")
    return 0 if row["status"] in ("ok", "no_face") else 1


def cmd_demo(args) -> int:
    from .run import run, summary_text
    from .tools.demo import make_demo_set

    cfg = _config(args)
    paths = make_demo_set(args.data)
    print(f"demo set: {len(paths)} images from packaged photos in {args.data}")
    summary = run([args.data], args.out, cfg, overwrite=True, progress=not args.no_progress)
    print(summary_text(summary))
    import pyarrow.parquet as pq

    t = pq.read_table(args.out, columns=["uri", "status", "quality", "verdict", "reasons"]).to_pylist()
    t.sort(key=lambda r: -(r["quality"] if r["quality"] is not None else -1))
    print(f"\n{'quality':>7s}  {'verdict':7s}  {'image':32s} reasons")
    for r in t:
        q = f"{r['quality']:.1f}" if r["quality"] is not None else "-"
        print(f"{q:>7s}  {r['verdict']:7s}  {os.path.basename(r['uri'])[:32]:32s} {', '.join(r['reasons'])}")
    return 0


def cmd_bench(args) -> int:
    from .tools.bench import bench

    cfg = _config(args)
    bench(cfg, args.n, args.size, args.workdir, loop=not args.no_loop, loop_n=args.loop_n)
    return 0


def cmd_report(args) -> int:
    from .tools.report import write_report

    cfg = _config(args) if (args.config or args.profile or args.storage_options) else None
    facts = write_report(args.out, args.html, cfg, per_gallery=args.per_gallery)
    print(f"report written to {facts['path']}: {facts['rows']} images, {facts['thumbnails']} thumbnails, "
          f"{len(facts['galleries'])} galleries, {facts['bytes'] / 1e6:.1f} MB")
    return 0


def cmd_calibrate(args) -> int:
    from .tools.calibrate import calibrate, config_text, format_text, write_config

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
    from .tools.nightly import nightly, summary_text

    cfg = _config(args)
    summary = nightly(args.source, args.out, cfg, address=args.address, progress=not args.no_progress,
                      keep_scores=args.keep_scores)
    print(summary_text(summary))
    return 0


def cmd_export(args) -> int:
    from .tools.export import export_faces

    cfg = _config(args)
    verdicts = [v.strip() for v in args.verdict.split(",") if v.strip()]
    bad = [v for v in verdicts if v not in ("accept", "review", "reject")]
    if bad or not verdicts:
        raise InputError(f"--verdict {args.verdict!r}: use accept, review and/or reject, comma-separated")
    res = export_faces(args.out, args.faces, cfg, size=args.size, verdicts=verdicts)
    print(f"exported {res['crops']} face crops of {res['size']} px ({res['images']} from images, "
          f"{res['frames']} from clip tracks) to {args.faces}; manifest {res['manifest']}"
          + (f"; {res['failed']} could not be read again (see the manifest's error column)" if res["failed"] else ""))
    return 0


def cmd_models(args) -> int:
    from . import modelstore
    from .models import CATALOGUE

    so = json.loads(args.storage_options) if getattr(args, "storage_options", None) else None
    if args.action == "list":
        print(f"{'model':26s} {'task':30s} {'commercial':10s} {'size':>10s}  licence / source")
        for info in CATALOGUE.values():
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

    e = sub.add_parser("explain", help="score one image or video clip without Ray and explain every component")
    e.add_argument("image", help="an image, or a video clip (shots, tracks and per-frame quality)")
    e.add_argument("--save", metavar="PNG", help="write an annotated copy (boxes, landmarks, pose axes, scores); "
                                                  "for a clip, its timeline (quality per track over time, shot cuts)")
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
    n.add_argument("--keep-scores", action="store_true",
                   help="when settings or models changed since the last run, keep the stored scores (by default "
                        "unchanged objects are rescored, or only re-fused when just fusion settings changed)")
    _add_config_args(n)
    n.set_defaults(func=cmd_nightly)
    _add_models_parser(sub)
    _add_export_parser(sub)
    return p


def _add_export_parser(sub) -> None:
    x = sub.add_parser("export", help="write FFHQ-aligned face crops of accepted images and of the best "
                                      "frames of accepted clip tracks, with a manifest")
    x.add_argument("out", metavar="DST", help="a 'faceqc score --out' directory or URI")
    x.add_argument("--faces", required=True, metavar="OUT", help="folder or bucket prefix for the crops")
    x.add_argument("--size", type=int, help="crop side in pixels (default: export.size, 512)")
    x.add_argument("--verdict", default="accept", help="comma-separated verdicts to export (default accept)")
    _add_config_args(x)
    x.set_defaults(func=cmd_export)


def _add_models_parser(sub) -> None:
    m = sub.add_parser("models", help="list, pull or verify models (cache, bucket mirrors for air-gapped clusters)")
    m.add_argument("action", choices=["list", "pull", "verify"])
    m.add_argument("names", nargs="*", help="registry names or URIs (local path, s3://, gs://, https://)")
    m.add_argument("--to", help="pull: copy to this directory or bucket prefix instead of the local cache")
    m.add_argument("--storage-options", help="JSON of fsspec storage options")
    m.set_defaults(func=cmd_models)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FaceqcError as e:
        print(f"faceqc: error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
