"""Batched image augmentation on tensors (spec §2 "complex", §4 "simple").

Images travel as uint8 tensors (B, C, H, W), C = 1 or 3, on any device. Every augmenter returns
float32 normalised (B, C, H, W) on the same device, draws its random parameters per sample and
runs without a Python loop over samples, so one call augments a whole batch on the GPU.

Each augmenter splits into ``sample_params`` (all the randomness, a few numbers per sample) and
``apply`` (deterministic given the parameters), so tests and notebooks can fix the parameters.
The pure functions below (``color_jitter``, ``adjust_hue``, ``resized_crop``,
``crop_with_offsets``) work on float images in [0, 1] (or uint8 for the crop) with one factor per
sample and follow torchvision's tensor semantics.

Random numbers come from ``generator`` when given, on the generator's device, and are moved to
the images' device: a CPU generator therefore gives the same augmentation for CPU and CUDA
images. Without a generator the global RNG of the images' device is used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "AUGMENTS",
    "ComplexAugment",
    "ComplexParams",
    "Normalize",
    "SimpleAugment",
    "SimpleParams",
    "adjust_hue",
    "build_augment",
    "color_jitter",
    "crop_with_offsets",
    "hsv_to_rgb",
    "resized_crop",
    "rgb_to_grayscale",
    "rgb_to_hsv",
    "sample_crop_boxes",
    "to_grayscale",
]

AUGMENTS = ("complex", "simple", "none")

# Devices where a host sync is free, so colour jitter runs the HSV round trip only on the
# samples that need it; elsewhere (CUDA) it runs on the whole batch under a mask, sync-free.
_SUBSET_DEVICES = ("cpu",)

# ITU-R 601-2 luma, the weights torchvision's tensor rgb_to_grayscale uses.
_LUMA = (0.2989, 0.587, 0.114)


# --------------------------------------------------------------------------- checks and helpers


def _check_images(x: Tensor, dtype: torch.dtype | None = torch.uint8, name: str = "x") -> None:
    if not isinstance(x, Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a (B, C, H, W) tensor, got {shape}")
    if dtype is not None and x.dtype != dtype:
        raise ValueError(
            f"{name} must be {dtype} (B, C, H, W) images, got {x.dtype}; "
            "keep the data set as uint8 and let the augmenter convert it"
        )
    if x.shape[1] not in (1, 3):
        raise ValueError(f"{name} must have 1 or 3 channels (dim 1), got {x.shape[1]}")


def _factor(f: Tensor | float, x: Tensor) -> Tensor:
    """Per-sample factor (B,) (or a scalar) -> (B, 1, 1, 1) in x's dtype and device."""
    f = torch.as_tensor(f, dtype=x.dtype, device=x.device)
    if f.ndim == 0:
        f = f.expand(x.shape[0])
    if f.shape != (x.shape[0],):
        raise ValueError(f"factor must be a scalar or ({x.shape[0]},), got {tuple(f.shape)}")
    return f.view(-1, 1, 1, 1)


