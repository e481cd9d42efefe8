"""Test inputs built at test time from packaged photos (nothing is committed): the bad-input
corpus (every kind of file a bucket holds) and the golden image set."""

from __future__ import annotations

import io
import os
import socket
import struct
import zlib

import numpy as np
from PIL import Image

from pipeline.tools import samples

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
ANY = None  # expected status: whatever the pipeline finds (a chmod-000 file read by root)


# ------------------------------------------------------------------------------ corpus
def png_bytes(im: Image.Image) -> bytes:
    b = io.BytesIO()
    im.save(b, "PNG")
    return b.getvalue()


def jpeg_bytes(im: Image.Image, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, "JPEG", quality=90, **kw)
    return b.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid small PNG whose IHDR then declares ``width`` x ``height`` (CRC fixed)."""
    data = bytearray(png_bytes(Image.new("RGB", (8, 8), (90, 90, 90))))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def _write(root, name: str, data: bytes) -> str:
    path = os.path.join(str(root), name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return os.path.abspath(path)


def _bind_socket(path: str) -> None:
    """A UNIX socket file (bound relative to its folder: socket paths are limited to ~108 bytes)."""
    cwd = os.getcwd()
    os.chdir(os.path.dirname(path))
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(os.path.basename(path))
        s.close()  # the socket file stays
    finally:
        os.chdir(cwd)


def build_corpus(root) -> tuple[dict, dict]:
    """Write the corpus; return ({abs path: expected status or ANY}, {role: abs path})."""
    astro = Image.fromarray(samples.astronaut())  # 512x512, one face
    hanks = Image.fromarray(samples.tom_hanks())  # 112x112 face crop
    hanks_jpg = jpeg_bytes(hanks)
    expected, paths = {}, {}

    def put(role, name, data, status):
        p = _write(root, name, data)
        expected[p], paths[role] = status, p

    put("good", "good astronaut.jpg", jpeg_bytes(astro), "ok")
    put("unicode", "été photo ☺.jpg", hanks_jpg, "ok")
    put("colons", "a::b.jpg", hanks_jpg, "ok")
    put("brackets", "photo [1].jpg", hanks_jpg, "ok")
    put("empty", "empty.jpg", b"", "decode_error")
    full = jpeg_bytes(astro)
    put("truncated", "truncated.jpg", full[: len(full) // 2], "decode_error")
    noise = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    put("random", "RANDOM.JPG", noise, "decode_error")  # upper-case suffix still listed
    put("text", "text.png", b"this is not an image\n" * 20, "decode_error")
    put("bomb", "bomb.png", bomb_png(), "too_large")
    put("tiny", "tiny 1x1.png", png_bytes(Image.new("RGB", (1, 1), (200, 150, 120))), "no_face")
    put("grey", "grey.jpg", jpeg_bytes(astro.convert("L")), "ok")
    rgba = astro.convert("RGBA")
    rgba.putalpha(200)
    put("rgba", "rgba.png", png_bytes(rgba), "ok")
    g16 = Image.fromarray(np.asarray(astro.convert("L")).astype(np.uint16) * 257)
    assert g16.mode == "I;16"
    put("grey16", "grey16.png", png_bytes(g16), "ok")
    put("cmyk", "cmyk.jpg", jpeg_bytes(astro.convert("CMYK")), "ok")
    # displayed upright as 400 wide x 512 high; stored on disk turned 90° (512 x 400), Orientation 6
    stored = astro.crop((40, 0, 440, 512)).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    put("exif", "exif rotated.jpg", jpeg_bytes(stored, exif=exif.tobytes()), "ok")
    # a directory named like an image: walked, not itself a row
    put("in_folder", "folder.jpg/inside.jpg", hanks_jpg, "ok")

    sock = os.path.join(str(root), "socket.jpg")
    _bind_socket(sock)
    expected[sock], paths["socket"] = "read_error", sock
    fifo = os.path.join(str(root), "pipe.jpg")
    os.mkfifo(fifo)  # reading it would block forever: must be refused, not read
    expected[fifo], paths["fifo"] = "read_error", fifo
    link = os.path.join(str(root), "broken link.jpg")
    os.symlink("does-not-exist.jpg", link)
    expected[link], paths["broken_link"] = "read_error", link
    put("locked", "locked.jpg", hanks_jpg, ANY if IS_ROOT else "read_error")
    os.chmod(paths["locked"], 0)

    # a plain text file: every file gets a row by default (input.extensions is empty)
    paths["notes"] = _write(root, "notes.txt", b"some notes\n")
    expected[paths["notes"]] = "decode_error"
    paths["folder"] = os.path.abspath(os.path.join(str(root), "folder.jpg"))
    return expected, paths


# ------------------------------------------------------------------------------ golden set
def build_golden_images(folder) -> list:
    """The image set of the golden-output test: real photos from packages and deliberate
    degradations of them (the demo set as it was when the golden file was first written; frozen
    here so that the demo may change without moving the golden rows)."""
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    faces = samples.t1_faces()
    ast = samples.astronaut()
    items = {
        "astronaut.png": ast,
        "tom_hanks.png": samples.tom_hanks(),
        "group_t1.jpg": samples.t1(),
        "astronaut_blur_sigma4.jpg": samples.degrade(ast, "blur", 4.0),
        "astronaut_jpeg_q8.jpg": samples.degrade(ast, "jpeg", 8),
        "astronaut_noise_sigma24.png": samples.degrade(ast, "noise", 24),
        "astronaut_dark.png": samples.degrade(ast, "underexposure", 0.08),
        "astronaut_overexposed.png": samples.degrade(ast, "overexposure", 5.0),
        "astronaut_rolled_35deg.png": samples.degrade(ast, "rotation", 35),
        "astronaut_tiny_x0.2.png": samples.degrade(ast, "downscale", 0.2),
        "lfw_25px.png": samples.lfw_faces()[0],
        "no_face_gradient.png": np.tile(np.linspace(0, 255, 256, dtype=np.uint8)[None, :, None], (128, 1, 3)),
    }
    for i, f in enumerate(faces):
        items[f"t1_person{i}.jpg"] = f
    paths = []
    for name, img in items.items():
        p = os.path.join(folder, name)
        im = Image.fromarray(np.ascontiguousarray(img))
        im.save(p, quality=92) if name.endswith(".jpg") else im.save(p)
        paths.append(p)
    bad = os.path.join(folder, "corrupt_upload.jpg")
    with open(os.path.join(folder, "astronaut_jpeg_q8.jpg"), "rb") as f:
        data = f.read()
    with open(bad, "wb") as f:
        f.write(data[: len(data) // 3])  # a truncated upload
    paths.append(bad)
    return paths
