"""Synthetic label noise (spec §6) on real labels: digits and Fashion-MNIST."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from moit_explore.maths.noise import (
    CIFAR10_FLIP_MAP,
    CIFAR100_COARSE,
    FASHION_MNIST_FLIP_MAP,
    NoisyLabels,
    cifar100_flip_map,
    inject_noise,
    labels_from_file,
    load_noise,
    save_noise,
)


@pytest.fixture(scope="module")
def fm_labels(fashion_mnist) -> np.ndarray:
    y = fashion_mnist.train_labels.copy()
    y.flags.writeable = False  # any in-place write by the code under test raises
    return y


@pytest.fixture(scope="module")
def digit_labels(digits) -> np.ndarray:
    y = digits.train_labels.copy()
    y.flags.writeable = False
    return y


def _binomial_ok(k: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(k - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


# ----------------------------------------------------------------------------- symmetric


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.45, 0.8, 0.999])
def test_symmetric_changes_exactly_floor_rate_n_labels_all_wrong(digit_labels, rate):
    n = len(digit_labels)
    out = inject_noise(digit_labels, "symmetric", rate, 10, seed=3)
    assert out.is_noisy.sum() == math.floor(rate * n)
    np.testing.assert_array_equal(out.is_noisy, out.noisy != digit_labels)
    np.testing.assert_array_equal(out.clean, digit_labels)
    assert out.noisy.dtype == np.int64 and out.is_noisy.dtype == bool
    assert out.actual_rate == pytest.approx(math.floor(rate * n) / n)
    assert out.kind == "symmetric" and out.rate == rate and out.seed == 3


def test_symmetric_count_is_exact_despite_float_rounding():
    # 0.29 * 100 == 28.999999999999996 in floating point; the release's intent is 29
    y = np.arange(100) % 10
    assert inject_noise(y, "symmetric", 0.29, 10).is_noisy.sum() == 29


def test_symmetric_wrong_labels_are_uniform_over_wrong_classes(fm_labels):
    out = inject_noise(fm_labels, "symmetric", 0.5, 10, seed=0)
    c = fm_labels[out.is_noisy]
    j = out.noisy[out.is_noisy]
    assert (c != j).all()
    table = np.zeros((10, 10))
    np.add.at(table, (c, j), 1)
    # chi-square of each clean class's 9 wrong targets against uniform; 10 * 8 dof in all
    chi2 = 0.0
    for k in range(10):
        row = np.delete(table[k], k)
        expected = row.sum() / 9
        chi2 += ((row - expected) ** 2 / expected).sum()
    assert chi2 < stats.chi2.ppf(1 - 1e-4, df=80)
    # and which samples are chosen does not depend on the class (hypergeometric, loose bound)
    for k in range(10):
        n_k = (fm_labels == k).sum()
        assert _binomial_ok(int(out.is_noisy[fm_labels == k].sum()), int(n_k), 0.5)


def test_symmetric_uniformity_test_can_fail():
    # the same statistic flags a biased corruption (every wrong label = clean + 1)
    y = np.repeat(np.arange(10), 1000)
    noisy = (y + 1) % 10
    table = np.zeros((10, 10))
    np.add.at(table, (y, noisy), 1)
    row = np.delete(table[0], 0)
    assert ((row - row.sum() / 9) ** 2 / (row.sum() / 9)).sum() > stats.chi2.ppf(1 - 1e-4, 8)


# ----------------------------------------------------------------------------- asymmetric


@pytest.mark.parametrize("dataset, fmap", [("cifar10", CIFAR10_FLIP_MAP),
                                           ("Fashion-MNIST", FASHION_MNIST_FLIP_MAP)])
def test_asymmetric_flips_only_along_the_map_at_rate(fm_labels, dataset, fmap):
    rate = 0.4
    out = inject_noise(fm_labels, "asymmetric", rate, 10, seed=1, dataset=dataset)
    changed = out.is_noisy
    expected_target = np.array([fmap.get(int(c), -1) for c in fm_labels[changed]])
    np.testing.assert_array_equal(out.noisy[changed], expected_target)
    for c in range(10):
        in_c = fm_labels == c
        k = int(out.is_noisy[in_c].sum())
        if c in fmap:
            assert _binomial_ok(k, int(in_c.sum()), rate), (c, k)
        else:
            assert k == 0
    # realised transition: source rows put about `rate` on the target, untouched rows are identity
    for src, dst in fmap.items():
        assert out.transition[src, dst] == pytest.approx(rate, abs=0.03)
        assert out.transition[src, src] == pytest.approx(1 - rate, abs=0.03)


def test_fashion_mnist_map_matches_spec():
    assert FASHION_MNIST_FLIP_MAP == {0: 6, 6: 0, 2: 4, 5: 7, 9: 5}
    assert CIFAR10_FLIP_MAP == {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}


def test_asymmetric_user_flip_map_on_digits(digit_labels):
    fmap = {3: 8, 8: 3, 7: 1}
    out = inject_noise(digit_labels, "asymmetric", 0.3, 10, seed=5, flip_map=fmap)
    src = digit_labels[out.is_noisy]
    assert set(np.unique(src)) <= set(fmap)
    np.testing.assert_array_equal(out.noisy[out.is_noisy], [fmap[int(s)] for s in src])
    assert 0 < out.is_noisy.sum()


def test_asymmetric_rate_zero_changes_nothing(fm_labels):
    out = inject_noise(fm_labels, "asymmetric", 0.0, 10, dataset="cifar10")
    assert not out.is_noisy.any()


def _cycle_ok(fmap: dict[int, int], groups: dict[int, list[int]]) -> None:
    """Each group (fine classes in index order) is the cycle a0->a1->...->a_last->a0."""
    for members in groups.values():
        members = sorted(members)
        for a, b in zip(members, members[1:] + members[:1], strict=True):
            assert fmap[a] == b


def test_cifar100_standard_map_is_the_superclass_cycle():
    fmap = cifar100_flip_map()
    groups: dict[int, list[int]] = {}
    for fine, coarse in enumerate(CIFAR100_COARSE):
        groups.setdefault(coarse, []).append(fine)
    assert len(groups) == 20 and all(len(g) == 5 for g in groups.values())
    assert len(fmap) == 100
    _cycle_ok(fmap, groups)
    assert fmap[0] == 51 and fmap[83] == 0  # apple -> mushroom, sweet pepper -> apple


def test_cifar100_asymmetric_noise_stays_in_superclass():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 100, size=30000)
    coarse = np.asarray(CIFAR100_COARSE)[y]
    a = inject_noise(y, "asymmetric", 0.4, 100, seed=2, dataset="CIFAR100")
    b = inject_noise(y, "asymmetric", 0.4, 100, seed=2, dataset="cifar100", coarse_labels=coarse)
    np.testing.assert_array_equal(a.noisy, b.noisy)
    fmap = cifar100_flip_map()
    np.testing.assert_array_equal(a.noisy[a.is_noisy], [fmap[int(c)] for c in y[a.is_noisy]])
    np.testing.assert_array_equal(np.asarray(CIFAR100_COARSE)[a.noisy], coarse)
    assert _binomial_ok(int(a.is_noisy.sum()), len(y), 0.4)


def test_superclass_cycle_from_given_coarse_labels(digit_labels):
    # two made-up superclasses {0..4} and {5..9}: 0->1->2->3->4->0 and 5->...->9->5
    coarse = digit_labels // 5
    out = inject_noise(digit_labels, "asymmetric", 0.5, 10, seed=0, coarse_labels=coarse)
    src = digit_labels[out.is_noisy]
    expected = np.where(src % 5 == 4, src - 4, src + 1)
    np.testing.assert_array_equal(out.noisy[out.is_noisy], expected)
    _cycle_ok(cifar100_flip_map(coarse, digit_labels, 10), {0: [0, 1, 2, 3, 4],
                                                            1: [5, 6, 7, 8, 9]})


def test_inconsistent_coarse_labels_are_rejected(digit_labels):
    coarse = (digit_labels // 5).copy()
    coarse[np.flatnonzero(digit_labels == 3)[0]] = 1
    with pytest.raises(ValueError, match="fine class 3 appears with two coarse labels"):
        inject_noise(digit_labels, "asymmetric", 0.2, 10, coarse_labels=coarse)


# ----------------------------------------------------------------------------- realised transition


def test_realised_transition_rows(digit_labels):
    y = digit_labels[digit_labels != 4]  # class 4 absent -> its row is zero
    out = inject_noise(y, "symmetric", 0.3, 10, seed=0)
    np.testing.assert_array_equal(out.transition[4], 0.0)
    present = np.delete(np.arange(10), 4)
    np.testing.assert_allclose(out.transition[present].sum(axis=1), 1.0)
    for c in present:
        assert out.transition[c, c] == pytest.approx(1 - out.is_noisy[y == c].mean())


# ----------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("kind, kw", [
    ("symmetric", {}),
    ("asymmetric", {"dataset": "fashion-mnist"}),
])
def test_same_seed_same_labels_other_seed_differs(fm_labels, kind, kw):
    a = inject_noise(fm_labels, kind, 0.3, 10, seed=42, **kw)
    b = inject_noise(fm_labels, kind, 0.3, 10, seed=42, **kw)
    c = inject_noise(fm_labels, kind, 0.3, 10, seed=43, **kw)
    np.testing.assert_array_equal(a.noisy, b.noisy)
    np.testing.assert_array_equal(a.transition, b.transition)
    assert (a.noisy != c.noisy).any()


def test_input_is_never_modified_and_outputs_are_copies(digits):
    y = digits.train_labels.copy()
    before = y.copy()
    for kind, kw in [("none", {}), ("symmetric", {}), ("asymmetric", {"flip_map": {1: 7}})]:
        out = inject_noise(y, kind, 0.0 if kind == "none" else 0.5, 10, **kw)
        np.testing.assert_array_equal(y, before)
        assert not np.shares_memory(out.clean, y) and not np.shares_memory(out.noisy, y)
        out.noisy[:] = 0
        np.testing.assert_array_equal(y, before)


def test_none_is_a_copy(digit_labels):
    out = inject_noise(digit_labels, "none", 0.0, 10)
    np.testing.assert_array_equal(out.noisy, digit_labels)
    assert out.actual_rate == 0.0 and out.kind == "none"


def test_accepts_lists_and_torch_tensors(digit_labels):
    import torch

    a = inject_noise(digit_labels, "symmetric", 0.2, 10, seed=9)
    b = inject_noise(torch.from_numpy(digit_labels.copy()), "symmetric", 0.2, 10, seed=9)
    c = inject_noise(digit_labels.tolist(), "symmetric", 0.2, 10, seed=9)
    np.testing.assert_array_equal(a.noisy, b.noisy)
    np.testing.assert_array_equal(a.noisy, c.noisy)


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("kwargs, match", [
    ({"rate": -0.1}, r"rate must be in \[0, 1\)"),
    ({"rate": 1.0}, r"rate must be in \[0, 1\)"),
    ({"rate": float("nan")}, r"rate must be in \[0, 1\)"),
    ({"kind": "pairflip"}, "unknown noise kind 'pairflip'; valid kinds: none, symmetric"),
    ({"num_classes": 1}, "num_classes must be >= 2"),
    ({"labels": np.zeros((3, 2), dtype=int)}, "must be a 1-D array"),
    ({"labels": np.array([0.0, 1.5])}, "must be integer class indices"),
    ({"labels": np.array([0, 10])}, r"must lie in \[0, 10\).*e\.g\. 10"),
    ({"labels": np.array([-1, 2])}, r"must lie in \[0, 10\)"),
    ({"kind": "none", "rate": 0.2}, "kind='none' makes no noise, so rate must be 0"),
    ({"kind": "asymmetric"}, "needs a flip map"),
    ({"kind": "asymmetric", "dataset": "digits"}, "no standard asymmetric flip map.*flip_map="),
    ({"kind": "asymmetric", "dataset": "mnist"}, "no standard asymmetric flip map.*known: cifar10"),
    ({"kind": "asymmetric", "flip_map": {3: 10}}, r"names class 10, which is not in \[0, 10\)"),
    ({"kind": "asymmetric", "flip_map": {-1: 2}}, r"names class -1"),
    ({"kind": "asymmetric", "flip_map": {4: 4}}, "maps class 4 to itself"),
    ({"kind": "asymmetric", "flip_map": {}}, "non-empty dict"),
    ({"kind": "asymmetric", "dataset": "cifar100"}, "has 100 classes but num_classes=10"),
    ({"kind": "symmetric", "flip_map": {1: 2}}, "flip_map is only used with kind='asymmetric'"),
    ({"kind": "transition"}, "unknown noise kind 'transition'"),
])
def test_validation_errors(kwargs, match):
    args = {"labels": np.arange(20) % 10, "kind": "symmetric", "rate": 0.2, "num_classes": 10}
    args.update(kwargs)
    labels, kind, rate, c = (args.pop(k) for k in ("labels", "kind", "rate", "num_classes"))
    with pytest.raises(ValueError, match=match):
        inject_noise(labels, kind, rate, c, **args)


# ----------------------------------------------------------------------------- files


def test_save_load_roundtrip(tmp_path, fm_labels):
    out = inject_noise(fm_labels, "asymmetric", 0.3, 10, seed=4, dataset="fashion-mnist")
    save_noise(tmp_path / "noise.npz", out)
    back = load_noise(tmp_path / "noise.npz")
    assert isinstance(back, NoisyLabels)
    for key in ("clean", "noisy", "is_noisy", "transition"):
        np.testing.assert_array_equal(getattr(back, key), getattr(out, key))
    assert (back.kind, back.rate, back.seed) == ("asymmetric", 0.3, 4)
    with np.load(tmp_path / "noise.npz") as z:
        assert set(z.files) == {"clean", "noisy", "is_noisy", "transition", "kind", "rate", "seed"}


def test_load_noise_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_noise(tmp_path / "nope.npz")
    np.savez(tmp_path / "bad.npz", noisy=np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match=r"missing array\(s\) \['clean'\]"):
        load_noise(tmp_path / "bad.npz")


def test_labels_from_npy_and_csv(tmp_path, digit_labels):
    ref = inject_noise(digit_labels, "symmetric", 0.25, 10, seed=8)
    np.save(tmp_path / "given.npy", ref.noisy)
    (tmp_path / "given.csv").write_text(
        "index,label\n" + "".join(f"{i},{v}\n" for i, v in enumerate(ref.noisy)))
    (tmp_path / "plain.csv").write_text("".join(f"{v}\n" for v in ref.noisy))
    for name in ("given.npy", "given.csv", "plain.csv"):
        got = labels_from_file(tmp_path / name, digit_labels, 10)
        assert got.kind == "file"
        np.testing.assert_array_equal(got.noisy, ref.noisy)
        np.testing.assert_array_equal(got.is_noisy, ref.is_noisy)
        np.testing.assert_array_equal(got.transition, ref.transition)
        assert got.rate == pytest.approx(ref.actual_rate)


def test_labels_from_file_errors(tmp_path, digit_labels):
    np.save(tmp_path / "short.npy", digit_labels[:-1])
    with pytest.raises(ValueError, match=f"has {len(digit_labels) - 1} labels.*expected length "
                                         f"{len(digit_labels)}"):
        labels_from_file(tmp_path / "short.npy", digit_labels, 10)
    np.save(tmp_path / "range.npy", np.full(len(digit_labels), 12))
    with pytest.raises(ValueError, match=r"must lie in \[0, 10\)"):
        labels_from_file(tmp_path / "range.npy", digit_labels, 10)
    (tmp_path / "cols.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="none is named 'label'"):
        labels_from_file(tmp_path / "cols.csv", digit_labels, 10)
    (tmp_path / "text.csv").write_text("label\n1\ncat\n")
    with pytest.raises(ValueError, match="line 3: label 'cat' is not an integer"):
        labels_from_file(tmp_path / "text.csv", digit_labels, 10)
    (tmp_path / "x.txt").write_text("1\n")
    with pytest.raises(ValueError, match="use .npy or .csv"):
        labels_from_file(tmp_path / "x.txt", digit_labels, 10)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        labels_from_file(tmp_path / "missing.npy", digit_labels, 10)
