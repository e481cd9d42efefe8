"""A demo set built at run time from real photos that ship in packages, with a few deliberate
degradations so that the output shows the score doing its job."""

from __future__ import annotations

import os
from typing import List

import numpy as np
from PIL import Image

from . import samples


def make_demo_set(folder: str) -> List[str]:
    """The demo images in ``folder`` (created): a public-domain photo (scikit-image's astronaut),
    framed several ways, under each kind of damage the score judges, plus a picture without a
    face and a truncated upload."""
    os.makedirs(folder, exist_ok=True)
    faces = samples.demo_faces()
    ast = faces["astronaut"]
    items = {f"{name}.png": img for name, img in faces.items()}
    items.update({
        "astronaut_blur_sigma4.jpg": samples.degrade(ast, "blur", 4.0),
        "astronaut_jpeg_q8.jpg": samples.degrade(ast, "jpeg", 8),
        "astronaut_noise_sigma24.png": samples.degrade(ast, "noise", 24),
        "astronaut_dark.png": samples.degrade(ast, "underexposure", 0.08),
        "astronaut_overexposed.png": samples.degrade(ast, "overexposure", 5.0),
        "astronaut_rolled_35deg.png": samples.degrade(ast, "rotation", 35),
        "astronaut_small_x0.35.png": samples.degrade(ast, "downscale", 0.35),
        "astronaut_tiny_x0.15.png": samples.degrade(ast, "downscale", 0.15),
        "no_face_gradient.png": np.tile(np.linspace(0, 255, 256, dtype=np.uint8)[None, :, None], (128, 1, 3)),
    })
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
