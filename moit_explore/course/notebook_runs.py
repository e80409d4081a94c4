"""Helpers shared by the course notebooks: smoke mode, and training runs cached on disk.

The notebooks call the package; anything two notebooks need lives here (or in ``analysis`` /
``viz`` when it is analysis). No algorithm code: :func:`course_run` only picks a configuration
and calls :func:`moit_explore.training.train.train`, and returns the run directory it wrote, which
later
notebooks reuse instead of training again.

Smoke mode (``MOIT_SMOKE=1``, set by ``make test``) makes every notebook finish in well under a
minute on two CPU cores: the "digits" preset trains on scikit-learn's 8x8 digits for 12
epochs. Without it the notebooks use the "cpu-demo" preset, which takes minutes on a laptop CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from moit_explore.maths import noise, validation
from moit_explore.training import config, datasets, engine, presets, runs, train
from moit_explore.training.methods import get_method

__all__ = [
    "COURSE_RUNS",
    "SMOKE",
    "course_run",
    "course_run_dir",
    "data_root",
    "expected_time",
    "flip_map",
    "folder_run",
    "preset",
    "prepare_course",
    "preset_data",
    "projection_cache",
    "project_root",
    "run_data",
    "run_name",
    "runs_dir",
    "seed_overrides",
    "write_demo_imagefolder",
]

SMOKE: bool = os.environ.get("MOIT_SMOKE") == "1"
# MOIT_SEED=N trains every course run with network / data-order seed N (its own cache folder);
# the label noise keeps the preset's draw, the one notebook 1 shows
SEED_ENV = "MOIT_SEED"

# Rough wall-clock times per notebook on a 2-core laptop CPU with an empty run cache; a run
# that is already cached under runs/course/ is reused, so a second pass trains nothing.
_EXPECTED = {
    "digits": "about 10-60 s with an empty run cache, seconds once the runs are cached",
    # each cpu-demo run (60 epochs, 32x32) took 65-130 s with 2 torch threads on a 2-core CPU
    # (`make demo`: CE 65 s, MOIT 127 s; the course's full mode: SupCon / ICL 112-114 s, so
    # notebook 2's six runs about 12 min before its projections, 2026-12-05); notebooks train
    # 0-6 runs. make course trained all 12 in 18.5 min; from its cache notebook 2 took 112 s
    # (its UMAP projections), the others 8-36 s (make book, 2026-12-05)
    "cpu-demo": "about 1-2 min per training run on a 2-core laptop CPU (notebook 2 trains 6, "
                "about 14 min) with an empty run cache; once runs/course/ holds them (make "
                "course), under a minute, notebook 2 about 2 min",
}


def preset(smoke: bool | None = None) -> str:
    """The training preset the notebooks use: "digits" in smoke mode, else "cpu-demo".

    smoke: None follows ``MOIT_SMOKE`` (:data:`SMOKE`); True/False forces it.
    """
    return "digits" if (SMOKE if smoke is None else smoke) else "cpu-demo"


def expected_time(preset_name: str | None = None) -> str:
    """One line saying how long a notebook takes with ``preset_name`` (default: :func:`preset`)."""
    name = preset_name or preset()
    return f"preset {name!r}: {_EXPECTED.get(name, 'depends on the preset')}"


def project_root() -> Path:
    """The repository holding the notebooks (found from the working directory upwards; the
    notebooks run with their own folder as working directory), else the working directory."""
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "moit_explore").is_dir():
            return folder
    return here


def runs_dir() -> Path:
    """Where course runs are cached: ``$MOIT_COURSE_RUNS`` or ``<repository>/runs/course``."""
    env = os.environ.get("MOIT_COURSE_RUNS")
    return Path(env).expanduser() if env else project_root() / "runs" / "course"


def data_root() -> Path:
    """The data folder the package looks in: ``<repository>/data`` (see ``data/README.md``)."""
    return project_root() / "data"


# Asymmetric noise for the digits (the notebooks' smoke mode): confusions a person makes when
# reading handwriting, as many flipping classes as Fashion-MNIST's map (5 of 10).
DIGITS_FLIP_MAP: dict[int, int] = {1: 7, 7: 1, 3: 8, 5: 6, 9: 4}


def flip_map(dataset: str) -> dict[int, int]:
    """The asymmetric-noise flip map (source class -> the class it flips to) the course uses
    for ``dataset``: noise.FASHION_MNIST_FLIP_MAP for Fashion-MNIST, :data:`DIGITS_FLIP_MAP`
    for the digits."""
    key = noise.canonical_dataset(dataset)
    if key == "fashion-mnist":
        return dict(noise.FASHION_MNIST_FLIP_MAP)
    if key == "digits":
        return dict(DIGITS_FLIP_MAP)
    raise ValueError(f"the course has no flip map for {dataset!r}; it uses 'digits' and "
                     "'fashion-mnist'")


def preset_data(preset_name: str | None = None) -> datasets.DatasetBundle:
    """The training and test images a course run of ``preset_name`` (default :func:`preset`)
    trains on: the same data set and subset, so a notebook illustrates noise on exactly the
    images it then trains with."""
    cfg = presets.preset(preset_name or _default_preset(), data_root=str(data_root()))
    return datasets.training_subset(cfg)


def projection_cache() -> Path:
    """Where the notebooks cache 2-D projections (``<runs_dir>/projections``), so a static
    figure and a widget showing the same embedding share one projection."""
    return runs_dir() / "projections"


def write_demo_imagefolder(folder: str | Path, *, per_class: int = 40, n_misfiled: int = 8,
                           classes: tuple[int, ...] = (0, 1, 5, 8), seed: int = 0):
    """Write Fashion-MNIST test images as PNGs into ``folder/<class>/``, a few deliberately in
    the wrong class folder, to try the label-issue finder on an image folder of known truth.

    per_class: images per class; classes: Fashion-MNIST class indices to use (default
    T-shirt/top, Trouser, Sandal, Bag: distinct enough that a short training separates them).
    Returns a DataFrame of the misfiled images: path, true class, folder class.
    """
    if per_class < 2 or n_misfiled < 1 or n_misfiled > per_class * len(classes) // 4:
        raise ValueError(f"need per_class >= 2 and 1 <= n_misfiled <= a quarter of the images "
                         f"({per_class * len(classes) // 4}); got per_class={per_class}, "
                         f"n_misfiled={n_misfiled}")
    fmnist = datasets.load_dataset("fashion-mnist", root=data_root())
    rng = np.random.default_rng(seed)
    # folder names cannot hold "/" (T-shirt/top)
    names = [fmnist.classes[c].replace("/", "-") for c in classes]
    picked = [rng.choice(np.flatnonzero(fmnist.test_labels == c), per_class, replace=False)
              for c in classes]
    items = [(int(i), pos) for pos, idx in enumerate(picked) for i in idx]
    wrong = set(rng.choice(len(items), n_misfiled, replace=False).tolist())
    folder = Path(folder).expanduser()
    rows = []
    for n, (i, pos) in enumerate(items):
        # a misfiled image goes to a random other class folder
        dest = (pos + int(rng.integers(1, len(classes)))) % len(classes) if n in wrong else pos
        path = folder / names[dest] / f"fmnist_test_{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(fmnist.test_images[i, :, :, 0]).save(path)
        if n in wrong:
            rows.append({"path": str(path), "true": names[pos], "folder": names[dest]})
    return pd.DataFrame(rows, columns=["path", "true", "folder"])


def run_name(method: str, noise: str = "symmetric", rate: float = 0.4, preset_name: str = "digits",
             **overrides) -> str:
    """The cache folder name of a course run, e.g. ``digits-moit-symmetric-40``; overrides add a
    short hash of their values, so different settings never share a folder."""
    name = f"{preset_name}-{method.replace('+', 'plus')}-{noise}-{round(rate * 100):02d}"
    if overrides:
        key = json.dumps(overrides, sort_keys=True, default=str).encode()
        name += "-" + hashlib.sha1(key).hexdigest()[:8]
    return name


def seed_overrides() -> dict[str, int]:
    """``{"seed": N}`` when ``MOIT_SEED`` is set (a clear error when it is not an integer),
    else ``{}``: the course runs' default seed."""
    text = os.environ.get(SEED_ENV, "").strip()
    if not text:
        return {}
    try:
        return {"seed": int(text)}
    except ValueError:
        raise ValueError(f"{SEED_ENV}={text!r} is not an integer; set it to a seed such as "
                         f"{SEED_ENV}=2, or unset it for the default seed") from None


