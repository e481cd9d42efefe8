"""Stage 2 — read + decode: bytes to an 8-bit RGB array.

EXIF orientation is applied; greyscale, palette, alpha, 16-bit and CMYK images are converted;
a header that declares more than ``decode.max_pixels`` pixels is refused before any pixel is
decoded (decompression-bomb guard).  Failures become a row status:

- ``read_error``   the bytes could not be read (missing, vanished, unreadable, not a file)
- ``decode_error`` the bytes are not a decodable image (empty, truncated, text, random bytes)
- ``too_large``    the file or its declared pixel count is over the configured limit
"""

from __future__ import annotations

import io
import os
import stat
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps

from ..config import Config
from ..fs import is_local, read_bytes
from .base import Batch, Stage, objarray

Image.MAX_IMAGE_PIXELS = None  # our own guard below replaces Pillow's warning/exception

EMPTY_IMAGE = np.zeros((0, 0, 3), np.uint8)


class DecodeFailure(Exception):
    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


def read_file(uri: str, cfg: Config) -> bytes:
    so = cfg.input.storage_options
    if is_local(uri):
        path = uri[len("file://"):] if uri.startswith("file://") else uri
        try:
            st = os.stat(path)
        except FileNotFoundError:
            kind = "broken symlink" if os.path.islink(path) else "file not found"
            raise DecodeFailure("read_error", f"{kind}: {path}") from None
        except OSError as e:
            raise DecodeFailure("read_error", f"cannot stat: {e.strerror or e}") from None
        if stat.S_ISDIR(st.st_mode):
            raise DecodeFailure("read_error", "a directory that could not be listed")
        if not stat.S_ISREG(st.st_mode):
            raise DecodeFailure("read_error", "not a regular file (socket, fifo or device)")
        # as a file:// URI: fsspec reads a bare path with '::' in it as a chain of URLs
        uri, so = "file://" + path, None
    try:
        return read_bytes(uri, so, cfg.decode.max_bytes)
    except OverflowError as e:
        raise DecodeFailure("too_large", str(e)) from None
    except FileNotFoundError:
        raise DecodeFailure("read_error", "file not found (deleted after listing?)") from None
    except PermissionError as e:
        raise DecodeFailure("read_error", f"permission denied: {e.strerror or e}") from None
    except OSError as e:
        raise DecodeFailure("read_error", f"{type(e).__name__}: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - remote filesystems raise their own types
        raise DecodeFailure("read_error", f"{type(e).__name__}: {e}") from None


def _to_rgb8(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im)
        a = a.astype(np.float64)
        hi = 65535.0 if mode.startswith("I;16") or a.max() > 255 else 255.0
        g = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if mode == "F":
        a = np.asarray(im, dtype=np.float64)
        hi = 1.0 if a.max() <= 1.0 else 255.0
        g = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        # composite transparent areas onto mid grey: neither black nor white skews exposure
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (128, 128, 128, 255))
        im = Image.alpha_composite(bg, im)
    if im.mode != "RGB":
        im = im.convert("RGB")  # L, P, CMYK (Pillow inverts Adobe CMYK), YCbCr, 1, RGBX...
    return np.asarray(im)


def _decode_plain_jpeg(im: Image.Image, data: bytes):
    """The common case, a complete upright 8-bit RGB JPEG, decoded by OpenCV: the same
    libjpeg-turbo output as Pillow's bit for bit, in half the time, because it skips Pillow's
    chunked copy into numpy.  None for anything else (EXIF-rotated, CMYK, greyscale, truncated,
    MPO...), which takes Pillow's path with its checks and messages."""
    if im.format != "JPEG" or im.mode != "RGB" or not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        return None
    try:
        if im.getexif().get(0x0112, 1) != 1:
            return None
    except Exception:  # noqa: BLE001 - a broken EXIF block: let Pillow's path decide
        return None
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if arr is None or arr.shape[:2] != (im.size[1], im.size[0]):
        return None
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB, dst=arr)


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode image bytes into an HxWx3 uint8 RGB array (EXIF orientation applied)."""
    if not data:
        raise DecodeFailure("decode_error", "empty file (0 bytes)")
    try:
        im = Image.open(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001
        raise DecodeFailure("decode_error", f"not a recognised image: {type(e).__name__}: {e}") from None
    w, h = im.size
    if w * h > max_pixels:
        raise DecodeFailure("too_large", f"{w}x{h} = {w * h} pixels is over decode.max_pixels ({max_pixels})")
    if w < 1 or h < 1:
        raise DecodeFailure("decode_error", f"invalid dimensions {w}x{h}")
    fast = _decode_plain_jpeg(im, data)
    if fast is not None:
        return fast
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im.load()
            ImageOps.exif_transpose(im, in_place=True)  # no copy when there is no EXIF rotation
        arr = _to_rgb8(im)
    except DecodeFailure:
        raise
    except MemoryError:
        raise DecodeFailure("too_large", f"out of memory decoding {w}x{h}") from None
    except Exception as e:  # noqa: BLE001 - truncated, corrupt, unsupported
        raise DecodeFailure("decode_error", f"{type(e).__name__}: {e}") from None
    return np.ascontiguousarray(arr)


class DecodeStage(Stage):
    name = "decode"

    def process(self, batch: Batch) -> Batch:
        n = len(batch["uri"])
        status = np.full(n, "ok", dtype=object)
        error = np.full(n, "", dtype=object)
        width = np.zeros(n, np.int32)
        height = np.zeros(n, np.int32)
        images = []
        for i, uri in enumerate(batch["uri"]):
            img = EMPTY_IMAGE
            try:
                img = decode_image(read_file(str(uri), self.cfg), self.cfg.decode.max_pixels)
                height[i], width[i] = img.shape[:2]
            except DecodeFailure as e:
                status[i], error[i] = e.status, str(e)
            except Exception as e:  # noqa: BLE001
                status[i], error[i] = "decode_error", f"{type(e).__name__}: {e}"
            images.append(img)
        out = dict(batch)
        out.update(status=status, error=error, width=width, height=height, image=objarray(images))
        return out
