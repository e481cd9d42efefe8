"""Random-init stand-ins for the insightface pack's models, exported to ONNX with the SAME
input/output contracts as the real files, for tests (tiny sizes) and for honest GPU timing (real
architectures' sizes) where the real weights cannot be downloaded.

- :func:`scrfd_like`: SCRFD — input ``(N, 3, H, W)``, 9 outputs: scores ``(N, K_s, 1)``, box
  distances ``(N, K_s, 4)``, keypoint distances ``(N, K_s, 10)`` for strides 8, 16, 32 with 2
  anchors per location (``K_s = H/s · W/s · 2``), in insightface's output order (all scores,
  then all boxes, then all keypoints).  ``width="10g"`` follows SCRFD-10G's configuration
  (ResNet basic-block backbone, stage blocks 3/4/2/3, planes 56/88/88/224, PAFPN-style neck of
  56 channels, a head of 3 × 80-channel 3×3 convs shared over the levels): ~10 GMACs at 640×480,
  the resolution SCRFD's "10G" is quoted at, ~13 GMACs (27 GFLOPs) at 640×640.  ``"500m"`` is a
  0.5 GMAC-class net, ``"tiny"`` a few MMACs for tests.
- :func:`landmark_1k3d68_like`: input ``(N, 3, 192, 192)`` -> ``(N, 3309)``; a ResNet-50
  (torchvision, random init) with a 3309-way head, ~30 M parameters (the real 1k3d68.onnx: 143 MB).
- :func:`arcface_like`: input ``(N, 3, 112, 112)`` -> ``(N, 512)``; insightface's iResNet-50
  (the architecture of w600k_r50.onnx, 43.6 M parameters), random init.
- :func:`sdd_fiqa_like`: input ``(N, 3, 112, 112)`` -> ``(N, 1)``; SDD-FIQA's quality network in
  shape (an IR-50 body, the authors' Flatten/PReLU/Dropout/Linear head).
- :func:`unet_restorer_like`: input ``(N, 3, S, S)`` -> ``(N, 3, S, S)`` in [-1, 1]; a UNet-ish
  face-restorer stand-in (50.7 GMACs at 512 px at full size).

Random weights do not find faces, so by default the SCRFD stand-in *plants* one face per image:
constant offsets added to its outputs at one stride-32 anchor near the canvas centre (score
~1, a 200×250 px box, keypoints in the ArcFace layout), while the random head's own scores stay
near 0.01 (the focal-loss prior SCRFD's head is initialised with).  Downstream stages then get
one face per image to crop, align and score, as they would on real photos; all the compute is
the real network's.  ``plant_face=False`` exports a plain random net (dynamic H and W allowed).

torch is imported lazily; exports use the TorchScript exporter (``dynamo=False``), which needs
no onnxscript.  All models have a dynamic batch axis.
"""

from __future__ import annotations

import warnings

SCRFD_WIDTHS = {
    # stem, stage planes, stage blocks, neck channels, head channels, head convs
    "10g": dict(stem=56, planes=(56, 88, 88, 224), blocks=(3, 4, 2, 3), neck=56, head=80, convs=3),
    "500m": dict(stem=16, planes=(16, 24, 40, 72), blocks=(1, 2, 2, 2), neck=16, head=24, convs=2),
    "tiny": dict(stem=8, planes=(8, 8, 16, 16), blocks=(1, 1, 1, 1), neck=8, head=8, convs=1),
}


def _export(model, example, path: str, input_name: str, output_names, dynamic_axes) -> str:
    import torch

    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice, tracer warnings
        with torch.no_grad():
            torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=[input_name],
                              output_names=list(output_names), dynamic_axes=dynamic_axes, opset_version=17)
    return str(path)


# ------------------------------------------------------------------------------------------ SCRFD


