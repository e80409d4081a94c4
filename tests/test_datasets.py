"""Data loading: real digits and Fashion-MNIST, and fixtures written in the real on-disk formats."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from moit_explore.maths.noise import CIFAR100_COARSE
from moit_explore.training import datasets
from moit_explore.training.datasets import (
    DataNotFoundError,
    DatasetBundle,
    channel_stats,
    fetch,
    load_dataset,
    read_idx,
    subset,
)

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture
def no_system_fmnist(monkeypatch, tmp_path):
    """Hide Debian's Fashion-MNIST so that only ``root`` is searched."""
    monkeypatch.setattr(datasets, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-system-copy")


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _write_fmnist(folder: Path, n_train: int = 12, n_test: int = 5, gz: bool = True,
                  seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        if gz:
            with gzip.open(folder / f"{name}.gz", "wb") as f:
                f.write(_idx_bytes(arr))
        else:
            (folder / name).write_bytes(_idx_bytes(arr))
    return arrays


def _cifar_batch(rng, n: int, **labels) -> dict:
    return {"batch_label": "fixture", "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "filenames": [f"img_{i}.png" for i in range(n)], **labels}


def _dump(path: Path, obj: dict, bytes_keys: bool = False) -> None:
    if bytes_keys:  # how a Python 3 pickle.load(encoding="bytes") reader would see the real files
        obj = {k.encode(): v for k, v in obj.items()}
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _write_cifar10(root: Path, rows: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    data, labels = [], []
    for i in range(1, 6):
        b = _cifar_batch(rng, rows, labels=rng.integers(0, 10, rows).tolist())
        _dump(folder / f"data_batch_{i}", b, bytes_keys=(i == 2))
        data.append(b["data"])
        labels += b["labels"]
    _dump(folder / "test_batch", _cifar_batch(rng, 4, labels=[0, 1, 2, 9]))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]
    _dump(folder / "batches.meta", {"num_cases_per_batch": rows, "label_names": names,
                                    "num_vis": 3072})
    return np.concatenate(data), np.array(labels)


def _write_cifar100(root: Path) -> dict:
    rng = np.random.default_rng(2)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    splits = {}
    for split, n in (("train", 40), ("test", 10)):
        fine = rng.integers(0, 100, n)
        coarse = np.asarray(CIFAR100_COARSE)[fine]
        b = _cifar_batch(rng, n, fine_labels=fine.tolist(), coarse_labels=coarse.tolist())
        _dump(folder / split, b)
        splits[split] = b
    _dump(folder / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                            "coarse_label_names": [f"coarse{i}" for i in range(20)]})
    return splits


def _png(path: Path, color, size=(10, 12), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


# ----------------------------------------------------------------------------- digits


def test_digits_shapes_dtypes_and_split(digits):
    from sklearn.datasets import load_digits

    assert digits.train_images.shape == (1437, 8, 8, 1)
    assert digits.test_images.shape == (360, 8, 8, 1)
    assert digits.train_images.dtype == np.uint8 and digits.train_labels.dtype == np.int64
    assert digits.classes == [str(i) for i in range(10)] and digits.num_classes == 10
    assert digits.image_shape == (8, 8, 1)
    assert digits.train_images.max() == 255 and digits.train_images.min() == 0
    assert digits.true_labels_known and digits.given_train_labels is None
    # stratified: each class's test share is within one image of 360/1797 of it
    full = load_digits().target
    for c in range(10):
        assert abs((digits.test_labels == c).sum() - 360 * (full == c).mean()) <= 1
    # train and test together are exactly sklearn's images (scaled 0..16 -> 0..255), no overlap
    ref = np.rint(load_digits().images * 255 / 16).astype(np.uint8).reshape(1797, -1)
    ours = np.concatenate([digits.train_images, digits.test_images]).reshape(1797, -1)
    ref_rows = sorted(map(bytes, np.concatenate([ref, full[:, None].astype(np.uint8)], 1)))
    ours_labels = np.concatenate([digits.train_labels, digits.test_labels])[:, None]
    ours_rows = sorted(map(bytes, np.concatenate([ours, ours_labels.astype(np.uint8)], 1)))
    assert ref_rows == ours_rows


def test_digits_split_is_fixed_and_stats_match(digits):
    again = load_dataset("digits")
    np.testing.assert_array_equal(again.train_labels, digits.train_labels)
    np.testing.assert_array_equal(again.test_images, digits.test_images)
    x = digits.train_images / 255.0
    assert digits.mean[0] == pytest.approx(x.mean(), abs=1e-12)
    assert digits.std[0] == pytest.approx(x.std(), abs=1e-12)


def test_image_size_resizes(digits):
    b = load_dataset("digits", image_size=16)
    assert b.train_images.shape == (1437, 16, 16, 1) and b.test_images.shape == (360, 16, 16, 1)
    assert b.train_images.dtype == np.uint8
    # a blurred upscale keeps the mean brightness close to the original
    assert b.mean[0] == pytest.approx(digits.mean[0], abs=0.02)


def test_channel_stats_against_numpy():
    x = np.random.default_rng(0).integers(0, 256, (50, 7, 5, 3), dtype=np.uint8)
    mean, std = channel_stats(x)
    np.testing.assert_allclose(mean, (x / 255.0).mean(axis=(0, 1, 2)), atol=1e-12)
    np.testing.assert_allclose(std, (x / 255.0).std(axis=(0, 1, 2)), atol=1e-12)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'; valid names: digits, "
                                         "fashion-mnist, cifar10, cifar100, imagefolder"):
        load_dataset("mnist")


# ----------------------------------------------------------------------------- Fashion-MNIST


def test_fashion_mnist_real_files(fashion_mnist):
    b = fashion_mnist
    assert b.train_images.shape == (60000, 28, 28, 1) and b.test_images.shape == (10000, 28, 28, 1)
    assert b.train_images.dtype == np.uint8 and b.train_labels.dtype == np.int64
    assert b.classes[0] == "T-shirt/top" and b.classes[9] == "Ankle boot"
    assert b.classes[6] == "Shirt" and len(b.classes) == 10
    np.testing.assert_array_equal(np.bincount(b.train_labels), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(b.test_labels), [1000] * 10)
    assert b.mean[0] == pytest.approx(0.2860, abs=5e-4)
    assert b.std[0] == pytest.approx(0.3530, abs=5e-4)


def test_idx_fixture_is_read_exactly(tmp_path, no_system_fmnist):
    written = _write_fmnist(tmp_path / "fashion-mnist")
    b = load_dataset("fashion-mnist", root=tmp_path, download=False)
    np.testing.assert_array_equal(b.train_images[..., 0], written["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(b.train_labels, written["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(b.test_images[..., 0], written["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(b.test_labels, written["t10k-labels-idx1-ubyte"])
    assert b.mean[0] == pytest.approx(written["train-images-idx3-ubyte"].mean() / 255)


def test_root_copy_wins_over_the_system_one(tmp_path):
    # the real Debian copy is visible here, but root/fashion-mnist comes first
    _write_fmnist(tmp_path / "fashion-mnist", n_train=7)
    assert load_dataset("fashion-mnist", root=tmp_path, download=False).train_images.shape[0] == 7


def test_uncompressed_idx_and_torchvision_layout(tmp_path, no_system_fmnist):
    written = _write_fmnist(tmp_path / "FashionMNIST" / "raw", gz=False)
    b = load_dataset("fashion-mnist", root=tmp_path, download=False)
    np.testing.assert_array_equal(b.train_labels, written["train-labels-idx1-ubyte"])


@pytest.mark.parametrize("damage, match", [
    (lambda raw: b"\x00\x00\x09\x03" + raw[4:], "IDX file has 3 dimension"),  # wrong ndim
    (lambda raw: b"\x12\x34\x08\x01" + raw[4:], "bad IDX magic number 0x12340801"),
    (lambda raw: raw[:-3], "truncated or corrupt"),
    (lambda raw: raw[:2], "too short for an IDX header"),
])
def test_corrupt_idx_is_a_clear_error(tmp_path, no_system_fmnist, damage, match):
    folder = tmp_path / "fashion-mnist"
    _write_fmnist(folder)
    path = folder / "train-labels-idx1-ubyte.gz"
    with gzip.open(path, "rb") as f:
        raw = f.read()
    with gzip.open(path, "wb") as f:
        f.write(damage(raw))
    with pytest.raises(ValueError, match=match) as e:
        load_dataset("fashion-mnist", root=tmp_path, download=False)
    assert "train-labels-idx1-ubyte.gz" in str(e.value)


def test_not_gzip_and_mismatched_counts(tmp_path, no_system_fmnist):
    folder = tmp_path / "fashion-mnist"
    written = _write_fmnist(folder)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"not a gzip file at all")
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz: cannot read"):
        load_dataset("fashion-mnist", root=tmp_path, download=False)
    _write_fmnist(folder)
    with gzip.open(folder / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(_idx_bytes(written["train-labels-idx1-ubyte"][:-1]))
    with pytest.raises(ValueError, match="train has 12 images but 11 labels"):
        load_dataset("fashion-mnist", root=tmp_path, download=False)


def test_read_idx_roundtrip_other_shapes(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "x").write_bytes(_idx_bytes(arr))
    np.testing.assert_array_equal(read_idx(tmp_path / "x", ndim=3), arr)


def test_missing_fashion_mnist_names_every_place_and_the_command(tmp_path, no_system_fmnist):
    root = tmp_path / "empty"
    root.mkdir()
    with pytest.raises(DataNotFoundError) as e:
        load_dataset("fashion-mnist", root=root, download=False)
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError)
    for place in (root / "fashion-mnist", tmp_path / "no-system-copy",
                  root / "FashionMNIST" / "raw"):
        assert str(place) in msg
    assert "sudo apt-get install dataset-fashion-mnist" in msg and "make data" in msg


def test_fetch_returns_the_folder_found(tmp_path, no_system_fmnist):
    _write_fmnist(tmp_path / "fashion-mnist")
    assert fetch("fashion-mnist", root=tmp_path) == tmp_path / "fashion-mnist"
    assert (fetch("digits") / "digits.csv.gz").is_file()


def test_fetch_without_network_says_how(tmp_path, monkeypatch, no_system_fmnist):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("no network (simulated)")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(DataNotFoundError, match=r"(?s)fetch cifar10.*no network \(simulated\)"):
        fetch("cifar10", root=tmp_path)
    with pytest.raises(DataNotFoundError, match=r"(?s)apt-get install.*no network \(simulated\)"):
        load_dataset("fashion-mnist", root=tmp_path, download=True)


# ----------------------------------------------------------------------------- CIFAR


def test_cifar10_fixture_in_torchvision_format(tmp_path):
    data, labels = _write_cifar10(tmp_path)
    b = load_dataset("cifar10", root=tmp_path, download=False)
    assert b.train_images.shape == (15, 32, 32, 3) and b.test_images.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(b.train_labels, labels)
    np.testing.assert_array_equal(b.test_labels, [0, 1, 2, 9])
    assert b.classes[1] == "automobile" and b.num_classes == 10
    # rows are CHW: pixel (h, w) of channel c is data[c * 1024 + h * 32 + w]
    for i, h, w, c in [(0, 0, 0, 0), (4, 5, 17, 1), (14, 31, 2, 2)]:
        assert b.train_images[i, h, w, c] == data[i, c * 1024 + h * 32 + w]
    assert b.train_coarse is None


def test_cifar10_missing_batch_and_corrupt_pickle(tmp_path):
    _write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "data_batch_4").unlink()
    with pytest.raises(DataNotFoundError, match=r"(?s)missing: data_batch_4\).*fetch cifar10"):
        load_dataset("cifar10", root=tmp_path, download=False)
    (folder / "data_batch_4").write_bytes(b"\x80\x02garbage")
    with pytest.raises(ValueError, match="data_batch_4: cannot unpickle"):
        load_dataset("cifar10", root=tmp_path, download=False)


def test_cifar100_fixture_with_coarse_labels(tmp_path):
    splits = _write_cifar100(tmp_path)
    b = load_dataset("cifar100", root=tmp_path, download=False)
    assert b.train_images.shape == (40, 32, 32, 3) and b.num_classes == 100
    np.testing.assert_array_equal(b.train_labels, splits["train"]["fine_labels"])
    np.testing.assert_array_equal(b.train_coarse, splits["train"]["coarse_labels"])
    np.testing.assert_array_equal(b.test_coarse, splits["test"]["coarse_labels"])
    assert b.classes[7] == "fine7"
    d = splits["test"]["data"]
    assert b.test_images[3, 10, 20, 2] == d[3, 2 * 1024 + 10 * 32 + 20]
    small = subset(b, n_train=10, seed=0)
    np.testing.assert_array_equal(
        small.train_coarse, np.asarray(CIFAR100_COARSE)[small.train_labels])


def test_missing_cifar100_message(tmp_path):
    with pytest.raises(DataNotFoundError) as e:
        load_dataset("cifar100", root=tmp_path, download=False)
    msg = str(e.value)
    assert str(tmp_path / "cifar-100-python") in msg
    assert "python -m moit_explore fetch cifar100" in msg


# ----------------------------------------------------------------------------- imagefolder


def test_imagefolder_without_split(tmp_path):
    colors = {"cat": (200, 10, 10), "dog": (10, 200, 10)}
    for name, col in colors.items():
        for i in range(3):
            _png(tmp_path / "pets" / name / f"{i}.png", col)
    (tmp_path / "pets" / "dog" / "notes.txt").write_text("not an image")  # ignored
    b = load_dataset(f"imagefolder:{tmp_path / 'pets'}")
    assert b.train_images.shape == (6, 32, 32, 3) and b.test_images.shape == (0, 32, 32, 3)
    assert b.classes == ["cat", "dog"] and not b.true_labels_known
    np.testing.assert_array_equal(b.train_labels, [0, 0, 0, 1, 1, 1])
    assert b.train_paths[3].endswith("dog/0.png") and len(b.train_paths) == 6
    np.testing.assert_array_equal(b.train_images[0, 5, 5], colors["cat"])
    np.testing.assert_array_equal(b.train_images[5, 31, 0], colors["dog"])
    gray = load_dataset(f"imagefolder:{tmp_path / 'pets'}", channels=1, image_size=8)
    assert gray.train_images.shape == (6, 8, 8, 1)


@pytest.mark.parametrize("test_name", ["test", "val"])
def test_imagefolder_with_split(tmp_path, test_name):
    for split, n in (("train", 2), (test_name, 1)):
        for c, col in (("a", 30), ("b", 220)):
            for i in range(n):
                _png(tmp_path / split / c / f"{i}.png", col, mode="L")
    b = load_dataset(f"imagefolder:{tmp_path}", image_size=16)
    assert b.train_images.shape == (4, 16, 16, 3) and b.test_images.shape == (2, 16, 16, 3)
    np.testing.assert_array_equal(b.test_labels, [0, 1])
    assert b.test_images[1].min() == 220
    assert all("/train/" in p for p in b.train_paths)


def test_imagefolder_bad_input(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'nowhere'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class folders in"):
        load_dataset(f"imagefolder:{tmp_path / 'empty'}")
    _png(tmp_path / "one" / "a" / "0.png", (1, 2, 3))
    (tmp_path / "one" / "b").mkdir()
    with pytest.raises(ValueError, match=r"class folder\(s\) without images .*: b"):
        load_dataset(f"imagefolder:{tmp_path / 'one'}")
    _png(tmp_path / "one" / "b" / "0.png", (1, 2, 3))
    (tmp_path / "one" / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match=r"cannot read image .*b/broken\.png"):
        load_dataset(f"imagefolder:{tmp_path / 'one'}")
    _png(tmp_path / "split" / "train" / "a" / "0.png", (1, 2, 3))
    _png(tmp_path / "split" / "test" / "zebra" / "0.png", (1, 2, 3))
    with pytest.raises(ValueError, match="class folder\\(s\\) zebra that .* lacks"):
        load_dataset(f"imagefolder:{tmp_path / 'split'}")
    _png(tmp_path / "notrain" / "test" / "a" / "0.png", (1, 2, 3))
    with pytest.raises(ValueError, match="has a test/ folder but no train/ folder"):
        load_dataset(f"imagefolder:{tmp_path / 'notrain'}")


# ----------------------------------------------------------------------------- given labels


def test_noisy_labels_from_npy_and_csv(tmp_path, digits):
    given = (digits.train_labels + 1) % 10
    np.save(tmp_path / "y.npy", given)
    (tmp_path / "y.csv").write_text("label\n" + "\n".join(map(str, given)) + "\n")
    for name in ("y.npy", "y.csv"):
        b = load_dataset("digits", noisy_labels=tmp_path / name)
        np.testing.assert_array_equal(b.given_train_labels, given)
        assert b.given_train_labels.dtype == np.int64
    np.save(tmp_path / "short.npy", given[:100])
    with pytest.raises(ValueError, match="has 100 labels but digits has 1437 training images; "
                                         "expected length 1437"):
        load_dataset("digits", noisy_labels=tmp_path / "short.npy")
    np.save(tmp_path / "big.npy", given + 5)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\) for 10 classes"):
        load_dataset("digits", noisy_labels=tmp_path / "big.npy")


# ----------------------------------------------------------------------------- subset


def test_subset_is_stratified_and_deterministic(digits):
    s = subset(digits, n_train=500, n_test=100, seed=3)
    assert len(s.train_labels) == 500 and len(s.test_labels) == 100
    for full, part, n in ((digits.train_labels, s.train_labels, 500),
                          (digits.test_labels, s.test_labels, 100)):
        share = np.bincount(full, minlength=10) / len(full)
        assert (np.abs(np.bincount(part, minlength=10) - n * share) < 1).all()
    again = subset(digits, n_train=500, n_test=100, seed=3)
    np.testing.assert_array_equal(again.train_images, s.train_images)
    other = subset(digits, n_train=500, n_test=100, seed=4)
    assert not np.array_equal(other.train_images, s.train_images)
    # untouched original; mean recomputed from the subset
    assert len(digits.train_labels) == 1437
    assert s.mean[0] == pytest.approx(s.train_images.mean() / 255)


def test_subset_carries_paths_and_given_labels(digits):
    marker = np.arange(len(digits.train_labels))
    b = DatasetBundle(**{**digits.__dict__, "given_train_labels": marker,
                         "train_paths": [f"img{i}" for i in marker]})
    s = subset(b, n_train=100, seed=0)
    idx = s.given_train_labels  # the original index of every kept sample
    assert (np.diff(idx) > 0).all()
    np.testing.assert_array_equal(s.train_images, digits.train_images[idx])
    np.testing.assert_array_equal(s.train_labels, digits.train_labels[idx])
    assert s.train_paths == [f"img{i}" for i in idx]
    assert len(subset(b, n_train=10_000).train_labels) == 1437  # larger than N keeps all
    with pytest.raises(ValueError, match="n_train must be a non-negative integer"):
        subset(b, n_train=-1)


def test_subset_of_fashion_mnist_is_balanced(fashion_mnist):
    s = subset(fashion_mnist, n_train=1000, n_test=200, seed=0)
    np.testing.assert_array_equal(np.bincount(s.train_labels), [100] * 10)
    np.testing.assert_array_equal(np.bincount(s.test_labels), [20] * 10)


def test_prepare_inputs_equals_a_cifar_format_copy(tmp_path, fashion_mnist):
    """pad 2 + gray_to_rgb on Fashion-MNIST gives exactly the images and normalisation of a
    CIFAR-10 folder (torchvision's pickles) written from the zero-padded, 3-channel images."""
    s = subset(fashion_mnist, n_train=50, n_test=20, seed=0)
    prepared = datasets.prepare_inputs(s, pad=2, gray_to_rgb=True)
    assert prepared.image_shape == (32, 32, 3)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()

    def rows(images):  # (N, 28, 28, 1) -> CIFAR rows (N, 3072), CHW order
        x = np.repeat(np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0))), 3, axis=3)
        return x.transpose(0, 3, 1, 2).reshape(len(x), -1)

    train_rows = np.array_split(rows(s.train_images), 5)
    train_labels = np.array_split(s.train_labels, 5)
    for i in range(5):
        _dump(folder / f"data_batch_{i + 1}", {"data": train_rows[i],
                                               "labels": train_labels[i].tolist()})
    _dump(folder / "test_batch", {"data": rows(s.test_images), "labels": s.test_labels.tolist()})
    _dump(folder / "batches.meta", {"label_names": s.classes})
    copy = load_dataset("cifar10", tmp_path, download=False)
    np.testing.assert_array_equal(prepared.train_images, copy.train_images)
    np.testing.assert_array_equal(prepared.test_images, copy.test_images)
    np.testing.assert_allclose(prepared.mean, copy.mean, rtol=1e-12)
    np.testing.assert_allclose(prepared.std, copy.std, rtol=1e-12)
    # the padding lowers the mean of the normalisation (a black border)
    assert prepared.mean[0] < s.mean[0]
    # nothing asked, nothing changed; bad input names the fix
    assert datasets.prepare_inputs(s) is s
    with pytest.raises(ValueError, match="non-negative"):
        datasets.prepare_inputs(s, pad=-1)
    # colour images keep their channels
    assert datasets.prepare_inputs(prepared, gray_to_rgb=True) is prepared


def test_training_subset_prepares_inputs_from_the_config(fashion_mnist):
    from moit_explore.training.presets import preset

    cfg = preset("smoke", dataset="fashion-mnist", n_train=40, n_test=10, pad_inputs=2,
                 gray_to_rgb=True)
    b = datasets.training_subset(cfg, download=False)
    native = datasets.training_subset(cfg.replace(pad_inputs=0, gray_to_rgb=False),
                                      download=False)
    assert b.image_shape == (32, 32, 3) and native.image_shape == (28, 28, 1)
    np.testing.assert_array_equal(b.train_images[:, 2:30, 2:30, 2], native.train_images[..., 0])
    assert (b.train_images[:, :2] == 0).all() and (b.test_images[:, :, -2:] == 0).all()
    with pytest.raises(ValueError, match="pad_inputs"):
        cfg.replace(pad_inputs=-2).validate()
