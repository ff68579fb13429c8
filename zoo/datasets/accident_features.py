"""Feature extraction for accident anticipation (DSA / UString / CRASH input): video frames -> detector (top-19 boxes)
-> VGG-16 fc7 per box and per frame -> the UString/DSTA ``.npz`` layout.

Per frame the output is ``data[t] (20, D)``: slot 0 = the whole frame's fc7, slots 1..19 = the fc7 of the crops of the
top-19 detections (by score), all-zero when fewer boxes were found; ``det[t] (19, 6)`` = ``x1, y1, x2, y2, score,
class`` (zeros for empty slots). Files: ``np.savez(path, data=(T, 20, D), labels=one-hot (2,), det=(T, 19, 6),
ID=str)``, as the DAD / CCD feature files (read by :mod:`zoo.datasets.accident`).

Weights: torchvision's ImageNet VGG-16 (``weights="DEFAULT"``) and COCO Faster R-CNN give the authors' pipeline but
must be downloaded; offline (the zoo's CI and GPU machines) they are NOT available, and the extractor uses seeded
random weights instead (``weights=None``, the default here) — fine for the rendered offline task and for tests, not
for DAD / CCD. Cascade R-CNN (the CRASH authors' detector) is not in torchvision: pass any callable ``detector(frames)
-> list of (boxes (K, 4), scores (K,), classes (K,))`` (e.g. an mmdetection model) instead. ``width_div`` /
``fc_dim`` shrink VGG-16 (channels / width_div, fc6/fc7 width fc_dim) for CPU runs; ``width_div=1, fc_dim=4096`` is
torchvision's VGG-16 layer for layer.

    python -m zoo.datasets.accident_features --video clip.mp4 --out feats/clip.npz --weights DEFAULT --label 1
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VGG16Features", "FeatureExtractor", "torchvision_detector", "save_npz", "main"]

N_OBJ = 19
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]

Detector = Callable[[torch.Tensor], Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]


class VGG16Features(nn.Module):
    """VGG-16 up to fc7 (after its ReLU): images (N, 3, H, W) in [0, 1] -> (N, fc_dim) float32.

    Layer names follow torchvision's ``vgg16`` (``features.*``, ``classifier.0`` = fc6, ``classifier.3`` = fc7), so
    with ``width_div=1, fc_dim=4096`` its ImageNet weights load (``weights="DEFAULT"``, needs the download).
    ``seed`` fixes the random initialisation (torchvision's init scheme) when no weights are loaded.
    """

    def __init__(self, width_div: int = 1, fc_dim: int = 4096, weights: str | None = None, seed: int = 0):
        super().__init__()
        if width_div < 1 or 64 % width_div:
            raise ValueError(f"width_div must divide 64, got {width_div}")
        if weights is not None and (width_div != 1 or fc_dim != 4096):
            raise ValueError("pretrained VGG-16 weights need width_div=1 and fc_dim=4096")
        layers: list[nn.Module] = []
        c_in = 3
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                c = int(v) // width_div
                layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(inplace=True)]
                c_in = c
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(nn.Linear(c_in * 49, fc_dim), nn.ReLU(True), nn.Dropout(),
                                        nn.Linear(fc_dim, fc_dim), nn.ReLU(True))
        self.out_dim = fc_dim
        g = torch.Generator().manual_seed(seed)
        for m in self.modules():  # torchvision's VGG init, drawn from a private generator
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
                with torch.no_grad():
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_out) ** 0.5)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                with torch.no_grad():
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.01)
                nn.init.zeros_(m.bias)
        if weights is not None:
            from torchvision.models import VGG16_Weights, vgg16

            ref = vgg16(weights=VGG16_Weights.DEFAULT if weights == "DEFAULT" else weights)
            sd = {k: v for k, v in ref.state_dict().items() if not k.startswith("classifier.6")}
            self.load_state_dict(sd, strict=True)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        x = self.avgpool(self.features(x)).flatten(1)
        return self.classifier(x)


def torchvision_detector(name: str = "fasterrcnn_mobilenet_v3_large_320_fpn", weights: str | None = None,
                         min_size: int | None = None, seed: int = 0) -> Detector:
    """A torchvision detector as a ``Detector`` callable: frames (T, 3, H, W) in [0, 1] -> per frame (boxes,
    scores, classes), at most 19, highest score first, no score threshold (the authors keep the top 19).

    ``weights="DEFAULT"`` loads COCO weights (download); None = seeded random weights (tests, offline).
    """
    import torchvision

    ctor = getattr(torchvision.models.detection, name, None)
    if ctor is None:
        raise ValueError(f"unknown torchvision detector {name!r}")
    kw = {"box_score_thresh": 0.0, "box_detections_per_img": N_OBJ}
    if min_size is not None:
        kw.update(min_size=min_size, max_size=max(min_size, 2 * min_size))
    torch.manual_seed(seed)
    model = ctor(weights=weights, weights_backbone=None, **kw).eval()

    @torch.no_grad()
    def detect(frames: torch.Tensor):
        dev = next(model.parameters()).device
        out = model([f.to(dev) for f in frames])
        return [(o["boxes"][:N_OBJ], o["scores"][:N_OBJ], o["labels"][:N_OBJ]) for o in out]

    detect.model = model  # type: ignore[attr-defined]
    return detect


class FeatureExtractor:
    """frames (T, 3, H, W) float in [0, 1] (or uint8) -> ``data (T, 20, D)`` float32 and ``det (T, 19, 6)``.

    Args:
        detector: a ``Detector`` callable (see :func:`torchvision_detector`), or None when boxes are given to
            :meth:`__call__` (e.g. the rendered scenes' own boxes).
        vgg: the fc7 feature network (default: random seeded VGG-16).
        frame_size: the whole frame is resized to frame_size x frame_size (224 as the authors).
        crop_size: each box is cropped (RoIAlign on the frame) to crop_size x crop_size (224 as the authors).
        device: where to run; batch: images per VGG call.
    """

    def __init__(self, detector: Detector | None = None, vgg: VGG16Features | None = None, frame_size: int = 224,
                 crop_size: int = 224, device: str | torch.device = "cpu", batch: int = 256,
                 dtype: torch.dtype = torch.float32):
        self.detector = detector
        self.device = torch.device(device)
        self.dtype = dtype
        self.vgg = (vgg or VGG16Features()).to(self.device, dtype).eval()
        self.frame_size, self.crop_size, self.batch = int(frame_size), int(crop_size), int(batch)

    @property
    def dim(self) -> int:
        return self.vgg.out_dim

    @torch.no_grad()
    def _fc7(self, images: torch.Tensor) -> torch.Tensor:
        out = [self.vgg(images[i: i + self.batch].to(self.dtype)).float() for i in range(0, len(images), self.batch)]
        return torch.cat(out) if out else images.new_zeros(0, self.dim, dtype=torch.float32)

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor, boxes: Sequence[torch.Tensor] | None = None,
                 scores: Sequence[torch.Tensor] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """frames (T, 3, H, W); optional per-frame boxes (K_t, 4) xyxy in pixels (then no detector runs)."""
        from torchvision.ops import roi_align

        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames must be (T, 3, H, W), got {tuple(frames.shape)}")
        if frames.dtype == torch.uint8:
            frames = frames.float() / 255.0
        frames = frames.to(self.device, torch.float32)
        t_len = frames.shape[0]
        if boxes is None:
            if self.detector is None:
                raise ValueError("no boxes given and no detector configured")
            dets = self.detector(frames)
            boxes = [d[0] for d in dets]
            scores = [d[1] for d in dets]
            classes = [d[2] for d in dets]
        else:
            if len(boxes) != t_len:
                raise ValueError(f"boxes must hold one (K, 4) tensor per frame ({t_len}), got {len(boxes)}")
            classes = [torch.zeros(len(b)) for b in boxes]
            scores = scores or [torch.ones(len(b)) for b in boxes]
        det = np.zeros((t_len, N_OBJ, 6), np.float32)
        rois, slots = [], []
        for t in range(t_len):
            b = boxes[t][:N_OBJ].to(self.device, torch.float32).reshape(-1, 4)
            k = len(b)
            if k:
                det[t, :k, :4] = b.cpu().numpy()
                det[t, :k, 4] = scores[t][:k].float().cpu().numpy()
                det[t, :k, 5] = classes[t][:k].float().cpu().numpy()
                rois.append(torch.cat([b.new_full((k, 1), t), b], 1))
                slots += [(t, 1 + j) for j in range(k)]
        data = torch.zeros(t_len, 1 + N_OBJ, self.dim)
        whole = F.interpolate(frames, size=(self.frame_size, self.frame_size), mode="bilinear", align_corners=False)
        data[:, 0] = self._fc7(whole).cpu()
        if rois:
            crops = roi_align(frames, torch.cat(rois), output_size=self.crop_size, aligned=True)
            feats = self._fc7(crops).cpu()
            idx = torch.tensor(slots)
            data[idx[:, 0], idx[:, 1]] = feats
        return data.numpy(), det


def save_npz(path: str | Path, data: np.ndarray, label: int, det: np.ndarray, vid: str,
             dtype: np.dtype = np.float32) -> None:
    """One video in the DAD/CCD feature layout: ``data`` (T, 20, D), ``labels`` one-hot (2,), ``det``, ``ID``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, data=data.astype(dtype), labels=np.array([1 - int(label), int(label)], np.float32),
             det=det.astype(np.float32), ID=np.array(vid))


def _read_video(path: str, n_frames: int | None, stride: int) -> torch.Tensor:
    from torchvision.io import read_video

    v, _, _ = read_video(path, pts_unit="sec", output_format="TCHW")
    v = v[::stride]
    return v[:n_frames] if n_frames else v


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="frames -> detector top-19 -> VGG-16 fc7 -> UString/DSTA npz")
    p.add_argument("--video", required=True, help="video file (torchvision.io.read_video)")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--label", type=int, default=0, help="1 = accident video")
    p.add_argument("--id", default=None)
    p.add_argument("--n-frames", type=int, default=100)
    p.add_argument("--stride", type=int, default=1, help="keep every n-th frame (DAD: 20 fps, CCD: 10 fps)")
    p.add_argument("--detector", default="fasterrcnn_resnet50_fpn")
    p.add_argument("--weights", default=None, help="DEFAULT = torchvision pretrained weights (needs the download)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args(argv)
    det = torchvision_detector(a.detector, weights=a.weights)
    det.model.to(a.device)  # type: ignore[attr-defined]
    ext = FeatureExtractor(det, VGG16Features(weights=a.weights), device=a.device)
    frames = _read_video(a.video, a.n_frames, a.stride)
    data, boxes = ext(frames)
    save_npz(a.out, data, a.label, boxes, a.id or Path(a.video).stem)
    print(f"{a.out}: data {data.shape}, det {boxes.shape}")


if __name__ == "__main__":
    main()
