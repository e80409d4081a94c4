"""Batched augmentation (spec §2, §4) vs torchvision and hand-made references on real images."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from sklearn.datasets import load_digits

from moit_explore.maths.augment import (
    ComplexAugment,
    Normalize,
    SimpleAugment,
    adjust_hue,
    build_augment,
    color_jitter,
    crop_with_offsets,
    resized_crop,
    rgb_to_grayscale,
    sample_crop_boxes,
)

FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
MEAN1, STD1 = (0.286,), (0.353,)
MEAN3, STD3 = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def _read_idx_images(path: Path, n: int) -> np.ndarray:
    """First n images of an IDX3 gz file: 16-byte big-endian header, then uint8 pixels."""
    with gzip.open(path, "rb") as f:
        header = f.read(16)
        magic, count, rows, cols = np.frombuffer(header, dtype=">u4")
        assert magic == 0x00000803, hex(magic)
        n = min(n, int(count))
        data = f.read(n * int(rows) * int(cols))
    return np.frombuffer(data, dtype=np.uint8).reshape(n, int(rows), int(cols))


@pytest.fixture(scope="module")
def fmnist() -> torch.Tensor:
    """64 Fashion-MNIST images, uint8 (64, 1, 28, 28)."""
    if not FMNIST.exists():
        pytest.skip(f"{FMNIST} missing (apt-get install fashion-mnist or make data)")
    return torch.from_numpy(_read_idx_images(FMNIST, 64).copy()).unsqueeze(1)


@pytest.fixture(scope="module")
def digits_u8() -> torch.Tensor:
    """64 sklearn digits scaled to uint8 (64, 1, 8, 8)."""
    imgs = load_digits().images[:64]
    return torch.from_numpy(np.round(imgs * 255.0 / 16.0).astype(np.uint8)).unsqueeze(1)


@pytest.fixture(scope="module")
def rgb() -> torch.Tensor:
    """16 synthetic colour images, uint8 (16, 3, 32, 32): hue/brightness gradients, a coloured
    Fashion-MNIST-like blob and saturated and gray patches (edge cases of the HSV maths)."""
    g = torch.Generator().manual_seed(3)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    imgs = []
    for k in range(16):
        phase = k / 16
        r = 0.5 + 0.5 * torch.sin(2 * math.pi * (xx + phase))
        gch = 0.5 + 0.5 * torch.sin(2 * math.pi * (yy + 2 * phase))
        b = (xx * yy + phase) % 1.0
        img = torch.stack((r, gch, b)) * (0.3 + 0.7 * torch.rand(3, 1, 1, generator=g))
        img[:, :6, :6] = 1.0  # saturated white
        img[:, -6:, -6:] = 0.0  # black
        img[:, :6, -6:] = 0.4  # gray (zero saturation)
        img[0, -6:, :6] = 1.0  # pure red corner
        img[1:, -6:, :6] = 0.0
        imgs.append(img)
    return (torch.stack(imgs) * 255).round().to(torch.uint8)


def _unnorm(out: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return out.cpu() * s + m


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- basic contract


@pytest.mark.parametrize("kind", ["complex", "simple", "none"])
def test_shapes_dtype_range(kind, fmnist, rgb, digits_u8):
    for x, mean, std in ((fmnist, MEAN1, STD1), (digits_u8, MEAN1, STD1), (rgb, MEAN3, STD3)):
        aug = build_augment(kind, mean, std)
        out = aug(x, generator=_gen(0))
        assert out.shape == x.shape and out.dtype == torch.float32 and out.device == x.device
        back = _unnorm(out, mean, std)
        assert back.min() >= -1e-5 and back.max() <= 1 + 1e-5


def test_normalize_matches_formula(fmnist):
    out = Normalize(MEAN1, STD1)(fmnist)
    ref = (fmnist.double() / 255 - MEAN1[0]) / STD1[0]
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)


def test_bad_inputs(fmnist, rgb):
    aug = ComplexAugment(MEAN1, STD1)
    with pytest.raises(ValueError, match="uint8"):
        aug(fmnist.float())
    with pytest.raises(ValueError, match="channels"):
        ComplexAugment(MEAN3, STD3)(fmnist)  # RGB statistics for grayscale images
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        SimpleAugment(MEAN1, STD1)(fmnist[0])
    with pytest.raises(ValueError, match="complex"):
        build_augment("autoaugment", MEAN1, STD1)
    with pytest.raises(ValueError, match="std"):
        Normalize((0.5,), (0.0,))
    with pytest.raises(ValueError, match="offsets"):
        crop_with_offsets(fmnist[:2], torch.tensor([[0, 9], [0, 0]]), padding=4)


def test_build_augment_types():
    assert isinstance(build_augment("complex", MEAN1, STD1), ComplexAugment)
    assert isinstance(build_augment("simple", MEAN1, STD1), SimpleAugment)
    assert isinstance(build_augment("none", MEAN1, STD1), Normalize)
    assert build_augment("complex", MEAN1, STD1, gray_p=0.0).gray_p == 0.0


def test_defaults_are_the_spec_values():
    # spec §2: RandomResizedCrop(scale (0.08, 1), ratio 3/4..4/3), flip 0.5, ColorJitter
    # (0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale 0.2; spec §4: 4-pixel padding, flip 0.5
    c = build_augment("complex", MEAN3, STD3)
    assert c.scale == (0.08, 1.0) and c.ratio == pytest.approx((3 / 4, 4 / 3))
    assert (c.flip_p, c.jitter, c.jitter_p, c.gray_p) == (0.5, (0.4, 0.4, 0.4, 0.1), 0.8, 0.2)
    s = build_augment("simple", MEAN3, STD3)
    assert (s.padding, s.flip_p) == (4, 0.5)


# --------------------------------------------------------------------------- randomness


@pytest.mark.parametrize("kind", ["complex", "simple"])
def test_identical_images_get_different_outputs(kind, fmnist, rgb):
    for img, mean, std in ((fmnist[5], MEAN1, STD1), (rgb[2], MEAN3, STD3)):
        batch = img.unsqueeze(0).repeat(32, 1, 1, 1)
        out = build_augment(kind, mean, std)(batch, generator=_gen(1)).flatten(1)
        dist = torch.cdist(out, out)
        off_diag = dist[~torch.eye(32, dtype=torch.bool)]
        # Simple augment has only 81 * 2 outcomes, so a few collisions are expected.
        assert (off_diag > 1e-4).float().mean() > (0.99 if kind == "complex" else 0.9)


@pytest.mark.parametrize("kind", ["complex", "simple"])
def test_seeded_determinism(kind, fmnist, rgb):
    for x, mean, std in ((fmnist, MEAN1, STD1), (rgb, MEAN3, STD3)):
        aug = build_augment(kind, mean, std)
        a = aug(x, generator=_gen(7))
        b = aug(x, generator=_gen(7))
        c = aug(x, generator=_gen(8))
        assert torch.equal(a, b)
        assert not torch.equal(a, c)


def test_parameter_frequencies(rgb):
    """Flip, jitter and grayscale probabilities and the uniform op order, over many samples."""
    aug = ComplexAugment(MEAN3, STD3)
    x = torch.zeros(8000, 3, 4, 4, dtype=torch.uint8)
    p = aug.sample_params(x, _gen(0))
    assert p.flip.float().mean().item() == pytest.approx(0.5, abs=0.025)
    assert p.jitter.float().mean().item() == pytest.approx(0.8, abs=0.025)
    assert p.gray.float().mean().item() == pytest.approx(0.2, abs=0.025)
    assert torch.equal(p.order.sort(dim=1).values, torch.arange(4).expand(8000, 4))
    first = torch.bincount(p.order[:, 0], minlength=4).float() / 8000
    torch.testing.assert_close(first, torch.full((4,), 0.25), atol=0.025, rtol=0)
    lo = torch.tensor([0.6, 0.6, 0.6, -0.1])
    hi = torch.tensor([1.4, 1.4, 1.4, 0.1])
    assert torch.all(p.factors >= lo) and torch.all(p.factors <= hi)
    torch.testing.assert_close(p.factors.mean(0), (lo + hi) / 2, atol=0.02, rtol=0)


# --------------------------------------------------------------------------- crop and flip


def test_crop_boxes_match_torchvision_distribution():
    H, W, n = 32, 24, 4000
    ours = sample_crop_boxes(n, H, W, generator=_gen(0)).double()
    img = torch.zeros(1, H, W)
    torch.manual_seed(0)
    ref = torch.tensor(
        [T.RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(n)]
    ).double()
    i, j, h, w = ours.unbind(1)
    assert torch.all(i >= 0) and torch.all(j >= 0)
    assert torch.all(i + h <= H) and torch.all(j + w <= W) and torch.all((h > 0) & (w > 0))
    for k, tol in ((2, 0.5), (3, 0.5)):  # mean crop height and width in pixels
        assert ours[:, k].mean().item() == pytest.approx(ref[:, k].mean().item(), abs=tol)
    area, ref_area = h * w / (H * W), ref[:, 2] * ref[:, 3] / (H * W)
    assert area.mean().item() == pytest.approx(ref_area.mean().item(), abs=0.02)
    centre, ref_centre = i + h / 2, ref[:, 0] + ref[:, 2] / 2
    assert centre.mean().item() == pytest.approx(ref_centre.mean().item(), abs=0.5)


@pytest.mark.parametrize("H,W", [(10, 40), (40, 10), (16, 16)])
def test_crop_fallback_matches_torchvision(H, W):
    # An area scale above 1 never fits, so every sample takes the central fallback.
    ours = sample_crop_boxes(5, H, W, scale=(2.0, 3.0), generator=_gen(0))
    ref = T.RandomResizedCrop.get_params(torch.zeros(1, H, W), [2.0, 3.0], [3 / 4, 4 / 3])
    assert torch.equal(ours, torch.tensor(ref).expand(5, 4))


def test_resized_crop_matches_torchvision(fmnist, rgb):
    for x in (fmnist[:12], rgb[:12]):
        xf = x.float() / 255
        B, _, H, W = x.shape
        boxes = sample_crop_boxes(B, H, W, generator=_gen(4))
        flip = torch.arange(B) % 3 == 0
        ours = resized_crop(xf, boxes, flip)
        for b in range(B):
            ref = TF.resized_crop(xf[b], *boxes[b].tolist(), [H, W],
                                  interpolation=TF.InterpolationMode.BILINEAR, antialias=False)
            if flip[b]:
                ref = TF.hflip(ref)
            torch.testing.assert_close(ours[b], ref, atol=2e-6, rtol=0)


def test_flip_only_equals_torch_flip(fmnist):
    aug = ComplexAugment(MEAN1, STD1, scale=(1, 1), ratio=(1, 1), flip_p=0.5, jitter_p=0,
                         gray_p=0)
    out = aug(fmnist, generator=_gen(5))
    flip = aug.sample_params(fmnist, _gen(5)).flip
    assert 0 < flip.sum() < len(flip)
    plain = Normalize(MEAN1, STD1)(fmnist)
    torch.testing.assert_close(out[flip], torch.flip(plain[flip], dims=[-1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[~flip], plain[~flip], atol=1e-5, rtol=0)


def test_full_crop_reproduces_input(fmnist, digits_u8, rgb):
    for x, mean, std in ((fmnist, MEAN1, STD1), (digits_u8, MEAN1, STD1), (rgb, MEAN3, STD3)):
        aug = ComplexAugment(mean, std, scale=(1, 1), ratio=(1, 1), flip_p=0, jitter_p=0,
                             gray_p=0)
        torch.testing.assert_close(aug(x, generator=_gen(0)), Normalize(mean, std)(x),
                                   atol=1e-5, rtol=0)


def test_grayscale_output(rgb):
    aug = ComplexAugment(MEAN3, STD3, gray_p=1.0)
    out = _unnorm(aug(rgb, generator=_gen(2)), MEAN3, STD3)
    torch.testing.assert_close(out[:, 0], out[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, 0], out[:, 2], atol=1e-5, rtol=0)
    # Same crop and jitter without the grayscale step: the gray image is its luma.
    params = aug.sample_params(rgb, _gen(2))
    params.gray = torch.zeros_like(params.gray)
    colour = _unnorm(aug.apply(rgb, params), MEAN3, STD3)
    torch.testing.assert_close(out[:, :1], TF.rgb_to_grayscale(colour), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- colour jitter


def _colour_cases(fmnist, digits_u8, rgb):
    return [fmnist[:6].float() / 255, digits_u8[:6].float() / 255, rgb[:6].float() / 255]


@pytest.mark.parametrize("ours,theirs,values", [
    (adjust_hue, TF.adjust_hue, [-0.1, 0.1, -0.5, 0.5]),
])
def test_colour_ops_match_torchvision(ours, theirs, values, fmnist, digits_u8, rgb):
    for x in _colour_cases(fmnist, digits_u8, rgb):
        for v in values:
            got = ours(x, torch.full((x.shape[0],), v))
            ref = torch.stack([theirs(img, v) for img in x])
            torch.testing.assert_close(got, ref, atol=3e-6, rtol=0, msg=f"{ours.__name__} {v}")
        # Per-sample factors: each image gets its own.
        f = torch.linspace(values[0], values[1], x.shape[0])
        got = ours(x, f)
        ref = torch.stack([theirs(img, float(v)) for img, v in zip(x, f, strict=True)])
        torch.testing.assert_close(got, ref, atol=3e-6, rtol=0)


def test_grayscale_luma_matches_torchvision(rgb):
    x = rgb.float() / 255
    torch.testing.assert_close(rgb_to_grayscale(x), TF.rgb_to_grayscale(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("channels", [1, 3])
def test_color_jitter_order_matches_sequential_torchvision(channels, fmnist, rgb):
    x = (rgb[:8] if channels == 3 else fmnist[:8]).float() / 255
    g = _gen(11)
    factors = torch.stack((
        0.6 + 0.8 * torch.rand(8, generator=g), 0.6 + 0.8 * torch.rand(8, generator=g),
        0.6 + 0.8 * torch.rand(8, generator=g), -0.1 + 0.2 * torch.rand(8, generator=g)), 1)
    order = torch.stack([torch.randperm(4, generator=g) for _ in range(8)])
    apply = torch.tensor([True] * 7 + [False])
    got = color_jitter(x, factors, order, apply)
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for b in range(8):
        ref = x[b]
        if apply[b]:
            for o in order[b].tolist():
                ref = ops[o](ref, float(factors[b, o]))
        torch.testing.assert_close(got[b], ref, atol=1e-5, rtol=0, msg=f"sample {b}")
    assert torch.equal(got[7], x[7])  # not jittered: bit-exact


def test_masked_hue_path_equals_subset_path(rgb, monkeypatch):
    """The sync-free path used on CUDA (whole batch, masked) gives the CPU path's result."""
    import moit_explore.maths.augment as augment

    aug = ComplexAugment(MEAN3, STD3)
    subset = aug(rgb, _gen(12))
    monkeypatch.setattr(augment, "_SUBSET_DEVICES", ())
    masked = aug(rgb, _gen(12))
    torch.testing.assert_close(masked, subset, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- simple augment


def _hand_crop(img: np.ndarray, top: int, left: int, flip: bool, pad: int) -> np.ndarray:
    """(C, H, W) -> zero-pad, crop (H, W) at (top, left) in padded coords, optional mirror."""
    C, H, W = img.shape
    padded = np.zeros((C, H + 2 * pad, W + 2 * pad), dtype=img.dtype)
    padded[:, pad:pad + H, pad:pad + W] = img
    out = padded[:, top:top + H, left:left + W]
    return out[:, :, ::-1] if flip else out


def test_crop_with_offsets_matches_hand_crop(fmnist, rgb):
    for x in (fmnist[:9], rgb[:9]):
        offsets = torch.tensor([[0, 0], [8, 8], [4, 4], [0, 8], [8, 0], [3, 5], [7, 1], [4, 4],
                                [2, 6]])
        flip = torch.tensor([0, 1, 0, 0, 1, 1, 0, 1, 0]).bool()
        got = crop_with_offsets(x, offsets, flip, padding=4)
        assert got.dtype == torch.uint8
        for b in range(9):
            ref = _hand_crop(x[b].numpy(), *offsets[b].tolist(), bool(flip[b]), 4)
            np.testing.assert_array_equal(got[b].numpy(), ref)
        assert torch.equal(got[2], x[2])  # offset (4, 4) without flip is the identity


def test_simple_augment_is_shifted_copy(fmnist):
    aug = SimpleAugment(MEAN1, STD1)
    out = aug(fmnist, generator=_gen(9))
    params = aug.sample_params(fmnist, _gen(9))
    back = (_unnorm(out, MEAN1, STD1) * 255).round().to(torch.uint8)
    for b in range(len(fmnist)):
        ref = _hand_crop(fmnist[b].numpy(), *params.offsets[b].tolist(), bool(params.flip[b]), 4)
        np.testing.assert_array_equal(back[b].numpy(), ref)
    many = aug.sample_params(torch.zeros(4000, 1, 2, 2, dtype=torch.uint8), _gen(0)).offsets
    assert many.min() == 0 and many.max() == 8
    counts = torch.bincount(many.flatten(), minlength=9).float() / many.numel()
    torch.testing.assert_close(counts, torch.full((9,), 1 / 9), atol=0.02, rtol=0)


# --------------------------------------------------------------------------- devices


def test_generator_on_cpu_for_channels_last_input(rgb):
    aug = ComplexAugment(MEAN3, STD3)
    cl = rgb.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(aug(cl, _gen(3)), aug(rgb, _gen(3)), atol=0, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["complex", "simple", "none"])
def test_cpu_and_cuda_agree(kind, fmnist, rgb):
    for x, mean, std in ((fmnist, MEAN1, STD1), (rgb, MEAN3, STD3)):
        aug = build_augment(kind, mean, std)
        cpu = aug(x, generator=_gen(6))
        gpu = aug(x.cuda(), generator=_gen(6))  # parameters from the same CPU generator
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)
        # A CUDA generator also works and is deterministic.
        gcuda = torch.Generator(device="cuda")
        a = aug(x.cuda(), generator=gcuda.manual_seed(1))
        b = aug(x.cuda(), generator=gcuda.manual_seed(1))
        assert torch.equal(a, b)