def _settings_match(path: Path, expected: dict, key: str | None = None) -> bool:
    """Whether the cached run at ``path`` was trained with the settings ``expected`` (a config
    dict; ``key``: the sub-dict of config.json that holds them). A run from another preset
    or from an older version of the package (a field missing or changed) does not match, so it
    is trained again instead of silently standing in for the settings asked for."""
    try:
        saved = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    saved = saved.get(key, {}) if key else saved
    return not config.config_differences(saved, expected)


def course_noise_file(preset_name: str, rate: float) -> Path | None:
    """Asymmetric noise for a preset whose data set has no standard flip map (the digits): the
    course's :func:`flip_map` drawn with the preset's noise seed, as the trainer draws noise,
    written once under ``runs/course/noise-files/`` as a label file for ``noise_file``. None
    where the trainer has the data set's own map (Fashion-MNIST)."""
    cfg = presets.preset(preset_name, data_root=str(data_root()))
    if noise.has_standard_flip_map(cfg.dataset):
        return None
    if cfg.n_train is not None:
        raise ValueError(f"preset {preset_name!r} trains on a subset; course_noise_file writes "
                         "labels for a full training set only")
    path = runs_dir() / "noise-files" / (f"{preset_name}-asymmetric-{round(rate * 100):02d}-"
                                         f"seed{cfg.noise_seed}.npy")
    if not path.is_file():
        labels = datasets.load_dataset(cfg.dataset, root=cfg.data_root).train_labels
        given = noise.inject_noise(labels, "asymmetric", rate, int(labels.max()) + 1,
                                   seed=cfg.noise_seed, flip_map=flip_map(cfg.dataset)).noisy
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npy")
        np.save(tmp, given.astype(np.int64))
        os.replace(tmp, path)  # whole or not at all
    return path


