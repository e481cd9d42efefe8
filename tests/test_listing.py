"""The source: expanding local inputs into listing rows.  Unit tests (buckets: test_s3.py)."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import InputError
from pipeline.io.listing import (
    ETAG,
    entries_table,
    expand_inputs,
    list_table,
    read_manifest,
)


def _tree(root):
    for rel in ("a.jpg", "b.txt", "sub/c.JPG", "sub/deeper/d.png", "photo [1].jpg", "photo 1.jpg"):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * 3)
    os.symlink("does-not-exist.jpg", root / "dangling.jpg")
    return root


def test_walks_are_recursive_and_keep_every_file(tmp_path):
    root = _tree(tmp_path / "t")
    got = [os.path.relpath(e.uri, root) for e in expand_inputs([str(root)])]
    assert got == [os.path.relpath(e.uri, root) for e in expand_inputs([str(root)])]  # deterministic order
    assert set(got) == {"a.jpg", "b.txt", "sub/c.JPG", "sub/deeper/d.png", "photo [1].jpg", "photo 1.jpg",
                        "dangling.jpg"}  # a broken link is a row too (read_error later)
    e = {os.path.relpath(x.uri, root): x for x in expand_inputs([str(root)])}
    assert e["a.jpg"].size == 3 and e["a.jpg"].mtime > 0 and e["a.jpg"].etag is None


def test_extension_filter_counts_what_walks_skip(tmp_path):
    root = _tree(tmp_path / "t")
    stats = {}
    got = expand_inputs([str(root), str(root / "b.txt")], extensions=[".jpg"], stats=stats)
    names = sorted(os.path.relpath(e.uri, root) for e in got)
    # an explicitly named file is always kept; suffixes match case-insensitively
    assert names == ["a.jpg", "b.txt", "dangling.jpg", "photo 1.jpg", "photo [1].jpg", "sub/c.JPG"]
    assert stats["skipped_by_extension"] == 2  # b.txt (in the walk) and d.png


def test_globs_names_and_duplicates(tmp_path):
    root = _tree(tmp_path / "t")
    lit = str(root / "photo [1].jpg")
    assert [e.uri for e in expand_inputs([lit])] == [lit]  # an existing name is taken literally
    got = expand_inputs([str(root / "sub" / "**" / "*.png"), str(root / "sub" / "deeper" / "d.png")])
    assert [os.path.basename(e.uri) for e in got] == ["d.png"]  # named twice, listed once
    with pytest.raises(InputError, match="no files match"):
        expand_inputs([str(root / "*.gif")])
    with pytest.raises(InputError, match="input not found"):
        expand_inputs([str(root / "missing.jpg")])


def test_manifests_in_every_format_carry_their_columns(tmp_path):
    (tmp_path / "imgs").mkdir()
    for n in ("1.jpg", "2.jpg"):
        (tmp_path / "imgs" / n).write_bytes(b"x")
    (tmp_path / "m.csv").write_text("path,label,quality\nimgs/1.jpg,cat,3\nimgs/2.jpg,dog,4\n")
    (tmp_path / "m.jsonl").write_text(json.dumps({"uri": "imgs/1.jpg", "score": 0.5}) + "\n\n")
    (tmp_path / "m.lst").write_text("# comment\nimgs/2.jpg\n\n")
    pq.write_table(pa.table({"uri": ["imgs/1.jpg"], "team": ["a"]}), tmp_path / "m.parquet")
    csv = read_manifest(str(tmp_path / "m.csv"))
    assert [os.path.basename(e.uri) for e in csv] == ["1.jpg", "2.jpg"]  # relative to the manifest
    assert csv[0].extra == {"label": "cat", "quality": 3}
    t = entries_table(csv)
    # a manifest column named like an output column is renamed, not shadowing ours
    assert "extra.label" in t.column_names and "extra.manifest_quality" in t.column_names
    assert read_manifest(str(tmp_path / "m.jsonl"))[0].extra == {"score": 0.5}
    assert [os.path.basename(e.uri) for e in read_manifest(str(tmp_path / "m.lst"))] == ["2.jpg"]
    assert read_manifest(str(tmp_path / "m.parquet"))[0].extra == {"team": "a"}
    (tmp_path / "bad.csv").write_text("name\nx\n")
    with pytest.raises(InputError, match="no 'uri' or 'path' column"):
        read_manifest(str(tmp_path / "bad.csv"))
    (tmp_path / "bad.jsonl").write_text('{"x": 1}\n')
    with pytest.raises(InputError, match="line 1: no 'uri' or 'path'"):
        read_manifest(str(tmp_path / "bad.jsonl"))


def test_list_table_streams_a_folder_in_chunks(tmp_path):
    root = _tree(tmp_path / "t")
    stats: dict = {}
    t = list_table(str(root), extensions=[".jpg", ".png"], stats=stats, chunk=2)
    assert t.num_rows == 6 and stats["skipped_by_extension"] == 1
    assert t.column_names[:3] == ["uri", "size", "mtime"] and ETAG in t.column_names
    assert t.column("uri").to_pylist() == [e.uri for e in expand_inputs([str(root)], extensions=[".jpg", ".png"])]
