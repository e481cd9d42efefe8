"""A demo set built at run time from real photos that ship in packages, with a few deliberate
degradations so that the output shows the score doing its job."""

from __future__ import annotations

import os
from typing import List

import numpy as np
from PIL import Image

from . import samples


def make_demo_set(folder: str) -> List[str]:
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
        Image.fromarray(np.ascontiguousarray(img)).save(p, quality=92) if name.endswith(".jpg") else \
            Image.fromarray(np.ascontiguousarray(img)).save(p)
        paths.append(p)
    bad = os.path.join(folder, "corrupt_upload.jpg")
    with open(os.path.join(folder, "astronaut_jpeg_q8.jpg"), "rb") as f:
        data = f.read()
    with open(bad, "wb") as f:
        f.write(data[: len(data) // 3])  # a truncated upload
    paths.append(bad)
    return paths