def _cached(path: Path, expected: dict, key: str | None = None) -> bool:
    return runs.is_finished(path) and _settings_match(path, expected, key)


def _course_overrides(noise: str, rate: float, preset_name: str, overrides: dict) -> dict:
    """A course run's TrainConfig overrides: ``MOIT_SEED``'s seed, and for asymmetric noise on
    a data set without a flip map the course's label file."""
    overrides = {**seed_overrides(), **overrides}
    if noise == "asymmetric" and "noise_file" not in overrides:  # the digits: a label file
        noise_file = course_noise_file(preset_name, rate)
        if noise_file is not None:
            overrides["noise_file"] = str(noise_file)
    return overrides


def course_run_dir(method: str, noise: str = "symmetric", rate: float = 0.4,
                   preset: str | None = None, **overrides) -> Path:
    """Where :func:`course_run` keeps that run (a fine-tune: in its base run's folder)."""
    preset_name = preset or _default_preset()
    overrides = _course_overrides(noise, rate, preset_name, overrides)
    fine_tunes = get_method(method).fine_tunes
    if fine_tunes is not None:
        return course_run_dir(fine_tunes, noise, rate, preset_name, **overrides) / "finetune"
    return runs_dir() / run_name(method, noise, rate, preset_name, **overrides)


def course_run(method: str, noise: str = "symmetric", rate: float = 0.4,
               preset: str | None = None, *, progress: bool = True, **overrides):
    """A finished training run for the course: the cached one under ``runs/course/<name>`` when
    complete and trained with the settings asked for now, else trained now with
    :func:`moit_explore.training.train.train` (tqdm progress). A cached run whose config.json
    differs
    (other settings, or written by a version of the package with other fields) is replaced.

    method: "ce" | "mixup" | "supcon" | "icl" | "moit" | "moit+" ("moit+" fine-tunes the
    cached "moit" run, into its ``finetune/`` folder). preset: default :func:`preset`
    ("digits" under ``MOIT_SMOKE=1``, else "cpu-demo"). overrides: TrainConfig fields.
    Training writes to a temporary folder renamed into place at the end, so an interrupted
    run is never mistaken for a cached one. Returns a :class:`moit_explore.training.runs.Run`.
    """
    preset_name = preset or _default_preset()
    overrides = _course_overrides(noise, rate, preset_name, overrides)
    target = course_run_dir(method, noise, rate, preset_name, **overrides)
    fine_tunes = get_method(method).fine_tunes
    if fine_tunes is not None:  # MOIT+: fine-tune the cached run of the method it continues
        base = course_run(fine_tunes, noise, rate, preset_name, progress=progress, **overrides)
        fcfg = presets.finetune_preset(presets.finetune_preset_for(preset_name, rate, noise))
        expected = fcfg.to_dict()
        if not _cached(target, expected, key="finetune"):
            _train_into(target, expected,
                        lambda tmp: train.finetune(base.path, fcfg.replace(name=tmp.name),
                                                   progress=progress),
                        key="finetune")
        return runs.load_run(target)
    # the repository's data/ folder, whatever the notebook's working directory
    settings = {"data_root": str(data_root()), "method": method, "noise": noise, "rate": rate,
                **overrides}
    if settings.get("noise_file"):  # the file gives the labels: train records no synthetic
        settings.update(noise="none", rate=0.0)  # noise (its config.json says so)
    expected = presets.preset(preset_name, **settings).to_dict()
    if not _cached(target, expected):
        _train_into(target, expected, lambda tmp: train.train(
            out_dir=tmp, preset=preset_name, progress=progress, **settings))
    return runs.load_run(target)


