"""Video clips, in process (no Ray): recognition by content, decoding (sampling, shots, rotation,
variable frame rate, bad files), face tracks and the clip's verdict, the decode stage's bounded
generator, crop names and the timeline.  Every clip is made here from the packaged photos and
encoded with PyAV (tests/support/videos.py); the Ray runs (resume, nightly, DuckDB, export) are
in tests/test_video_runs.py."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.executor import LocalExecutor
from pipeline.io.listing import entries_table, expand_inputs
from pipeline.tools.clip_explain import explain_clip_text, timeline_png
from pipeline.tools.export import crop_name
from pipeline.video import CLIP_END, sniff
from tests.support import videos as V

pytest.importorskip("av")


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("clips"))
    paths = V.build_clips(root)
    short = V.small_scene(30)
    paths["trunc_mkv"] = V.truncate(V.write_video(os.path.join(root, "full.mkv"), short), os.path.join(root, "trunc.mkv"))
    paths["trunc_mp4"] = V.truncate(V.write_video(os.path.join(root, "full.mp4"), short), os.path.join(root, "trunc.mp4"))
    paths["audio"] = V.write_audio(os.path.join(root, "audio_only.m4a"))
    paths["badcodec"] = V.patch_codec(os.path.join(root, "full.mkv"), os.path.join(root, "badcodec.mkv"))
    times = np.cumsum([0.0] + [0.05 if i % 3 else 0.3 for i in range(29)])  # bursts and pauses: 3.9 s
    paths["vfr"] = V.write_video(os.path.join(root, "vfr.mkv"), short, times=times)
    paths["empty"] = os.path.join(root, "empty.mp4")
    open(paths["empty"], "wb").close()
    with open(os.path.join(root, "full.mp4"), "rb") as f:
        data = f.read()
    paths["named_jpg"] = os.path.join(root, "looks_like_a_photo.jpg")  # an mp4 named like a photo
    with open(paths["named_jpg"], "wb") as f:
        f.write(data)
    os.remove(os.path.join(root, "full.mp4"))
    os.remove(os.path.join(root, "full.mkv"))
    return paths


@pytest.fixture(scope="module")
def fast_clips(clip_files):
    """Every clip scored in process with the offline-fast profile: {role: Clip}."""
    cfg = load_config(profile="offline-fast")
    ex = LocalExecutor(cfg)
    clips_only = {role: p for role, p in clip_files.items() if role != "empty"}
    table = entries_table(expand_inputs(list(clips_only.values())))
    by_uri = {}
    for rows, clips in ex.iter_clips(table, batch_size=4):
        assert rows is None  # nothing here is an image
        for c in clips:
            by_uri[c.uri] = c
    return {role: by_uri[p] for role, p in clips_only.items()}


def test_sniff_by_content():
    assert sniff(b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00") == "mp4"
    assert sniff(b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00") == "mp4"
    assert sniff(b"\x00\x00\x00\x08wide\x00\x00\x00\x00mdat") == "mp4"
    assert sniff(b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01") == "mkv"
    assert sniff(b"RIFF\x10\x00\x00\x00AVI LIST") == "avi"
    assert sniff(b"RIFF\x10\x00\x00\x00WEBPVP8 ") is None  # a WebP image
    assert sniff(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00") is None  # HEIF: a still image
    assert sniff(b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00") is None
    assert sniff(b"\xff\xd8\xff\xe0\x00\x10JFIF") is None and sniff(b"") is None


def test_config_section_is_typed():
    cfg = load_config(overrides={"video": {"fps": 4, "rules": {"coverage": {"start": 0.9}}}})
    assert cfg.video.fps == 4 and cfg.video.rules["coverage"].start == 0.9 and cfg.video.rules["coverage"].full == 0.3
    with pytest.raises(ConfigError, match="unknown clip rule 'wobble'"):
        load_config(overrides={"video": {"rules": {"wobble": {"direction": "high", "start": 1, "full": 2}}}})
    with pytest.raises(ConfigError, match="video.fps"):
        load_config(overrides={"video": {"fps": 0}})
    with pytest.raises(ConfigError, match="unknown setting 'video.fsp'"):
        load_config(overrides={"video": {"fsp": 2}})


def test_shots_and_tracks_of_a_cut(fast_clips):
    c = fast_clips["cut"]
    assert c.row["status"] == "ok" and c.row["media"] == "video"
    assert (c.row["width"], c.row["height"]) == (320, 240)
    assert c.row["frames"] == 12 and c.row["shots"] == 2 and c.row["tracks"] == 2
    assert len(c.facts["cuts"]) == 1 and abs(c.facts["cuts"][0] - 4.0) <= 0.11
    frames = c.frames.to_pylist()
    assert [f["shot"] for f in frames] == [0] * 8 + [1] * 4
    assert [f["t"] for f in frames] == pytest.approx([0.5 * i for i in range(12)], abs=1e-3)
    tracks = {t["track"]: t for t in c.tracks.to_pylist()}
    assert tracks[0]["shot"] == 0 and tracks[0]["frames"] == 8 and tracks[0]["primary"]
    assert tracks[1]["shot"] == 1 and tracks[1]["frames"] == 4 and not tracks[1]["primary"]
    assert {f["track"] for f in frames[:8]} == {0} and {f["track"] for f in frames[8:]} == {1}
    # the clip is judged on its primary track: 8 of 12 frames is below the coverage rule's start
    assert "low_coverage" in c.row["reasons"]
    assert c.row["quality"] < tracks[0]["quality"]
    assert c.row["quality_min"] == pytest.approx(tracks[0]["quality_min"])
    # its faces are those of the primary track's best frame
    best = frames[[f["t"] for f in frames].index(tracks[0]["best_t"])]
    assert c.row["faces"][c.row["primary_face"]]["quality"] == pytest.approx(best["quality"])


def test_blurred_stretch_scores_lower_in_the_same_track(fast_clips):
    c = fast_clips["blur"]
    assert c.row["shots"] == 1
    frames = c.frames.to_pylist()
    primary = next(t for t in c.tracks.to_pylist() if t["primary"])
    mine = [f for f in frames if f["track"] == primary["track"]]
    blurred = [f["quality"] for f in mine if 3.0 <= f["t"] < 5.0]
    sharp = [f["quality"] for f in mine if f["t"] < 2.5 or f["t"] >= 5.5]
    assert len(blurred) >= 2 and len(sharp) >= 8
    assert max(blurred) < min(sharp) - 30
    assert primary["quality_min"] == pytest.approx(min(blurred))
    assert "low_min_quality" in c.row["reasons"] and c.row["verdict"] == "reject"
    assert primary["quality_p10"] <= np.percentile([f["quality"] for f in mine], 50)


def test_no_face_stretch_and_a_second_face(fast_clips):
    c = fast_clips["enter"]
    frames = c.frames.to_pylist()
    assert c.row["shots"] == 1
    assert all(f["num_faces"] == 0 and f["track"] is None for f in frames if f["t"] < 2.0)
    assert any(f["num_faces"] == 2 for f in frames if f["t"] >= 6.0)
    tracks = c.tracks.to_pylist()
    assert len(tracks) == 2, tracks
    second = next(t for t in tracks if not t["primary"])
    assert second["start_s"] >= 5.0
    assert {"low_coverage", "multiple_faces"} <= set(c.row["reasons"])
    assert c.judgement["raw"]["coverage"] < 0.8


def test_rotation_metadata_is_applied(fast_clips):
    c = fast_clips["rotated"]
    assert c.facts["rotation"] == 90
    assert (c.row["width"], c.row["height"]) == (240, 320)  # upright portrait
    frames = c.frames.to_pylist()
    assert all(f["num_faces"] == 1 for f in frames)  # an upright face; sideways HOG finds none
    assert c.row["tracks"] == 1


def test_bad_videos_get_a_status(fast_clips):
    t = fast_clips["trunc_mkv"]
    assert t.row["status"] == "ok" and "truncated" in t.row["reasons"] and t.row["verdict"] == "reject"
    assert t.row["error"] and 0 < t.row["frames"] < 6
    for role, status, words in (("trunc_mp4", "decode_error", "not a readable video"),
                                ("audio", "decode_error", "no video stream"),
                                ("badcodec", "decode_error", "unsupported video codec")):
        r = fast_clips[role].row
        assert r["status"] == status and words in r["error"], (role, r["error"])
        assert r["reasons"] == [status] and r["verdict"] == "reject" and r["quality"] is None
        assert r["media"] == "video" and r["frames"] == 0 and r["faces"] == []


def test_empty_file_and_a_video_named_like_a_photo(clip_files, fast_clips):
    # an empty .mp4 has no magic bytes: an empty file, decode_error (images' path)
    cfg = load_config(profile="offline-fast")
    row = LocalExecutor(cfg).score_entries(expand_inputs([clip_files["empty"]])).to_pylist()[0]
    assert row["status"] == "decode_error" and "empty" in row["error"] and row["media"] == "image"
    # the content decides: an mp4 named .jpg is a clip
    r = fast_clips["named_jpg"].row
    assert r["media"] == "video" and r["status"] == "ok" and r["frames"] == 6


def test_variable_frame_rate_samples_by_time(fast_clips):
    c = fast_clips["vfr"]
    assert c.facts["vfr"] is True
    ts = [f["t"] for f in c.frames.to_pylist()]
    # frames come in bursts of 50 ms and pauses of 300 ms: sampling by time, never by count
    gaps = np.diff(ts)
    assert len(ts) >= 7 and gaps.min() >= 0.5 - 0.3 - 1e-6 and gaps.max() <= 0.5 + 0.3 + 1e-6
    assert abs(np.mean(gaps) - 0.5) < 0.1


def test_guards_give_too_large(clip_files):
    for over, words in (({"max_duration_s": 1.0}, "max_duration_s"), ({"max_pixels": 1000}, "max_pixels")):
        cfg = load_config(profile="offline-fast", overrides={"video": over})
        row = LocalExecutor(cfg).score_entries(expand_inputs([clip_files["cut"]])).to_pylist()[0]
        assert row["status"] == "too_large" and words in row["error"] and row["media"] == "video"


def test_decode_stage_streams_bounded_batches(clip_files):
    """A clip becomes batches of at most decode.resources.batch_size frames, then one end row;
    images in the same batch come first, unchanged."""
    from PIL import Image

    from pipeline.stages.decode import DecodeStage
    from pipeline.tools import samples
    from tests.support.corpus import _write, jpeg_bytes

    d = os.path.dirname(clip_files["cut"])
    img = _write(d, "photo.jpg", jpeg_bytes(Image.fromarray(samples.astronaut())))
    cfg = load_config(overrides={"decode": {"resources": {"batch_size": 5}}})
    st = DecodeStage(cfg)
    st.setup()
    uris = [clip_files["blur"], img]
    out = st.process({"uri": np.array(uris, dtype=object), "size": np.array([1, 2]), "mtime": np.array([0.0, 0.0]),
                      "extra.etag": np.array(["e1", "e2"], dtype=object)})
    batches = list(out)
    assert list(batches[0]["uri"]) == [img] and batches[0]["video.media"][0] == "image"
    clip = batches[1:]
    assert all(len(b["uri"]) <= 5 for b in clip) and len(clip) == 4  # 16 frames + the end row in 5s
    status = [s for b in clip for s in b["status"]]
    assert status.count(CLIP_END) == 1 and status[-1] == CLIP_END and status.count("ok") == 16
    assert all(set(b) == set(batches[0]) for b in clip)  # one schema for every batch
    assert all(b["extra.etag"][0] == "e1" for b in clip)  # the listing's columns ride along
    assert clip[0]["image"][0].shape == (240, 320, 3)


def test_a_frame_lost_to_an_error_mid_clip_still_ends_the_clip(clip_files, monkeypatch):
    """A sampled frame waits one decoded frame (for shot detection) before it is handed on; an
    error other than FFmpeg's in that moment loses it.  The clip's end row then announces the
    frames really handed on, so the clip is assembled (one row, truncated) instead of waiting."""
    import json

    from pipeline.stages.decode import DecodeStage
    from pipeline.video import decode as vd

    calls = {"sampled": 0, "armed": False, "raised": 0}
    real_median, real_rotate = vd.statistics.median, vd._rotate

    def rotate(rgb, rot):  # every sampled frame passes here; arm the failure at the third
        calls["sampled"] += 1
        calls["armed"] = calls["sampled"] == 3
        return real_rotate(rgb, rot)

    def failing_median(xs):  # shot detection's median: the next decoded frame, the third held
        if calls["armed"]:
            calls["raised"] += 1
            raise MemoryError("Could not allocate SwsContext")
        return real_median(xs)

    monkeypatch.setattr(vd, "_rotate", rotate)
    monkeypatch.setattr(vd.statistics, "median", failing_median)
    cfg = load_config(overrides={"decode": {"resources": {"batch_size": 5}}})
    st = DecodeStage(cfg)
    st.setup()
    out = st.process({"uri": np.array([clip_files["blur"]], dtype=object), "size": np.array([1]),
                      "mtime": np.array([0.0]), "extra.etag": np.array(["e1"], dtype=object)})
    rows = [(b["status"][i], b) for b in out for i in range(len(b["uri"]))]
    frames = sum(1 for st_, _ in rows if st_ == "ok")
    ends = [b for st_, b in rows if st_ == CLIP_END]
    assert calls["raised"] == 1 and len(ends) == 1 and frames == 2  # the third was lost
    facts = json.loads(ends[0]["video.facts"][-1])
    assert facts["frames"] == frames and facts["truncated"] and "MemoryError" in facts["error"]


@pytest.mark.slow
def test_identity_change_with_embeddings(tmp_path):
    """The offline profile embeds the primary face (dlib): a cut to another person is an identity
    change, a cut to the same person (mirrored, framed closer) is not."""
    ast = V.astronaut()
    same = V.move(ast, 40, (250, 150, 330), (268, 155, 290)) + \
        V.move(np.ascontiguousarray(ast[:, ::-1]), 20, (250, 150, 300), (255, 150, 290))
    paths = [V.write_video(str(tmp_path / "other.mp4"), V.cut_scene()), V.write_video(str(tmp_path / "same.mp4"), same)]
    cfg = load_config()
    got = {}
    for _, clips in LocalExecutor(cfg).iter_clips(entries_table(expand_inputs(paths))):
        for c in clips:
            got[os.path.basename(c.uri)] = c
    other, same = got["other.mp4"], got["same.mp4"]
    assert other.row["tracks"] == 2 and same.row["tracks"] == 2
    for c in (other, same):
        assert all(t["identity_consistency"] > 0.98 for t in c.tracks.to_pylist())
    assert "identity_change" in other.row["reasons"], other.judgement["raw"]
    assert "identity_change" not in same.row["reasons"], same.judgement["raw"]
    assert other.judgement["raw"]["identity_change"] > 2 * same.judgement["raw"]["identity_change"]
    emb = other.tracks.column("embedding").to_pylist()
    assert all(len(e) == 128 for e in emb)


def test_explain_text_and_timeline(fast_clips, tmp_path):
    cfg = load_config(profile="offline-fast")
    c = fast_clips["cut"]
    text = explain_clip_text(c, cfg)
    for word in ("shots: 2", "cuts at 4.00", "*track 0", "track 1", "coverage", "frames:", "quality"):
        assert word in text, word
    assert len([ln for ln in text.splitlines() if re.match(r"\s+\d+\.\d\d\s+[01]\s", ln)]) == 12
    png = str(tmp_path / "t.png")
    img = timeline_png(c, cfg, png)
    assert os.path.isfile(png) and img.shape == (360, 960, 3)
    # the primary track's line is drawn in its colour, and the cut as a dashed grey line
    assert (np.abs(img.astype(int) - (31, 119, 180)).sum(axis=2) < 30).sum() > 200


HOSTILE = ["s3://b/../../x.jpg", "/etc/passwd", "s3://b/a\nb\x00c\x1b[31m.jpg", "s3://b/..", "s3://b/.hidden",
           "s3://b/été ☺.mp4", "s3://b/a?b.jpg", "s3://b/a*b.jpg", "s3://b/dir1/same.jpg", "s3://b/dir2/same.jpg",
           "C:\\Users\\x\\..\\..\\evil.jpg", "s3://b/" + "n" * 400 + ".jpg", "s3://b/-rf .jpg"]


def test_crop_names_are_safe_and_unique():
    names = [crop_name(u) for u in HOSTILE] + [crop_name(HOSTILE[5], t, 1) for t in (0.5, 1.0, 1.0004)] + \
        [crop_name(HOSTILE[5], 0.5, 2)]
    assert len(set(names)) == len(names)
    for n in names:
        assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]*-[0-9a-f]{20}(-t\d{8})?\.png", n), n
        assert "/" not in n and "\\" not in n and ".." not in n and len(n) < 100
        assert os.path.normpath(os.path.join("/out", n)).startswith("/out/")
