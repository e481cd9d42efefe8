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
from PIL import Image, ImageOps, UnidentifiedImageError

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


def _plain_jpeg(im: Image.Image, data: bytes) -> bool:
    """A complete, upright, 8-bit RGB JPEG: the common case, which the fast decoders take.
    Anything else (EXIF-rotated, CMYK, greyscale, truncated, MPO...) takes Pillow's path with
    its checks and messages."""
    if im.format != "JPEG" or im.mode != "RGB" or not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        return False
    try:
        return im.getexif().get(0x0112, 1) == 1
    except Exception:  # noqa: BLE001 - a broken EXIF block: let Pillow's path decide
        return False


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Pillow's view of the header, with the empty-file and decompression-bomb checks; no pixel
    is decoded."""
    if not data:
        raise DecodeFailure("decode_error", "empty file (0 bytes)")
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DecodeFailure("decode_error", f"not a recognised image format (starts with {data[:8]!r})") from None
    except Exception as e:  # noqa: BLE001
        raise DecodeFailure("decode_error", f"not a recognised image: {type(e).__name__}: {e}") from None
    w, h = im.size
    if w * h > max_pixels:
        raise DecodeFailure("too_large", f"{w}x{h} = {w * h} pixels is over decode.max_pixels ({max_pixels})")
    if w < 1 or h < 1:
        raise DecodeFailure("decode_error", f"invalid dimensions {w}x{h}")
    return im


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode image bytes into an HxWx3 uint8 RGB array (EXIF orientation applied)."""
    return decode_opened(open_image(data, max_pixels), data)


def decode_opened(im: Image.Image, data: bytes) -> np.ndarray:
    """Pixels of an image :func:`open_image` accepted.  A plain JPEG is decoded by OpenCV: the
    same libjpeg-turbo output as Pillow's bit for bit, in half the time, because it skips
    Pillow's chunked copy into numpy."""
    if _plain_jpeg(im, data):
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if arr is not None and arr.shape[:2] == (im.size[1], im.size[0]):
            return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB, dst=arr)
    w, h = im.size
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


class TorchJpeg:
    """Batched JPEG decoding with ``torchvision.io.decode_jpeg``: nvJPEG on the GPU when the
    stage has one, libjpeg-turbo on the CPU otherwise.  Pixels come back to host memory as HxWx3
    uint8 RGB: the stages after decode crop them on the CPU."""

    def __init__(self, use_gpu: bool):
        from ..backends import require

        self.torch = require("torch", "torch", "decode.backend torchvision")
        require("torchvision", "torchvision", "decode.backend torchvision")
        from torchvision.io import ImageReadMode, decode_jpeg

        self._decode, self._rgb = decode_jpeg, ImageReadMode.RGB
        if use_gpu and not self.torch.cuda.is_available():
            raise RuntimeError("decode.backend torchvision with decode.resources.num_gpus > 0, "
                               "but this worker sees no CUDA device")
        self.device = self.torch.device("cuda" if use_gpu else "cpu")

    def decode(self, datas: list) -> list:
        """HxWx3 uint8 arrays, one per JPEG; raises if any of them fails (the caller then
        decodes that batch image by image)."""
        torch = self.torch
        ts = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
        out = self._decode(ts, mode=self._rgb, device=self.device)
        # CHW -> HWC on the device: a strided transpose on the host costs ~5 ms per 1 MP image
        return [t.permute(1, 2, 0).contiguous().cpu().numpy() for t in out]


class DecodeStage(Stage):
    name = "decode"

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        c = cfg.decode
        self.batched = TorchJpeg(c.resources.num_gpus > 0) if c.backend == "torchvision" else None

    def process(self, batch: Batch) -> Batch:
        n = len(batch["uri"])
        status = np.full(n, "ok", dtype=object)
        error = np.full(n, "", dtype=object)
        width = np.zeros(n, np.int32)
        height = np.zeros(n, np.int32)
        images = [EMPTY_IMAGE] * n
        queued = []  # (row, bytes, opened image): plain JPEGs for the batched decoder

        def one(i, fn):
            try:
                images[i] = fn()
                height[i], width[i] = images[i].shape[:2]
            except DecodeFailure as e:
                status[i], error[i] = e.status, str(e)
            except Exception as e:  # noqa: BLE001
                status[i], error[i] = "decode_error", f"{type(e).__name__}: {e}"

        def read_and_open(i, uri):
            data = read_file(str(uri), self.cfg)
            im = open_image(data, self.cfg.decode.max_pixels)
            if self.batched is not None and _plain_jpeg(im, data):
                queued.append((i, data, im))
                return EMPTY_IMAGE  # filled in below
            return decode_opened(im, data)

        for i, uri in enumerate(batch["uri"]):
            one(i, lambda i=i, uri=uri: read_and_open(i, uri))
        if queued:
            try:
                arrays = self.batched.decode([d for _, d, _ in queued])
            except Exception:  # noqa: BLE001 - one bad file fails the batch call: go one by one
                arrays = [None] * len(queued)
            for (i, data, im), arr in zip(queued, arrays):
                fits = arr is not None and arr.shape[:2] == (im.size[1], im.size[0])
                one(i, (lambda arr=arr: arr) if fits else (lambda im=im, data=data: decode_opened(im, data)))
        out = dict(batch)
        out.update(status=status, error=error, width=width, height=height, image=objarray(images))
        return out