def _rand(shape: tuple[int, ...], generator: torch.Generator | None,
          device: torch.device) -> Tensor:
    """U(0, 1) drawn on the generator's device (else ``device``), returned on ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


_CONSTS: dict[tuple, Tensor] = {}


def _const(values: tuple[float, ...], like: Tensor) -> Tensor:
    """A small constant (C, 1, 1) on like's device and dtype, cached: no host-to-device copy
    (and so no stream sync on CUDA) per call."""
    key = (values, like.device, like.dtype)
    if key not in _CONSTS:
        _CONSTS[key] = torch.tensor(values, dtype=like.dtype, device=like.device).view(-1, 1, 1)
    return _CONSTS[key]


def _uniform(lo: float, hi: float, u: Tensor) -> Tensor:
    return lo + (hi - lo) * u


class _Stats:
    """Per-channel mean/std as (1, C, 1, 1) tensors, cached per device.

    One value each applies to every channel; otherwise the count must equal the images' C.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.numel() not in (1, 3) or mean_t.shape != std_t.shape:
            raise ValueError(
                f"mean and std need 1 or 3 values each (one per channel), got {mean_t.numel()} "
                f"and {std_t.numel()}; pass the DatasetBundle's mean and std"
            )
        if not bool((std_t > 0).all()):
            raise ValueError(f"std must be positive, got {std_t.tolist()}")
        self.mean, self.std = mean_t, std_t
        self._cache: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def scale_shift(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(1/std, -mean/std) as (1, C, 1, 1) on x's device, checked against x's channels."""
        c = x.shape[1]
        if self.mean.numel() not in (1, c):
            raise ValueError(
                f"the augmenter was built for {self.mean.numel()} channels but the images "
                f"have {c}; build it with this data set's mean and std"
            )
        if x.device not in self._cache:
            scale = (1.0 / self.std).view(1, -1, 1, 1).to(x.device)
            shift = (-self.mean / self.std).view(1, -1, 1, 1).to(x.device)
            self._cache[x.device] = (scale, shift)
        return self._cache[x.device]

    def __call__(self, x01: Tensor) -> Tensor:
        """Float images in [0, 1] -> (x - mean) / std."""
        scale, shift = self.scale_shift(x01)
        return torch.addcmul(shift, x01, scale)

    def from_uint8(self, x: Tensor) -> Tensor:
        """uint8 images -> (x / 255 - mean) / std in one fused pass."""
        scale, shift = self.scale_shift(x)
        return torch.addcmul(shift, x.float(), scale / 255.0)


# --------------------------------------------------------------------------- colour functions


def rgb_to_grayscale(x: Tensor) -> Tensor:
    """Luma of float RGB images: (B, 3, H, W) -> (B, 1, H, W); 1-channel input is returned."""
    if x.shape[-3] == 1:
        return x
    # A weighted channel sum: several times faster on CPU than adding strided channel slices.
    return (x * _const(_LUMA, x)).sum(dim=-3, keepdim=True)


def to_grayscale(x: Tensor) -> Tensor:
    """Grayscale with the input's channel count (luma replicated over RGB)."""
    return rgb_to_grayscale(x).expand_as(x)


def _blend(x: Tensor, ref: Tensor, ratio: Tensor) -> Tensor:
    """ratio * x + (1 - ratio) * ref, clamped to [0, 1] (torchvision's ``_blend``).

    As ``lerp(ref, x, ratio)``: one fused pass, and exactly x where ratio == 1.
    """
    ref = torch.as_tensor(ref, dtype=x.dtype, device=x.device)
    return torch.lerp(ref.expand_as(x), x, ratio.expand_as(x)).clamp_(0.0, 1.0)



def rgb_to_hsv(x: Tensor) -> Tensor:
    """Float RGB (B, 3, H, W) in [0, 1] -> HSV (B, 3, H, W), all channels in [0, 1]."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    maxc = x.amax(dim=-3, keepdim=True)
    minc = x.amin(dim=-3, keepdim=True)
    v = maxc
    delta = maxc - minc
    gray = delta == 0
    # Safe divisors: where they would be 0 the result is masked to 0 anyway.
    s = delta / torch.where(maxc == 0, torch.ones_like(maxc), maxc)
    d = torch.where(gray, torch.ones_like(delta), delta)
    # Hue sector by which channel is the max (ties resolved r, then g, then b).
    h_r = (g - b) / d
    h_g = 2.0 + (b - r) / d
    h_b = 4.0 + (r - g) / d
    h = torch.where(maxc == r, h_r, torch.where(maxc == g, h_g, h_b))
    h = torch.where(gray, torch.zeros_like(h), h)
    h = torch.remainder(h / 6.0, 1.0)
    return torch.cat((h, s, v), dim=-3)


def hsv_to_rgb(x: Tensor) -> Tensor:
    """HSV (B, 3, H, W) in [0, 1] -> float RGB (B, 3, H, W).

    Branch-free form of the six-sector formula: channel n in (R, G, B) = (5, 3, 1) is
    ``v - v * s * clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6 h) mod 6``.
    """
    h, s, v = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    k = torch.remainder(_const((5.0, 3.0, 1.0), x) + 6.0 * h, 6.0)
    w = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return (v - v * s * w).clamp_(0.0, 1.0)


def adjust_hue(x: Tensor, hue_factor: Tensor | float) -> Tensor:
    """Shift the hue by ``hue_factor`` (B,) in [-0.5, 0.5] turns; identity for 1 channel."""
    f = _factor(hue_factor, x)
    if x.shape[-3] == 1:
        return x.clone()
    hsv = rgb_to_hsv(x)
    h = torch.remainder(hsv[:, 0:1] + f, 1.0)
    return hsv_to_rgb(torch.cat((h, hsv[:, 1:]), dim=1))


def color_jitter(x: Tensor, factors: Tensor, order: Tensor, apply: Tensor | None = None) -> Tensor:
    """torchvision ColorJitter with per-sample factors and per-sample op order.

    x (B, C, H, W) float in [0, 1]; factors (B, 4) = (brightness, contrast, saturation, hue);
    order (B, 4) a permutation of 0..3 per sample (0 brightness, 1 contrast, 2 saturation,
    3 hue), applied left to right; apply (B,) bool, False leaves the sample untouched.
    """
    B, C = x.shape[:2]
    if factors.shape != (B, 4) or order.shape != (B, 4):
        raise ValueError(
            f"factors and order must be ({B}, 4), got {tuple(factors.shape)} and "
            f"{tuple(order.shape)}"
        )
    factors = factors.to(device=x.device, dtype=x.dtype)
    order = order.to(x.device)
    if apply is None:
        apply = torch.ones(B, dtype=torch.bool, device=x.device)
    apply = apply.to(x.device).view(B)
    subset = x.device.type in _SUBSET_DEVICES
    one = torch.ones((), dtype=x.dtype, device=x.device)
    for k in range(4):
        op = order[:, k]
        # Brightness, contrast and saturation are all blends ratio*x + (1-ratio)*ref: one
        # fused pass per position, with ratio 1 (exact identity) for samples whose op here is
        # hue or that are not jittered. Saturation is the identity on 1 channel.
        ratio = torch.gather(factors, 1, op.clamp(max=2).view(B, 1)).view(B)
        blend = apply & (op <= 2) & ((op != 2) | (C == 3))
        ratio = torch.where(blend, ratio, one).view(B, 1, 1, 1)
        gray = rgb_to_grayscale(x)
        ref = torch.where((op == 0).view(B, 1, 1, 1), 0.0,
                          torch.where((op == 1).view(B, 1, 1, 1),
                                      gray.mean(dim=(1, 2, 3), keepdim=True), gray))
        x = _blend(x, ref, ratio)
        if C == 3:
            hue = apply & (op == 3)
            if subset:
                # Each sample has hue at one position at most: convert only those samples.
                idx = hue.nonzero().view(-1)
                if idx.numel():
                    x = x.index_copy(0, idx, adjust_hue(x[idx], factors[idx, 3]))
            else:
                x = torch.where(hue.view(B, 1, 1, 1), adjust_hue(x, factors[:, 3]), x)
    return x


# --------------------------------------------------------------------------- geometry


def sample_crop_boxes(batch: int, height: int, width: int,
                      scale: tuple[float, float] = (0.08, 1.0),
                      ratio: tuple[float, float] = (3 / 4, 4 / 3),
                      generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu", tries: int = 10) -> Tensor:
    """RandomResizedCrop boxes as torchvision draws them, vectorised -> (B, 4) int64 (i, j, h, w).

    Per sample: up to ``tries`` candidates with area ~ U(scale) * H * W and
    log aspect ~ U(log ratio); the first that fits is used, at a uniform position; if none
    fits, the central crop clipped to the ratio range (torchvision's fallback).
    """
    device = torch.device(device)
    area = float(height * width)
    u = _rand((batch, tries, 4), generator, device).double()
    target = area * _uniform(scale[0], scale[1], u[..., 0])
    log_r = _uniform(math.log(ratio[0]), math.log(ratio[1]), u[..., 1])
    aspect = torch.exp(log_r)
    # Python's round() (half to even) is what torchvision uses; torch.round matches it.
    w = torch.round(torch.sqrt(target * aspect)).long()
    h = torch.round(torch.sqrt(target / aspect)).long()
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(ok.int(), dim=1, keepdim=True)  # first True (0 if none)
    found = ok.any(dim=1)
    w = torch.gather(w, 1, first).squeeze(1)
    h = torch.gather(h, 1, first).squeeze(1)
    ui = torch.gather(u[..., 2], 1, first).squeeze(1)
    uj = torch.gather(u[..., 3], 1, first).squeeze(1)
    # randint(0, n + 1) as floor(U * (n + 1)), clipped against U rounding to 1.
    i = torch.minimum(torch.floor(ui * (height - h + 1)).long(), height - h)
    j = torch.minimum(torch.floor(uj * (width - w + 1)).long(), width - w)
    # Fallback: central crop, as large as the ratio range allows.
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fh, fw = height, int(round(height * max(ratio)))
    else:
        fw, fh = width, height
    fi, fj = (height - fh) // 2, (width - fw) // 2
    # Scalars as where()'s "other": no host-to-device copy.
    cols = [torch.where(found, v, f) for v, f in ((i, fi), (j, fj), (h, fh), (w, fw))]
    return torch.stack(cols, dim=1)


def _axis_grid(start: Tensor, length: Tensor, out: int, size: int, flip: Tensor | None) -> Tensor:
    """Normalised sampling coordinates (B, out) along one axis for crop [start, start+length)."""
    u = torch.arange(out, device=start.device, dtype=torch.float32).expand(start.shape[0], out)
    if flip is not None:
        u = torch.where(flip.view(-1, 1), (out - 1) - u, u)
    length_f = length.float().view(-1, 1)
    # Source pixel of output u in crop coordinates (align_corners=False), clamped to the crop
    # the way torch's interpolate clamps to its input: crop-then-resize semantics, so pixels
    # outside the box never leak in.
    src = (u + 0.5) * (length_f / out) - 0.5
    src = torch.minimum(src.clamp(min=0.0), length_f - 1.0)
    src = src + start.float().view(-1, 1)
    return (2.0 * src + 1.0) / size - 1.0


def resized_crop(x: Tensor, boxes: Tensor, flip: Tensor | None = None,
                 size: tuple[int, int] | None = None) -> Tensor:
    """Crop each sample to its box and resize bilinearly, with optional horizontal flip.

    x (B, C, H, W) float; boxes (B, 4) int (top i, left j, height h, width w); flip (B,) bool;
    size (out_h, out_w), default (H, W). Equals torchvision's resized_crop (bilinear,
    align_corners=False, no antialias) followed by hflip, done as one batched grid_sample.
    """
    _check_images(x, dtype=None)
    if not x.is_floating_point():
        raise ValueError(f"x must be float images, got {x.dtype}; divide uint8 by 255 first")
    B, _, H, W = x.shape
    out_h, out_w = size if size is not None else (H, W)
    boxes = boxes.to(x.device)
    if boxes.shape != (B, 4):
        raise ValueError(f"boxes must be ({B}, 4) = (i, j, h, w) per sample, got "
                         f"{tuple(boxes.shape)}")
    if flip is not None:
        flip = flip.to(x.device).view(B).bool()
    gx = _axis_grid(boxes[:, 1], boxes[:, 3], out_w, W, flip)  # (B, out_w)
    gy = _axis_grid(boxes[:, 0], boxes[:, 2], out_h, H, None)  # (B, out_h)
    grid = torch.stack((gx.view(B, 1, out_w).expand(B, out_h, out_w),
                        gy.view(B, out_h, 1).expand(B, out_h, out_w)), dim=-1)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border",
                         align_corners=False)


def crop_with_offsets(x: Tensor, offsets: Tensor, flip: Tensor | None = None,
                      padding: int = 4, *, check: bool = True) -> Tensor:
    """Zero-pad by ``padding`` then crop the original size at per-sample offsets.

    x (B, C, H, W) any dtype; offsets (B, 2) int (top, left) in [0, 2 * padding] in padded
    coordinates (``padding, padding`` is the identity); flip (B,) bool mirrors the crop.
    Returns (B, C, H, W) of x's dtype; done as one gather, no loop over samples.
    ``check=False`` skips the range check (a device sync on GPU) for trusted offsets.
    """
    _check_images(x, dtype=None)
    B, C, H, W = x.shape
    offsets = offsets.to(x.device).long()
    if offsets.shape != (B, 2):
        raise ValueError(f"offsets must be ({B}, 2) = (top, left), got {tuple(offsets.shape)}")
    p = int(padding)
    Hp, Wp = H + 2 * p, W + 2 * p
    padded = F.pad(x, (p, p, p, p)) if p > 0 else x
    rows = offsets[:, 0:1] + torch.arange(H, device=x.device)  # (B, H)
    cols = torch.arange(W, device=x.device).expand(B, W)
    if flip is not None:
        cols = torch.where(flip.to(x.device).view(B, 1), (W - 1) - cols, cols)
    cols = offsets[:, 1:2] + cols  # (B, W)
    if check and bool(((offsets < 0) | (offsets > 2 * p)).any()):
        raise ValueError(f"offsets must lie in [0, {2 * p}] for padding {p}")
    idx = (rows.view(B, H, 1) * Wp + cols.view(B, 1, W)).view(B, 1, H * W).expand(B, C, H * W)
    return torch.gather(padded.reshape(B, C, Hp * Wp), 2, idx).view(B, C, H, W)


# --------------------------------------------------------------------------- augmenters


class Normalize:
    """uint8 (B, C, H, W) -> float32 (x / 255 - mean) / std; ``generator`` is ignored."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.stats = _Stats(mean, std)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_images(x)
        return self.stats.from_uint8(x)

    def __repr__(self) -> str:
        return f"Normalize(mean={self.stats.mean.tolist()}, std={self.stats.std.tolist()})"


