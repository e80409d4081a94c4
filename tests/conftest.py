"""Shared fixtures: the real data sets, loaded once per test session."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from sklearn.decomposition import PCA

from moit_explore.maths import detection, noise
from moit_explore.maths.neighbors import knn_search
from moit_explore.training import presets, rundir, runs, train
from moit_explore.training.datasets import DatasetBundle, load_dataset


@pytest.fixture(scope="session")
def digits() -> DatasetBundle:
    """scikit-learn's 8x8 digits (1437 train / 360 test)."""
    return load_dataset("digits")


@pytest.fixture(scope="session")
def fashion_mnist() -> DatasetBundle:
    """The full Fashion-MNIST (60000 train / 10000 test), from data/ or Debian's package."""
    return load_dataset("fashion-mnist", download=False)


@pytest.fixture(scope="module")
def digits_xy(digits):
    x = digits.train_images.reshape(len(digits.train_labels), -1).astype(np.float32)
    return x, digits.train_labels


@pytest.fixture(scope="module")
def digits_noisy(digits_xy):
    x, y = digits_xy
    nz = noise.inject_noise(y, "symmetric", 0.3, 10, seed=0)
    return x, nz


def _write_run(root, name, snapshots, final_features, given, true, *, true_known=True,
               metrics_rows=None, detect_k=10):
    """A real run directory through the runs module (the format train.py writes)."""
    path = rundir.create_run_dir(root, name)
    runs.write_json_atomic(path / runs.CONFIG_FILE,
                           {"method": "moit", "true_labels_known": true_known,
                            "classes": [f"c{i}" for i in range(int(given.max()) + 1)]})
    c = int(max(given.max(), true.max())) + 1
    t = np.zeros((c, c))
    np.add.at(t, (true, given), 1)
    noise.save_noise(path / runs.NOISE_FILE, noise.NoisyLabels(
        noisy=given, clean=true, is_noisy=given != true,
        transition=t / np.maximum(t.sum(1, keepdims=True), 1), kind="symmetric", rate=0.3,
        seed=0))
    for row in metrics_rows or []:
        runs.append_metrics(path, row)
    for epoch, feats in snapshots.items():
        runs.save_snapshot(path, epoch, feats, given, true)
    det = detection.detect_noise(final_features, given, c, k=detect_k, backend="torch")
    runs.save_final(path, final_features, det, given, true)
    return runs.load_run(path), det



@pytest.fixture
def write_run():
    """A function that writes a real run directory (the format train.py writes) and loads it."""
    return _write_run


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    """A finished 2-epoch MOIT smoke run (copied by each test that changes it)."""
    root = tmp_path_factory.mktemp("base")
    return train.train(presets.preset("smoke", runs_root=str(root), name="m", epochs=2,
                                      lr_milestones=(1,)))


@pytest.fixture
def run_copy(finished, tmp_path):
    """A copy of the finished run, at ``tmp_path/runs/m``."""
    dst = tmp_path / "runs" / "m"
    shutil.copytree(finished, dst)
    return dst


@pytest.fixture(scope="session")
def pca_digits(digits):
    """Digits with 30 % symmetric noise, PCA features (continuous: no similarity ties)."""
    pixels = digits.train_images.reshape(len(digits.train_labels), -1) / 16.0
    feats = PCA(20, random_state=0).fit_transform(pixels).astype(np.float32)
    nz = noise.inject_noise(digits.train_labels, "symmetric", 0.3, 10, seed=0)
    nb = knn_search(feats, 60, backend="torch")
    return feats, nz, nb
