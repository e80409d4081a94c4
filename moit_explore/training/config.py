"""Training configurations: :class:`TrainConfig` (MOIT and baselines) and
:class:`FinetuneConfig` (MOIT+). The named presets are :mod:`moit_explore.training.presets`.

Every field carries a ``help`` text in its metadata; the command line (``moit_explore.cli``)
turns each field into one flag (``--field-name``) with that help, so the CLI and the Python API
are the same thing. :meth:`TrainConfig.validate` checks a configuration before any data is
loaded or any epoch runs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from moit_explore.maths.noise import (
    ASYMMETRIC_DATASETS,
    DATASET_NAMES,
    canonical_dataset,
    has_standard_flip_map,
)
from moit_explore.maths.validation import (
    BACKEND_CHOICES,
    BALANCE_CHOICES,
    DEFAULT_BALANCE,
    DEFAULT_K,
    check_choice,
    check_float,
    check_int,
    check_k,
    k_within_classes,
    median_class_size,
)
from moit_explore.training.methods import TRAINING_METHODS, get_method

__all__ = ["PLACE_FIELDS", "FinetuneConfig", "TrainConfig", "config_differences"]

NOISE_CHOICES = ("none", "symmetric", "asymmetric")
ARCH_CHOICES = ("preact_resnet18", "small_cnn")
SHORTCUT_CHOICES = ("preactivated", "raw")
PROJECTION_CHOICES = ("linear", "nonlinear")
DETECT_CHOICES = ("auto", "epoch", "final", "off")
AMP_CHOICES = ("auto", "bf16", "none")
PIPELINE_CHOICES = ("gpu", "reference")
FEATURE_CHOICES = ("auto", "z", "h")
AUGMENT_CHOICES = ("auto", "complex", "simple", "none")
FINETUNE_AUGMENT_CHOICES = ("simple", "none")
DIST_BN_CHOICES = ("sync", "per-rank")  # moit_explore.training.distributed.BN_CHOICES


def _f(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field with help text (and allowed values) for the CLI."""
    meta = {"help": help}
    if choices is not None:
        meta["choices"] = choices
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for sequence defaults")
    return field(default=default, metadata=meta)


def _per_method(attribute: str) -> str:
    """A method's default of ``attribute``, for every training method (help texts)."""
    return ", ".join(f"{n} {getattr(get_method(n), attribute)}" for n in TRAINING_METHODS)


def _check_epochs_tuple(name: str, value: Any) -> None:
    if not isinstance(value, tuple) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value
    ):
        raise ValueError(f"{name} must be a tuple of positive epoch numbers (CLI: a comma list "
                         f"such as 125,200), got {value!r}")


# fields that say where a run lives or how it reports, not what it learns: never compared when
# a run is resumed or a cached run stands in for a configuration
PLACE_FIELDS = frozenset({"name", "overwrite", "runs_root", "data_root", "progress"})


def config_differences(saved: dict, expected: dict, *, ignore: frozenset[str] = PLACE_FIELDS,
                       missing_differs: bool = True) -> list[str]:
    """The fields of ``expected`` whose value in ``saved`` (a config.json) differs, compared as
    config.json reads them back (tuples as lists). missing_differs: whether a field ``saved``
    lacks (a run of an older version) counts as a difference."""
    def as_json(value: Any) -> Any:
        return json.loads(json.dumps(value, default=str))

    return [k for k, v in expected.items() if k not in ignore
            and (k not in saved and missing_differs
                 or k in saved and as_json(saved[k]) != as_json(v))]


def _check_seed(name: str, value: Any) -> None:
    check_int(name, value, 0)
    if value > 2**63 - 1:  # torch's and NumPy's generators take 64 bits
        raise ValueError(f"{name} must be < 2**63 = {2**63}, got {value}")