def scrfd_module(width: str = "10g", input_size=(640, 640), plant_face: bool = True):
    """The SCRFD-shaped torch module (random init).  ``input_size`` is (width, height); it only
    matters for the planted face (whose offsets are constants over the stride-32 anchors)."""
    import torch
    from torch import nn

    cfg = SCRFD_WIDTHS[width]
    A = 2
    strides = (8, 16, 32)

    def cbr(cin, cout, stride=1, k=3):
        return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU(inplace=True))

    class Basic(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = cbr(cin, cout, stride)
            self.c2 = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
            self.down = None
            if stride != 1 or cin != cout:  # ResNet-D style shortcut, as SCRFD's ResNetV1e
                self.down = nn.Sequential(nn.AvgPool2d(stride, stride) if stride > 1 else nn.Identity(),
                                          nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
            self.act = nn.ReLU(inplace=True)

        def forward(self, x):
            idt = x if self.down is None else self.down(x)
            return self.act(self.c2(self.c1(x)) + idt)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            s = cfg["stem"]
            self.stem = nn.Sequential(cbr(3, s // 2, 2), cbr(s // 2, s // 2), cbr(s // 2, s), nn.MaxPool2d(3, 2, 1))
            stages, cin = [], s
            for i, (p, n) in enumerate(zip(cfg["planes"], cfg["blocks"])):
                blocks = [Basic(cin, p, 1 if i == 0 else 2)] + [Basic(p, p, 1) for _ in range(n - 1)]
                stages.append(nn.Sequential(*blocks))
                cin = p
            self.stages = nn.ModuleList(stages)
            c = cfg["neck"]
            self.lateral = nn.ModuleList([nn.Conv2d(p, c, 1) for p in cfg["planes"][1:]])
            self.fpn = nn.ModuleList([cbr(c, c) for _ in strides])
            self.down = nn.ModuleList([cbr(c, c, 2) for _ in strides[1:]])
            self.pafpn = nn.ModuleList([cbr(c, c) for _ in strides[1:]])
            h = cfg["head"]
            tower, cin = [], c
            for _ in range(cfg["convs"]):
                tower.append(cbr(cin, h))
                cin = h
            self.tower = nn.Sequential(*tower)  # shared over the levels, as SCRFD's head
            self.cls = nn.Conv2d(h, A, 3, 1, 1)
            self.reg = nn.Conv2d(h, 4 * A, 3, 1, 1)
            self.kps = nn.Conv2d(h, 10 * A, 3, 1, 1)
            for conv in (self.cls, self.reg, self.kps):
                nn.init.normal_(conv.weight, std=0.01)
                nn.init.zeros_(conv.bias)
            nn.init.constant_(self.cls.bias, -4.595)  # focal-loss prior p = 0.01
            self.scales = nn.Parameter(torch.ones(3))
            self.plant = plant_face
            if plant_face:
                self._plant_buffers()

        def _plant_buffers(self):
            in_w, in_h = input_size
            w32, h32 = in_w // 32, in_h // 32
            k = h32 * w32 * A
            idx = ((h32 // 2) * w32 + w32 // 2) * A  # first anchor of the location nearest the centre
            score = torch.zeros(k, 1)
            score[idx] = 14.0  # logit: sigmoid(14 - 4.6) ~ 1
            box = torch.zeros(k, 4)
            box[idx] = torch.tensor([100.0, 125.0, 100.0, 125.0]) / 32  # l, t, r, b in strides
            # ArcFace 112 template scaled to the 200 px box, relative to the anchor centre
            tpl = torch.tensor([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                                [41.5493, 92.3655], [70.7299, 92.2041]])
            kp = torch.zeros(k, 10)
            kp[idx] = ((tpl - torch.tensor([56.0, 60.0])) * (200 / 112) / 32).reshape(-1)
            self.register_buffer("plant_score", score)
            self.register_buffer("plant_box", box)
            self.register_buffer("plant_kps", kp)

        def forward(self, x):
            n = x.shape[0]
            feats = []
            y = self.stem(x)
            for st in self.stages:
                y = st(y)
                feats.append(y)
            lat = [l(f) for l, f in zip(self.lateral, feats[1:])]  # strides 8, 16, 32
            for i in (1, 0):  # top-down
                lat[i] = lat[i] + nn.functional.interpolate(lat[i + 1], size=lat[i].shape[-2:], mode="nearest")
            outs = [self.fpn[i](lat[i]) for i in range(3)]
            for i in (1, 2):  # bottom-up (PAFPN)
                outs[i] = self.pafpn[i - 1](outs[i] + self.down[i - 1](outs[i - 1]))
            scores, boxes, kpss = [], [], []
            for i, f in enumerate(outs):
                t = self.tower(f)
                s = self.cls(t).permute(0, 2, 3, 1).reshape(n, -1, 1)
                b = (self.reg(t) * self.scales[i]).permute(0, 2, 3, 1).reshape(n, -1, 4)
                k = self.kps(t).permute(0, 2, 3, 1).reshape(n, -1, 10)
                if self.plant and i == 2:
                    s = s + self.plant_score
                    b = b + self.plant_box
                    k = k + self.plant_kps
                scores.append(torch.sigmoid(s))
                boxes.append(b)
                kpss.append(k)
            return (*scores, *boxes, *kpss)

    return Net()


def scrfd_like(path: str, width: str = "10g", *, input_size=(640, 640), plant_face: bool = True,
               seed: int = 0) -> str:
    """Export an SCRFD-shaped detector (see the module docstring) to ``path``."""
    import torch

    if width not in SCRFD_WIDTHS:
        raise ValueError(f"width must be one of {', '.join(SCRFD_WIDTHS)}")
    torch.manual_seed(seed)
    model = scrfd_module(width, input_size, plant_face)
    in_w, in_h = input_size
    names = [f"score_{s}" for s in (8, 16, 32)] + [f"bbox_{s}" for s in (8, 16, 32)] + \
            [f"kps_{s}" for s in (8, 16, 32)]
    axes = {"input.1": {0: "batch"} if plant_face else {0: "batch", 2: "height", 3: "width"}}
    axes.update({o: {0: "batch", 1: "anchors"} for o in names} if not plant_face else {o: {0: "batch"} for o in names})
    return _export(model, torch.zeros(1, 3, in_h, in_w), path, "input.1", names, axes)


# -------------------------------------------------------------------------------------- 1k3d68


def landmark_module(tiny: bool = False):
    from torch import nn

    if tiny:
        return nn.Sequential(nn.Conv2d(3, 8, 3, 4, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 4, 1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3309))
    from torchvision.models import resnet50

    return resnet50(weights=None, num_classes=3309)  # weights=None: random init, nothing downloaded


def landmark_1k3d68_like(path: str, *, tiny: bool = False, seed: int = 0) -> str:
    """Export a 1k3d68-shaped model: (N, 3, 192, 192) -> (N, 3309)."""
    import torch

    torch.manual_seed(seed)
    return _export(landmark_module(tiny), torch.zeros(1, 3, 192, 192), path, "data", ["fc1"],
                   {"data": {0: "batch"}, "fc1": {0: "batch"}})


# -------------------------------------------------------------------------------------- ArcFace


def iresnet(layers=(3, 4, 14, 3), width: int = 64, num_features: int = 512):
    """insightface's iResNet (arcface_torch/backbones/iresnet.py, MIT licence): iResNet-50 with
    the defaults, as in w600k_r50.onnx."""
    from torch import nn

    class IBasicBlock(nn.Module):
        def __init__(self, cin, planes, stride, down):
            super().__init__()
            self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
            self.conv1 = nn.Conv2d(cin, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
            self.prelu = nn.PReLU(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
            self.down = down

        def forward(self, x):
            out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
            return out + (x if self.down is None else self.down(x))

    class IResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width, eps=1e-5)
            self.prelu = nn.PReLU(width)
            stages, cin = [], width
            for i, n in enumerate(layers):
                planes = width * 2 ** i
                down = nn.Sequential(nn.Conv2d(cin, planes, 1, 2, bias=False), nn.BatchNorm2d(planes, eps=1e-5))
                blocks = [IBasicBlock(cin, planes, 2, down)] + [IBasicBlock(planes, planes, 1, None)
                                                                  for _ in range(n - 1)]
                stages.append(nn.Sequential(*blocks))
                cin = planes
            self.layers = nn.Sequential(*stages)
            self.bn2 = nn.BatchNorm2d(cin, eps=1e-5)
            self.fc = nn.Linear(cin * 7 * 7, num_features)
            self.features = nn.BatchNorm1d(num_features, eps=1e-5)

        def forward(self, x):
            x = self.layers(self.prelu(self.bn1(self.conv1(x))))
            x = self.bn2(x).flatten(1)
            return self.features(self.fc(x))

    return IResNet()


def arcface_like(path: str, *, tiny: bool = False, seed: int = 0) -> str:
    """Export an ArcFace-shaped model: (N, 3, 112, 112) -> (N, 512); iResNet-50 (tiny: a
    one-block-per-stage, 8-wide iResNet)."""
    import torch

    torch.manual_seed(seed)
    model = iresnet((1, 1, 1, 1), 8) if tiny else iresnet()
    return _export(model, torch.zeros(1, 3, 112, 112), path, "input.1", ["embedding"],
                   {"input.1": {0: "batch"}, "embedding": {0: "batch"}})


def count_macs(module, input_shape) -> float:
    """Multiply-accumulates of one forward pass (torch's FLOP counter / 2), on the meta device:
    nothing is computed."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    module = module.to("meta").eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        module(torch.zeros(*input_shape, device="meta"))
    return fc.get_total_flops() / 2


# -------------------------------------------------------------------------------------- SDD-FIQA


def sdd_fiqa_module(tiny: bool = False):
    """SDD-FIQA's quality network in shape: an IR-50 body (stage blocks 3/4/14/3, widths 64-512,
    112 px in, 512x7x7 out — iResNet-50's layout, which TFace's IR-50 shares) and the authors' quality
    head Flatten -> PReLU(25088) -> Dropout(0.5) -> Linear(25088, 1), random init."""
    from torch import nn

    body = iresnet((1, 1, 1, 1), 8) if tiny else iresnet()
    feat = body.bn2.num_features * 7 * 7

    class SDD(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1, self.prelu, self.layers = body.conv1, body.bn1, body.prelu, body.layers
            self.quality = nn.Sequential(nn.Flatten(), nn.PReLU(feat), nn.Dropout(0.5), nn.Linear(feat, 1))

        def forward(self, x):
            return self.quality(self.layers(self.prelu(self.bn1(self.conv1(x)))))

    return SDD()


def sdd_fiqa_like(path: str, *, tiny: bool = False, seed: int = 0) -> str:
    """Export an SDD-FIQA-shaped regression network: (N, 3, 112, 112) -> (N, 1)."""
    import torch

    torch.manual_seed(seed)
    return _export(sdd_fiqa_module(tiny), torch.zeros(1, 3, 112, 112), path, "input", ["quality"],
                   {"input": {0: "batch"}, "quality": {0: "batch"}})


# ------------------------------------------------------------------------------- face restoration


def unet_restorer_module(width: int = 32, depth: int = 4):
    """A UNet-ish image-to-image network in a face restorer's contract: (N, 3, S, S) in [-1, 1] ->
    (N, 3, S, S) in [-1, 1] (tanh).  ``depth`` halvings with widths width·2^k (capped at 16·width),
    two 3x3 conv + LeakyReLU per level, skip connections, transposed-conv upsampling; width 32,
    depth 4 is 50.7 GMACs at 512 px (a real restorer's cost differs with its architecture: scale by
    its MACs).  Random init: for plumbing and timing, not for restoring anything."""
    import torch
    from torch import nn

    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
                             nn.Conv2d(cout, cout, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True))

    widths = [min(width * 2 ** k, 16 * width) for k in range(depth + 1)]

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.inc = block(3, widths[0])
            self.down = nn.ModuleList([nn.Sequential(nn.Conv2d(widths[k], widths[k], 3, 2, 1), block(widths[k], widths[k + 1]))
                                       for k in range(depth)])
            self.up = nn.ModuleList([nn.ConvTranspose2d(widths[k + 1], widths[k], 2, 2) for k in reversed(range(depth))])
            self.dec = nn.ModuleList([block(2 * widths[k], widths[k]) for k in reversed(range(depth))])
            self.out = nn.Conv2d(widths[0], 3, 1)

        def forward(self, x):
            skips = [self.inc(x)]
            for d in self.down:
                skips.append(d(skips[-1]))
            y = skips.pop()
            for up, dec in zip(self.up, self.dec):
                y = dec(torch.cat([up(y), skips.pop()], 1))
            return torch.tanh(self.out(y) + x)

    return UNet()


def unet_restorer_like(path: str, size: int = 512, *, width: int = 32, depth: int = 4, seed: int = 0) -> str:
    """Export the UNet-ish restorer: (N, 3, size, size) -> (N, 3, size, size)."""
    import torch

    torch.manual_seed(seed)
    return _export(unet_restorer_module(width, depth), torch.zeros(1, 3, size, size), path, "input", ["output"],
                   {"input": {0: "batch"}, "output": {0: "batch"}})
