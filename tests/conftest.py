"""Shared fixtures: the real data sets, loaded once per test session."""

from __future__ import annotations

import pytest

from moit_explore.training.datasets import DatasetBundle, load_dataset


@pytest.fixture(scope="session")
def digits() -> DatasetBundle:
    """scikit-learn's 8x8 digits (1437 train / 360 test)."""
    return load_dataset("digits")


@pytest.fixture(scope="session")
def fashion_mnist() -> DatasetBundle:
    """The full Fashion-MNIST (60000 train / 10000 test), from data/ or Debian's package."""
    return load_dataset("fashion-mnist", download=False)