@dataclass
class _Schedule:
    """The fields both configurations have, defined and checked once: the optimiser and its
    schedule, mixup, the seed, the device and what a run writes. Defaults: the paper's training
    (FinetuneConfig sets its own epochs, lr and lr_milestones)."""

    epochs: int = _f(250, "training epochs")
    batch_size: int = _f(128, "batch size B")
    drop_last: bool = _f(False, "drop each epoch's last incomplete batch (a deviation: static "
                         "shapes for torch.compile); default False keeps it, as the release "
                         "does, except a tail of one sample")
    lr: float = _f(0.1, "SGD learning rate")
    momentum: float = _f(0.9, "SGD momentum")
    weight_decay: float = _f(1e-4, "SGD weight decay")
    lr_milestones: tuple[int, ...] = _f((125, 200), "epochs from which the LR is multiplied "
                                        "by lr_gamma (comma list; epoch 125 is the first at the "
                                        "lower LR, as the release)")
    lr_gamma: float = _f(0.1, "LR decay factor at each milestone")
    alpha: float = _f(1.0, "mixup Beta(alpha, alpha) parameter (0: no mixing)")
    seed: int = _f(1, "initialisation / data-order / augmentation seed")
    device: str = _f("auto", "cpu, cuda, cuda:N or auto (cuda when available)")
    amp: str = _f("auto", "mixed precision: bf16 autocast, none (fp32); auto = bf16 on CUDA, "
                  "none on CPU (bf16 on CPU is slow)", AMP_CHOICES)
    channels_last: bool = _f(True, "channels_last memory format for the convolutions")
    eval_batch_size: int = _f(1024, "batch size of feature extraction and test evaluation")
    snapshot_epochs: tuple[int, ...] = _f((), "epochs whose embeddings are saved to "
                                          "embeddings/epoch_XXXX.npz (the last is always saved)")
    overwrite: bool = _f(False, "empty an existing run directory of the same name")
    progress: bool = _f(True, "tqdm progress bars")

    # fields added after runs were first written, with the behaviour runs had before them (a
    # plain class attribute: no annotation, so not a field)
    _legacy = {}

    @classmethod
    def from_dict(cls, d: dict) -> Any:
        """Build from a dict (e.g. a run's config.json); unknown keys are ignored, lists become
        tuples. A field that a config.json from an earlier version lacks takes the behaviour
        that version had (``_legacy``), so its runs resume and reload as they were trained."""
        kw = {}
        for f in dataclasses.fields(cls):
            if f.name in d:
                v = d[f.name]
                kw[f.name] = tuple(v) if isinstance(v, list) else v
            elif f.name in cls._legacy:
                kw[f.name] = cls._legacy[f.name]
        return cls(**kw)

    def replace(self, **changes: Any) -> Any:
        """A copy with ``changes`` applied (dataclasses.replace)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def _check_schedule(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            check_int(name, getattr(self, name), 1)
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2 (mixup and the contrastive losses pair "
                             "samples within a batch)")
        _check_seed("seed", self.seed)
        check_float("lr", self.lr, 0.0, low_open=True)
        check_float("momentum", self.momentum, 0.0, 1.0, high_open=True)
        check_float("weight_decay", self.weight_decay, 0.0)
        check_float("lr_gamma", self.lr_gamma, 0.0, low_open=True)
        check_float("alpha", self.alpha, 0.0)
        _check_epochs_tuple("lr_milestones", self.lr_milestones)
        _check_epochs_tuple("snapshot_epochs", self.snapshot_epochs)
        check_choice("amp", self.amp, AMP_CHOICES)
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")
        ):
            raise ValueError(f"device={self.device!r} is not valid; use auto, cpu, cuda or "
                             "cuda:N")


@dataclass
class TrainConfig(_Schedule):
    """One training run (MOIT or a baseline). Field defaults are the paper's CIFAR protocol."""

    _legacy = {"drop_last": True, "shortcut": "raw"}

    preset: str | None = _f(None, "the preset this configuration started from (recorded)")
    method: str = _f("moit", "training method: " + ", ".join(
        f"{n} ({get_method(n).summary})" for n in TRAINING_METHODS), TRAINING_METHODS)
    dataset: str = _f("cifar10", "data set: digits, fashion-mnist, cifar10, cifar100 or "
                      "imagefolder:<path>")
    data_root: str = _f("data", "folder holding the data sets")
    image_size: int | None = _f(None, "resize images to this size (None: native size)")
    image_channels: int = _f(3, "imagefolder only: 1 reads the images as grayscale, 3 as RGB")
    pad_inputs: int = _f(0, "zero-pad every image by this many pixels on each side, train and "
                         "test, after any resize (the CPU regime resizes instead; see "
                         "benchmarks/RESULTS.md)")
    gray_to_rgb: bool = _f(False, "copy a grayscale data set's channel to 3 channels (colour "
                           "images stay as they are)")
    n_train: int | None = _f(None, "stratified training subset size (None: all)")
    n_test: int | None = _f(None, "stratified test subset size (None: all)")
    subset_seed: int = _f(0, "seed of the stratified subset")
    noise: str = _f("symmetric", "synthetic label noise (spec §6)", NOISE_CHOICES)
    rate: float = _f(0.4, "noise rate in [0, 1): the fraction of wrong labels (symmetric) or "
                     "the flip probability (asymmetric)")
    noise_seed: int = _f(42, "seed of the label noise")
    noise_file: str | None = _f(None, "a .npy/.csv of given train labels (e.g. CIFAR-10N); "
                                "replaces synthetic noise")
    augment: str = _f("auto", "training augmentation: complex (spec §2), simple (crop + "
                      "flip), none; auto = the method's own: " + _per_method("augment"),
                      AUGMENT_CHOICES)
    crop_padding: int = _f(4, "zero padding of the simple augmentation's random crop (spec §4: "
                           "4 pixels on 32x32 images; scale it down for tiny images)")
    arch: str = _f("preact_resnet18", "encoder", ARCH_CHOICES)
    width: int = _f(64, "encoder width (channels of the first stage)")
    shortcut: str = _f("preactivated", "preact_resnet18's identity shortcuts carry the block's "
                       "pre-activated input BN-ReLU(x) (preactivated: the release) or its raw "
                       "input x (raw: He et al.'s PreAct ResNet, a deviation)", SHORTCUT_CHOICES)
    projection: str = _f("linear", "projection head (release default: linear)",
                         PROJECTION_CHOICES)
    embed_dim: int = _f(128, "dimension of the L2-normalised projection z")
    tau: float = _f(0.1, "temperature of the contrastive losses")
    xbm_begin: int = _f(3, "the cross-batch memory is used from epoch > xbm_begin")
    xbm_per_class: int = _f(100, "memory slots per class (capacity 2 * this * classes)")
    k: int = _f(DEFAULT_K, "neighbours of the kNN noise detection (at most the median class size)")
    balance: str = _f(DEFAULT_BALANCE, "class balancing of the clean selection",
                      BALANCE_CHOICES)
    correction_start: int = _f(130, "MOIT: semi-supervised classification (clean mask) from "
                               "epoch > correction_start")
    detect: str = _f("auto", "noise detection: epoch (after every epoch), final (once, after "
                     "the last epoch), off; auto = epoch", DETECT_CHOICES)
    detect_features: str = _f("auto", "features searched by the detection: z (projection) or "
                              "h (encoder); auto = the method's own: "
                              + _per_method("detect_features")
                              + " (h where the projection head is never trained)",
                              FEATURE_CHOICES)
    detect_backend: str = _f("auto", "kNN backend of the detection: auto (exact; torch on a "
                             "GPU, else faiss when installed), torch, faiss, faiss-ivf "
                             "(approximate, for millions of images; exact below 20,000)",
                             BACKEND_CHOICES)
    compile: bool = _f(False, "torch.compile the model")
    pipeline: str = _f("gpu", "data pipeline: gpu (uint8 tensors on the device, batched "
                       "augmentation) or reference (torchvision PIL transforms in DataLoader "
                       "workers, fp32; for speed comparisons)", PIPELINE_CHOICES)
    workers: int = _f(2, "DataLoader workers of the reference pipeline")
    dist_bn: str = _f("sync", "under torchrun (several processes): batch norm statistics of the "
                      "global batch (sync: the single-process forward pass) or of each "
                      "process's share (per-rank: fewer collectives, losses differ slightly); "
                      "batch_size is always the global batch", DIST_BN_CHOICES)
    dist_timeout: int = _f(600, "under torchrun: seconds a collective waits for the other "
                           "processes before the job ends with an error (a dead or hung rank)")
    runs_root: str = _f("runs", "folder holding run directories")
    name: str | None = _f(None, "run directory name (default: "
                          "<preset>-<method>-<noise>-<rate>-seed<seed>)")

    # ------------------------------------------------------------------ helpers

    def detect_mode(self) -> str:
        """The effective detection mode ("epoch" | "final" | "off")."""
        return "epoch" if self.detect == "auto" else self.detect

    def feature_kind(self) -> str:
        """The features the detection searches ("z" | "h")."""
        if self.detect_features != "auto":
            return self.detect_features
        return get_method(self.method).detect_features

    def augment_name(self) -> str:
        """The effective training augmentation ("complex" | "simple" | "none")."""
        if self.augment != "auto":
            return self.augment
        return get_method(self.method).augment

    def amp_dtype(self, device_type: str) -> str:
        """The effective mixed precision ("bf16" | "none") on ``device_type``."""
        if self.amp != "auto":
            return self.amp
        return "bf16" if device_type == "cuda" and self.pipeline == "gpu" else "none"

    def default_name(self, preset_name: str | None = None) -> str:
        noise = "file" if self.noise_file else self.noise
        rate = "" if noise in ("none", "file") else f"-{round(self.rate * 100):02d}"
        # the seed too: a seed sweep gets one run directory per seed
        return f"{preset_name or 'custom'}-{self.method}-{noise}{rate}-seed{self.seed}"

    def validate(self) -> TrainConfig:
        """Raise ValueError naming the bad field and the fix; returns self. With ``n_train``
        set, also :meth:`check_training_size` against it."""
        check_choice("method", self.method, TRAINING_METHODS)
        if canonical_dataset(self.dataset) is None and not (
                isinstance(self.dataset, str) and self.dataset.lower().startswith("imagefolder:")):
            raise ValueError(f"dataset={self.dataset!r} is not valid; choose one of: "
                             f"{', '.join(DATASET_NAMES)}, imagefolder:<path>")
        check_choice("noise", self.noise, NOISE_CHOICES)
        check_float("rate", self.rate, 0.0, 1.0, high_open=True)
        if self.noise == "none" and self.rate != 0 and not self.noise_file:
            raise ValueError(f"noise='none' needs rate=0, got rate={self.rate}; pass --rate 0 "
                             "or choose --noise symmetric/asymmetric")
        if self.noise == "asymmetric" and not self.noise_file \
                and not has_standard_flip_map(self.dataset):
            raise ValueError(f"noise='asymmetric' flips classes by the data set's standard map "
                             f"(spec §6), which {self.dataset!r} does not have (only "
                             f"{', '.join(ASYMMETRIC_DATASETS)} do); choose --noise symmetric, or "
                             "give the labels yourself with --noise-file")
        for name in ("n_train", "n_test", "image_size"):
            check_int(name, getattr(self, name), 1, allow_none=True)
        for name in ("subset_seed", "noise_seed"):
            _check_seed(name, getattr(self, name))
        check_choice("arch", self.arch, ARCH_CHOICES)
        check_choice("projection", self.projection, PROJECTION_CHOICES)
        check_choice("shortcut", self.shortcut, SHORTCUT_CHOICES)
        self._check_schedule()
        for name in ("width", "embed_dim", "xbm_per_class", "k"):
            check_int(name, getattr(self, name), 1)
        check_int("workers", self.workers, 0)
        check_int("crop_padding", self.crop_padding, 0)
        check_int("pad_inputs", self.pad_inputs, 0)
        if self.image_channels not in (1, 3):
            raise ValueError(f"image_channels must be 1 (grayscale) or 3 (RGB), got "
                             f"{self.image_channels!r}")
        check_int("xbm_begin", self.xbm_begin, 0)
        check_int("correction_start", self.correction_start, 0)
        check_float("tau", self.tau, 0.0, low_open=True)
        check_choice("balance", self.balance, BALANCE_CHOICES)
        check_choice("detect", self.detect, DETECT_CHOICES)
        check_choice("detect_backend", self.detect_backend, BACKEND_CHOICES)
        check_choice("detect_features", self.detect_features, FEATURE_CHOICES)
        check_choice("augment", self.augment, AUGMENT_CHOICES)
        check_choice("pipeline", self.pipeline, PIPELINE_CHOICES)
        check_choice("dist_bn", self.dist_bn, DIST_BN_CHOICES)
        check_int("dist_timeout", self.dist_timeout, 1)
        if (get_method(self.method).corrects_labels and self.detect in ("off", "final")
                and self.correction_start < self.epochs):
            raise ValueError(f"method {self.method} needs a detection after every epoch for its "
                             f"label correction, not --detect {self.detect}; use --detect epoch "
                             "(or auto), or set --correction-start >= --epochs")
        if self.n_train is not None:
            self.check_training_size(self.n_train)
        return self

    def check_training_size(self, n: int) -> None:
        """The checks that need the number of training images ``n`` (once the data is loaded:
        an image folder's size is known only then): k < n, batch_size <= n."""
        check_k(self.k, n, samples="training images")
        if self.batch_size > n:
            raise ValueError(f"batch_size={self.batch_size} exceeds the {n} training images; "
                             "pass a smaller --batch-size")

    def check_class_sizes(self, labels: Any) -> None:
        """The check that needs the given labels: k at most the median class size, else most
        images' neighbours must come from other classes and outvote their own (a preset's k
        is sized for its own data set; an image folder may be smaller)."""
        median = median_class_size(labels)
        if self.k > median:
            raise ValueError(f"k={self.k} exceeds the median class size ({median} training "
                             f"images), so most images' neighbours would have to come from "
                             f"other classes; pass --k {k_within_classes(self.k, labels)} (half "
                             "the median class) or less")


