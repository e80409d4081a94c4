"""Models (spec §1): shapes, heads, initialisation, parameter count, training on real digits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits

from moit_explore.maths.models import (
    PreActBlock,
    PreActResNet18,
    SmallConvNet,
    build_model,
    reset_classifier,
)

ARCHS = ["preact_resnet18", "small_cnn"]
SHAPES = [(3, 32, 32), (1, 28, 28), (1, 8, 8)]


def _width(arch: str) -> int:
    # Narrow ResNets keep the CPU tests fast; the structure does not depend on the width.
    return 16 if arch == "preact_resnet18" else 32


@pytest.fixture(scope="module")
def digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    y = torch.tensor(d.target, dtype=torch.long)
    return (x - 0.5) / 0.5, y


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("projection", ["linear", "nonlinear"])
def test_output_shapes_and_unit_norm(arch, shape, projection):
    torch.manual_seed(0)
    m = build_model(arch, 7, shape[0], width=_width(arch), projection=projection, embed_dim=24)
    x = torch.randn(5, *shape)
    logits, z = m(x)
    assert logits.shape == (5, 7)
    assert z.shape == (5, 24)
    assert z.dtype == torch.float32
    torch.testing.assert_close(z.norm(dim=1), torch.ones(5), atol=1e-5, rtol=0)
    h = m.features(x)
    assert h.shape == (5, m.feature_dim)
    # The heads really sit on h.
    torch.testing.assert_close(m.classifier(h), logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(F.normalize(m.projector(h), dim=1), z, atol=1e-5, rtol=1e-5)


def test_feature_dim():
    assert PreActResNet18(10).feature_dim == 512
    assert PreActResNet18(10, width=16).feature_dim == 128
    assert SmallConvNet(10, 1, width=32).feature_dim == 128
    assert build_model("small_cnn", 10, 1, width=8).feature_dim == 32


def test_projection_heads_structure():
    lin = build_model("preact_resnet18", 10, 3, width=8, projection="linear", embed_dim=32)
    assert isinstance(lin.projector, nn.Linear)
    assert (lin.projector.in_features, lin.projector.out_features) == (64, 32)
    mlp = build_model("preact_resnet18", 10, 3, width=8, projection="nonlinear", embed_dim=32)
    layers = list(mlp.projector)
    assert [type(m) for m in layers] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert layers[0].bias is None and layers[0].out_features == 1024
    assert layers[3].out_features == 32


def _preact_param_count(num_classes: int, in_ch: int = 3, width: int = 64,
                        embed_dim: int = 128) -> int:
    """PreAct ResNet-18 + heads, counted from the architecture's formula."""
    def conv(cin, cout, k):
        return cin * cout * k * k

    def bn(c):
        return 2 * c

    total = conv(in_ch, width, 3) + bn(width)  # stem conv + BN (release: BN+ReLU after it)
    cin = width
    for mult, stride in zip((1, 2, 4, 8), (1, 2, 2, 2), strict=True):
        cout = width * mult
        for b in range(2):
            total += bn(cin) + conv(cin, cout, 3) + bn(cout) + conv(cout, cout, 3)
            if b == 0 and (stride != 1 or cin != cout):
                total += conv(cin, cout, 1)
            cin = cout
    # no final BN: h is the pooled output of the last block
    total += cin * num_classes + num_classes  # classifier
    total += cin * embed_dim + embed_dim  # linear projector
    return total


def test_param_count_preact_resnet18():
    m = PreActResNet18(10)
    n = sum(p.numel() for p in m.parameters())
    assert n == _preact_param_count(10)
    assert 11.1e6 < n < 11.3e6  # the well-known ~11.2M of ResNet-18 on CIFAR-10
    n1 = sum(p.numel() for p in PreActResNet18(100, in_channels=1, width=32).parameters())
    assert n1 == _preact_param_count(100, in_ch=1, width=32)


def test_init_kaiming_fan_out_and_bn():
    torch.manual_seed(0)
    m = PreActResNet18(10)
    conv = m.layer3[1].conv2  # 256 -> 256, 3x3
    fan_out = conv.out_channels * 9
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.02)
    # fan_out, not fan_in: a conv whose two fans differ (128 -> 256) tells them apart
    conv = m.layer3[0].conv1
    assert conv.in_channels != conv.out_channels
    fan_out, fan_in = conv.out_channels * 9, conv.in_channels * 9
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.03)
    assert abs(conv.weight.std().item() - math.sqrt(2.0 / fan_in)) > 0.1 * math.sqrt(2.0 / fan_in)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            assert torch.all(mod.weight == 1) and torch.all(mod.bias == 0)
    assert not any(isinstance(mod, nn.MaxPool2d) for mod in m.modules())
    assert m.conv1.stride == (1, 1) and m.conv1.kernel_size == (3, 3)