def _train_into(target: Path, expected: dict, fit: Callable[[Path], Any],
                key: str | None = None) -> None:
    """Run ``fit(tmp)``, which trains a run into the folder ``tmp``, then rename ``tmp`` to
    ``target``, so an interrupted run is never mistaken for a cached one. If another process
    put a run matching ``expected`` (see :func:`_cached`) at ``target`` meanwhile, keep that."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    fit(tmp)
    if _cached(target, expected, key):
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)


_default_preset = preset  # course_run's argument ``preset`` shadows the function inside it


def run_data(run):
    """The training and test images of ``run`` (a runs.Run), in the run's order: the same
    subset, so ``run_data(run).train_images[i]`` is the image of the run's sample ``i``."""
    return run.dataset()


def folder_run(bundle: datasets.DatasetBundle, preset: str | None = None, *,
               progress: bool = True, **overrides: Any) -> runs.Run:
    """MOIT trained on a user's image folder (a datasets.DatasetBundle from
    ``load_dataset("imagefolder:...")``, whose folder labels are the given labels): the run,
    whose ``final()["features"]`` the label-issue finder searches with the run's ``k``.

    The run records the folder it trained on (its config.json's dataset, image size and
    channels), so ``run.dataset()`` reloads those images; they train as they are (no padding
    or channel copies, whatever the preset's input preparation). preset: default :func:`preset`;
    overrides: TrainConfig fields. The run is cached under ``runs/course/folders/`` by a hash
    of the images, labels and settings.
    """
    if not bundle.name.startswith("imagefolder:"):
        raise ValueError(f"folder_run trains on an image folder (load_dataset('imagefolder:"
                         f"<path>')), got the data set {bundle.name!r}; use course_run for it")
    preset_name = preset or _default_preset()
    overrides = {**seed_overrides(), **overrides}
    labels = np.asarray(bundle.train_labels, dtype=np.int64)
    digest = hashlib.sha1(np.ascontiguousarray(bundle.train_images).tobytes())
    digest.update(labels.tobytes())
    digest.update(json.dumps([preset_name, overrides], sort_keys=True, default=str).encode())
    target = runs_dir() / "folders" / f"{preset_name}-{digest.hexdigest()[:12]}"
    height, _, channels = bundle.image_shape
    # a small folder (2 classes of 80 images, 3 of 30) trains as it is: a batch no larger than
    # the folder, and a memory that holds two batches of embeddings (train's check); the
    # preset's k is sized for its own data set, so it shrinks with the folder's classes
    p = presets.preset(preset_name)
    batch = min(p.batch_size, len(labels))
    fitted = {"batch_size": batch,
              "xbm_per_class": max(p.xbm_per_class, -(-batch // bundle.num_classes)),
              "k": validation.k_within_classes(p.k, labels)}
    settings = {**fitted, "method": "moit", "noise": "none", "rate": 0.0, "n_train": None,
                "n_test": None, "dataset": bundle.name, "image_size": height,
                "image_channels": channels, "pad_inputs": 0, "gray_to_rgb": False, **overrides}
    expected = presets.preset(preset_name, **settings).to_dict()
    if not _cached(target, expected):
        # no noise to inject: the folder labels are what the detector questions
        clean = noise.inject_noise(labels, "none", 0.0, bundle.num_classes)
        _train_into(target, expected, lambda tmp: train.train(
            out_dir=tmp, preset=preset_name, progress=progress, data=(bundle, clean), **settings))
    return runs.load_run(target)


# --------------------------------------------------------------------------- make course

# every run the six notebooks train in full mode, longest first: (method, rate), symmetric noise,
# or (method, rate, noise). "moit+" trains its MOIT run first, then fine-tunes it (notebooks 3-5
# at 40 %, notebook 5 at 80 %); ("moit", 0.4, "asymmetric") is notebook 4's asymmetric section;
# "folder" is notebook 6's run on the demo image folder.
COURSE_RUNS: tuple[tuple, ...] = (
    ("moit+", 0.4), ("moit+", 0.8), ("moit", 0.4, "asymmetric"), ("icl", 0.0), ("icl", 0.4),
    ("icl", 0.8), ("supcon", 0.0), ("supcon", 0.4), ("supcon", 0.8), ("mixup", 0.4), ("ce", 0.4),
    ("folder", 0.0),
)


def _prepare_one(task: tuple, preset_name: str) -> str:
    """Train (or find cached) one course run in this process, with one torch thread."""
    import tempfile

    engine.set_threads(1)
    method, rate, *noise = task
    if method == "folder":  # notebook 6's demo folder, written as the notebook writes it
        with tempfile.TemporaryDirectory(prefix="moit-folder-") as tmp:
            write_demo_imagefolder(tmp, per_class=40 if preset_name == "digits" else 200,
                                   n_misfiled=8, seed=0)
            bundle = datasets.load_dataset(f"imagefolder:{tmp}", image_size=28, channels=1)
            return str(folder_run(bundle, preset_name, progress=False).path)
    return str(course_run(method, noise[0] if noise else "symmetric", rate, preset_name,
                          progress=False).path)


def prepare_course(preset_name: str | None = None, *, jobs: int = 2,
                   progress: bool = True) -> list[str]:
    """Train every run the six notebooks use (:data:`COURSE_RUNS`) into the run cache, ``jobs``
    single-thread trainings at a time (each in its own process: on 2 cores, two one-thread
    trainings use both, where two default ones would oversubscribe them), with one progress
    bar. Cached runs are kept; ``MOIT_SEED`` applies as in the notebooks. Returns the run
    folders. The notebooks then run in under a minute each (notebook 2 about 2 min)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    name = preset_name or _default_preset()
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive number of processes, got {jobs!r}")
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"  # for the workers
    done: list[str] = []
    bar = tqdm(total=len(COURSE_RUNS), desc=f"course runs ({name}, {jobs} at a time)",
               unit="run", disable=not progress)
    # spawn: a fresh interpreter per worker, whatever threads this process has started
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_prepare_one, task, name): task for task in COURSE_RUNS}
        for future in as_completed(futures):
            method, rate, *noise = futures[future]
            done.append(future.result())
            bar.set_postfix_str(" ".join([method, f"{round(rate * 100)}%", *noise, "ready"]),
                                refresh=False)
            bar.update()
    bar.close()
    return done


if __name__ == "__main__":  # make course
    import argparse
    import time

    ap = argparse.ArgumentParser(description="train every course run (full mode unless "
                                 "MOIT_SMOKE=1) into the run cache", allow_abbrev=False)
    ap.add_argument("--jobs", type=int, default=2, help="trainings at a time, one thread each")
    ap.add_argument("--preset", default=None, help="default: the notebooks' (cpu-demo)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    folders = prepare_course(args.preset, jobs=args.jobs)
    print(f"{len(folders)} course runs ready under {runs_dir()} in "
          f"{time.perf_counter() - t0:.0f} s")