@dataclass
class ComplexParams:
    """Random parameters of one ComplexAugment call, all (B, ...) on the images' device."""

    boxes: Tensor    # (B, 4) int64 crop (i, j, h, w)
    flip: Tensor     # (B,) bool
    jitter: Tensor   # (B,) bool, colour jitter applied
    factors: Tensor  # (B, 4) float32 brightness, contrast, saturation, hue
    order: Tensor    # (B, 4) int64 op order per sample
    gray: Tensor     # (B,) bool, random grayscale applied


class ComplexAugment:
    """MOIT's "complex" augmentation (spec §2), batched with per-sample randomness.

    RandomResizedCrop(full size, scale, ratio) -> horizontal flip (flip_p) -> ColorJitter
    (brightness, contrast, saturation, hue) with probability jitter_p, ops in random order ->
    RandomGrayscale (gray_p) -> normalise. Parameter ranges match torchvision's transforms.
    Works on float images in [0, 1] throughout, without rounding to uint8 between steps.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], *,
                 scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), flip_p: float = 0.5,
                 jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
                 jitter_p: float = 0.8, gray_p: float = 0.2) -> None:
        if not (0 < scale[0] <= scale[1]):
            raise ValueError(f"scale must be (lo, hi) with 0 < lo <= hi, got {scale}")
        if not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"ratio must be (lo, hi) with 0 < lo <= hi, got {ratio}")
        if len(jitter) != 4 or min(jitter) < 0 or jitter[3] > 0.5:
            raise ValueError(
                "jitter must be (brightness, contrast, saturation, hue) >= 0 with hue <= 0.5, "
                f"got {jitter}"
            )
        for name, p in (("flip_p", flip_p), ("jitter_p", jitter_p), ("gray_p", gray_p)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        self.stats = _Stats(mean, std)
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.flip_p, self.jitter_p, self.gray_p = flip_p, jitter_p, gray_p
        self.jitter = tuple(float(j) for j in jitter)

    def sample_params(self, x: Tensor, generator: torch.Generator | None = None) -> ComplexParams:
        """Draw the per-sample parameters for the batch ``x`` (B, C, H, W)."""
        B, _, H, W = x.shape
        dev = x.device
        boxes = sample_crop_boxes(B, H, W, self.scale, self.ratio, generator, dev)
        u = _rand((B, 11), generator, dev)
        b, c, s, h = self.jitter
        factors = torch.stack((
            _uniform(max(0.0, 1 - b), 1 + b, u[:, 0]),
            _uniform(max(0.0, 1 - c), 1 + c, u[:, 1]),
            _uniform(max(0.0, 1 - s), 1 + s, u[:, 2]),
            _uniform(-h, h, u[:, 3]),
        ), dim=1)
        order = torch.argsort(u[:, 4:8], dim=1)  # a uniform random permutation per sample
        return ComplexParams(
            boxes=boxes,
            flip=u[:, 8] < self.flip_p,
            jitter=u[:, 9] < self.jitter_p,
            factors=factors,
            order=order,
            gray=u[:, 10] < self.gray_p,
        )

    def apply(self, x: Tensor, params: ComplexParams) -> Tensor:
        """Augment uint8 (B, C, H, W) with fixed parameters -> float32 normalised."""
        _check_images(x)
        self.stats.scale_shift(x)  # fail early on a channel mismatch
        out = resized_crop(x.float().div_(255.0), params.boxes, params.flip)
        if any(v != 0 for v in self.jitter):
            out = color_jitter(out, params.factors, params.order, params.jitter)
        if out.shape[1] == 3:
            out = torch.where(params.gray.to(out.device).view(-1, 1, 1, 1), to_grayscale(out), out)
        return self.stats(out)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_images(x)
        return self.apply(x, self.sample_params(x, generator))

    def __repr__(self) -> str:
        return (f"ComplexAugment(scale={self.scale}, ratio={self.ratio}, flip_p={self.flip_p}, "
                f"jitter={self.jitter}, jitter_p={self.jitter_p}, gray_p={self.gray_p})")


@dataclass
class SimpleParams:
    """Random parameters of one SimpleAugment call."""

    offsets: Tensor  # (B, 2) int64 (top, left) in the padded image, in [0, 2 * padding]
    flip: Tensor     # (B,) bool


class SimpleAugment:
    """MOIT+'s "simple" augmentation (spec §4): random crop of the original size from the
    image zero-padded by ``padding`` pixels, horizontal flip with ``flip_p``, normalise."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], *, padding: int = 4,
                 flip_p: float = 0.5) -> None:
        if int(padding) != padding or padding < 0:
            raise ValueError(f"padding must be a non-negative int, got {padding!r}")
        if not 0.0 <= flip_p <= 1.0:
            raise ValueError(f"flip_p must be a probability in [0, 1], got {flip_p}")
        self.stats = _Stats(mean, std)
        self.padding, self.flip_p = int(padding), flip_p

    def sample_params(self, x: Tensor, generator: torch.Generator | None = None) -> SimpleParams:
        B = x.shape[0]
        u = _rand((B, 3), generator, x.device)
        n = 2 * self.padding + 1  # torchvision RandomCrop: randint(0, 2p + 1)
        offsets = torch.clamp(torch.floor(u[:, :2] * n).long(), max=n - 1)
        return SimpleParams(offsets=offsets, flip=u[:, 2] < self.flip_p)

    def apply(self, x: Tensor, params: SimpleParams) -> Tensor:
        _check_images(x)
        self.stats.scale_shift(x)
        crop = crop_with_offsets(x, params.offsets, params.flip, self.padding, check=False)
        return self.stats.from_uint8(crop)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_images(x)
        return self.apply(x, self.sample_params(x, generator))

    def __repr__(self) -> str:
        return f"SimpleAugment(padding={self.padding}, flip_p={self.flip_p})"


Augmenter = Callable[..., Tensor]


def build_augment(name: str, mean: Sequence[float], std: Sequence[float],
                  **options: object) -> Augmenter:
    """Augmenter by name: "complex" (MOIT), "simple" (MOIT+) or "none" (normalise only).

    ``options`` go to the augmenter's constructor (e.g. ``gray_p=0.0``).
    """
    if name == "complex":
        return ComplexAugment(mean, std, **options)  # type: ignore[arg-type]
    if name == "simple":
        return SimpleAugment(mean, std, **options)  # type: ignore[arg-type]
    if name == "none":
        if options:
            raise ValueError(f"augment 'none' takes no options, got {sorted(options)}")
        return Normalize(mean, std)
    raise ValueError(f"unknown augment {name!r}; choose one of {', '.join(AUGMENTS)}")