def test_preact_resnet_stem_bn_relu_and_no_final_bn():
    # spec §1 (the release): conv stem -> BN+ReLU -> four stages -> average pool of the last
    # block's raw output (no BN+ReLU after the last stage)
    torch.manual_seed(0)
    m = PreActResNet18(10, width=8)
    assert isinstance(m.bn1, nn.BatchNorm2d) and m.bn1.num_features == 8
    with torch.no_grad():
        for bn in (mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    m.eval()
    x = torch.randn(3, 3, 16, 16)
    out = F.relu(m.bn1(m.conv1(x)))
    out = m.layer4(m.layer3(m.layer2(m.layer1(out))))
    expected = out.mean(dim=(2, 3))
    torch.testing.assert_close(m.features(x), expected, atol=1e-5, rtol=1e-5)
    assert (expected < 0).any()  # not ReLU'd: no activation after the last block
    bns = [name for name, mod in m.named_modules() if isinstance(mod, nn.BatchNorm2d)]
    assert bns[0] == "bn1" and all(n.startswith("layer") for n in bns[1:])


def test_preact_block_shortcuts():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 6, 6)
    same = PreActBlock(8, 8, 1).eval()
    assert same.shortcut is None
    nn.init.zeros_(same.conv2.weight)
    # release (default): the identity carries the pre-activated input, as the conv shortcut
    torch.testing.assert_close(same(x), F.relu(same.bn1(x)))
    assert (same(x) >= 0).all() and not torch.allclose(same(x), x)
    raw = PreActBlock(8, 8, 1, shortcut="raw").eval()
    nn.init.zeros_(raw.conv2.weight)
    torch.testing.assert_close(raw(x), x)  # He et al.: the identity of the raw input
    down = PreActBlock(8, 16, 2).eval()
    nn.init.zeros_(down.conv2.weight)
    # Projection shortcut on the pre-activated input.
    expected = down.shortcut(F.relu(down.bn1(x)))
    torch.testing.assert_close(down(x), expected)
    assert down(x).shape == (2, 16, 3, 3)


@pytest.mark.parametrize("arch", ARCHS)
def test_reset_classifier_changes_head_only(arch):
    torch.manual_seed(0)
    m = build_model(arch, 10, 1, width=_width(arch))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    reset_classifier(m)
    after = m.state_dict()
    for k, v in before.items():
        if k.startswith("classifier."):
            assert not torch.equal(v, after[k]), k
        else:
            assert torch.equal(v, after[k]), k


def test_reset_classifier_bad_model():
    with pytest.raises(ValueError, match="classifier"):
        reset_classifier(nn.Linear(3, 3))


@pytest.mark.parametrize("arch", ARCHS)
def test_gradient_reaches_stem(arch):
    torch.manual_seed(0)
    m = build_model(arch, 10, 1, width=_width(arch))
    logits, z = m(torch.randn(4, 1, 28, 28))
    (F.cross_entropy(logits, torch.arange(4)) + z[:, 0].sum()).backward()
    stem = m.conv1 if arch == "preact_resnet18" else m.blocks[0][0]
    assert stem.weight.grad is not None
    assert stem.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in m.parameters())


@pytest.mark.parametrize("arch", ARCHS)
def test_channels_last_bf16_autocast(arch):
    torch.manual_seed(0)
    m = build_model(arch, 10, 3, width=_width(arch)).to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 32, 32).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, z = m(x)
    assert torch.isfinite(logits).all() and torch.isfinite(z).all()
    assert z.dtype == torch.float32
    torch.testing.assert_close(z.norm(dim=1), torch.ones(4), atol=1e-5, rtol=0)
    m.eval()
    ref, _ = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, _ = m(x)
    # bf16 has ~3 significant digits: the logits agree loosely with fp32.
    assert (low.float() - ref).abs().max() < 0.1 * ref.abs().max() + 0.05


def test_invalid_arguments():
    with pytest.raises(ValueError, match="preact_resnet18"):
        build_model("resnet50", 10, 3)
    with pytest.raises(ValueError, match="nonlinear"):
        build_model("small_cnn", 10, 3, projection="mlp")
    with pytest.raises(ValueError, match="num_classes"):
        build_model("small_cnn", 0, 3)


def test_eval_is_deterministic():
    torch.manual_seed(0)
    m = build_model("small_cnn", 10, 1, width=16).eval()
    x = torch.randn(3, 1, 28, 28)
    a, za = m(x)
    b, zb = m(x)
    assert torch.equal(a, b) and torch.equal(za, zb)
    # Eval mode uses running stats: a sample's output does not depend on the rest of the batch.
    single, _ = m(x[:1])
    torch.testing.assert_close(single, a[:1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_learns_real_digits(arch, digits_tensors):
    """A few epochs of SGD on the 8x8 digits reach well above chance on held-out images."""
    x, y = digits_tensors
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    tr, te = perm[:1400], perm[1400:]
    torch.manual_seed(0)
    m = build_model(arch, 10, 1, width=16)
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    for _ in range(4):
        m.train()
        for idx in tr[torch.randperm(len(tr), generator=g)].split(64):
            logits, _ = m(x[idx])
            loss = F.cross_entropy(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    m.eval()
    with torch.no_grad():
        acc = (m(x[te])[0].argmax(1) == y[te]).float().mean().item()
    assert acc > 0.8, acc
    assert np.isfinite(loss.item())


def test_shortcut_option_reaches_every_block_and_is_checked():
    for shortcut in ("preactivated", "raw"):
        m = build_model("preact_resnet18", 10, 3, width=8, shortcut=shortcut)
        blocks = [b for b in m.modules() if isinstance(b, PreActBlock)]
        assert len(blocks) == 8 and {b.shortcut_from for b in blocks} == {shortcut}
    assert build_model("preact_resnet18", 10, 3, width=8).layer1[0].shortcut_from == "preactivated"
    with pytest.raises(ValueError, match="shortcut"):
        build_model("preact_resnet18", 10, 3, width=8, shortcut="identity")