@dataclass
class FinetuneConfig(_Schedule):
    """MOIT+ fine-tuning (spec §4) of a finished MOIT run on its detected clean samples."""

    # the paper's fine-tuning schedule (spec §4) instead of the training one
    epochs: int = _f(70, "fine-tuning epochs (paper: 70; 140 for 80% symmetric noise)")
    lr: float = _f(0.001, "SGD learning rate")
    lr_milestones: tuple[int, ...] = _f((), "epochs from which the LR is multiplied by "
                                        "lr_gamma (paper, 80% noise: 120)")
    bootstrap_start: int = _f(30, "mixup CE until this epoch, then mixup + hard bootstrapping")
    augment: str = _f("simple", "the single view's augmentation: simple (spec §4: random crop "
                      "with crop_padding + horizontal flip) or none (a deviation, for tiny "
                      "images)", FINETUNE_AUGMENT_CHOICES)
    beta: float = _f(0.2, "hard bootstrapping weight of the model's own prediction")
    name: str = _f("finetune", "sub-folder of the MOIT run that receives the MOIT+ run")

    def validate(self) -> FinetuneConfig:
        """Raise ValueError naming the bad field and the fix; returns self."""
        self._check_schedule()
        check_int("bootstrap_start", self.bootstrap_start, 0)
        check_float("beta", self.beta, 0.0, 1.0)
        check_choice("augment", self.augment, FINETUNE_AUGMENT_CHOICES)
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ValueError(f"name must be a plain folder name, got {self.name!r}")
        return self
