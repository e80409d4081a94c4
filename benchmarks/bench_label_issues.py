"""Label issues: the package against cleanlab on the same features and the same noisy labels.

    python benchmarks/bench_label_issues.py                  # 3 noise seeds, a few minutes
    python benchmarks/bench_label_issues.py --seeds 1 2 3 4 5
    python benchmarks/bench_label_issues.py --runs RUN_DIR ...   # on trained embeddings

Features: PCA with 64 components (fitted on the images themselves) of the raw pixels of
Fashion-MNIST training images; no model is trained, so both methods see one fixed, modest
embedding. Settings:

- ``symmetric 40 %`` and ``asymmetric 40 %`` (the package's Fashion-MNIST flip map,
  noise.FASHION_MNIST_FLIP_MAP: about 20 % of the labels flipped) on a 10,000-image stratified
  subset;
- ``imbalanced``: 2,000 ... 100 images per class (a geometric series, drawn once with seed 0
  from the full training set), 20 % symmetric noise;
- ``clean``: the 10,000-image subset with its true labels (every flag is a correct label
  flagged).

Package: ``label_issues.examine_labels(labels, features)`` with its defaults (k =
``label_issues.default_k``, cosine kNN). cleanlab 2.9.0 (the pinned dev dependency): its
documented practice, out-of-fold ``pred_probs`` of 5-fold logistic regression on the same
features, then ``cleanlab.filter.find_label_issues`` and ``cleanlab.rank.
get_label_quality_scores`` (both defaults). Per row and method: flagged, precision, recall,
F1 against the true flips, AUROC of the label-quality score (lower = more likely wrong),
correct labels flagged, seconds (the package: kNN search included; cleanlab: the 5 fits
included); mean and standard deviation over the noise seeds.

``--runs``: instead, on each training run's final embedding (``embeddings/final.npz``, true
labels known): the package, cleanlab with out-of-fold logistic-regression ``pred_probs`` on the
same embedding, and the run's own training selection ("not selected for training", for
reference: it is not a verdict on labels).

``--runs ... --cnn-folds 5``: also cleanlab's usual pipeline on images, per run: the run's
own network (the config's arch, width, input preparation and normalisation, optimiser, LR
schedule, batch size, weight decay and epochs; ``moit_explore.training.train`` on the fold's
data) trained with plain cross-entropy (``method="ce"``, the run's seed) on the given labels
of 4/5 of the run's training images, its softmax on the held-out 1/5, for 5 folds stratified
on the given labels (seed 0): out-of-fold ``pred_probs`` into ``cleanlab.filter.
find_label_issues`` and ``cleanlab.rank.get_label_quality_scores`` (defaults). Seconds: the
5 trainings. ``--cnn-epochs`` shortens the trainings (a smoke test; not cleanlab's pipeline).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from moit_explore.analysis import label_issues
from moit_explore.maths import noise
from moit_explore.training import datasets

SETTINGS = ("symmetric 40 %", "asymmetric 40 %", "imbalanced, 20 % symmetric", "clean")
METRICS = ("flagged", "precision", "recall", "f1", "auroc", "correct_flagged", "seconds")


def pca_features(images: np.ndarray, components: int) -> np.ndarray:
    pixels = images.reshape(len(images), -1).astype(np.float32) / 255.0
    return PCA(components, random_state=0).fit_transform(pixels).astype(np.float32)


def imbalanced_indices(labels: np.ndarray) -> np.ndarray:
    """2,000 ... 100 images per class (geometric), drawn with seed 0."""
    rng = np.random.default_rng(0)
    sizes = np.round(2000 * (100 / 2000) ** (np.arange(10) / 9)).astype(int)
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), s, replace=False)
                           for c, s in enumerate(sizes)])


def evaluate(flagged: np.ndarray, quality: np.ndarray, noisy: np.ndarray,
             seconds: float) -> dict[str, float]:
    tp = int(np.count_nonzero(flagged & noisy))
    fp = int(np.count_nonzero(flagged & ~noisy))
    fn = int(np.count_nonzero(~flagged & noisy))
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * p * r / (p + r) if tp else (0.0 if noisy.any() else float("nan"))
    auroc = roc_auc_score(noisy, -quality) if 0 < noisy.sum() < noisy.size else float("nan")
    return {"flagged": int(flagged.sum()), "precision": p, "recall": r, "f1": f1,
            "auroc": auroc, "correct_flagged": fp, "seconds": seconds}


def package(x: np.ndarray, given: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    t0 = time.perf_counter()
    res = label_issues.examine_labels(given, x, backend="torch")
    return res.is_label_issue, res.label_quality, time.perf_counter() - t0


def cleanlab_pipeline(x: np.ndarray, given: np.ndarray,
                      seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    import cleanlab  # noqa: PLC0415 -- benchmark-only dependency

    t0 = time.perf_counter()
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs convergence notes on unscaled PCA features
        pred_probs = cross_val_predict(LogisticRegression(max_iter=1000), x, given, cv=folds,
                                       method="predict_proba")
    flagged = cleanlab.filter.find_label_issues(given, pred_probs)
    quality = cleanlab.rank.get_label_quality_scores(given, pred_probs)
    return flagged, quality, time.perf_counter() - t0


def cnn_pred_probs(path: str, folds: int, epochs: int | None = None,
                   fold_seed: int = 0) -> tuple[np.ndarray, float]:
    """Out-of-fold softmax of the run's own network trained with cross-entropy (``folds``
    stratified folds of its training images, on their given labels); (pred_probs, seconds)."""
    from moit_explore.maths import augment, models  # noqa: PLC0415
    from moit_explore.maths.noise import NoisyLabels, realised_transition  # noqa: PLC0415
    from moit_explore.training import engine, runs, train  # noqa: PLC0415
    from moit_explore.training.config import TrainConfig  # noqa: PLC0415
    from moit_explore.training.pipelines import to_nchw  # noqa: PLC0415

    run = runs.load_run(path)
    final = run.final()
    given = np.asarray(final["labels_given"], dtype=np.int64)
    true = np.asarray(final["labels_true"], dtype=np.int64)
    if run.noise is not None and not np.array_equal(run.noise.noisy, given):
        raise ValueError(f"{path}: the final file's given labels are not the run's noise record")
    bundle = run.dataset()  # the run's subset, padded / 3 channels, its normalisation
    if len(bundle.train_labels) != len(given) or not np.array_equal(bundle.train_labels, true):
        raise ValueError(f"{path}: the reloaded images are not the run's training images")
    cfg = TrainConfig.from_dict(run.config)
    c = bundle.num_classes
    pred_probs = np.full((len(given), c), np.nan)
    split = StratifiedKFold(folds, shuffle=True, random_state=fold_seed)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cnn-folds-") as tmp:
        for f, (tr, ho) in enumerate(split.split(np.zeros(len(given)), given)):
            t_fold = time.perf_counter()
            # the held-out fifth is the fold's "test set" (its accuracy, against the true
            # labels, lands in the fold's metrics); normalisation: the whole subset's, as the
            # run's
            fold = dataclasses.replace(
                bundle, train_images=bundle.train_images[tr], train_labels=true[tr],
                test_images=bundle.train_images[ho], test_labels=true[ho], train_coarse=None,
                test_coarse=None, given_train_labels=None, train_paths=None)
            noisy = NoisyLabels(noisy=given[tr].copy(), clean=true[tr].copy(),
                                is_noisy=given[tr] != true[tr],
                                transition=realised_transition(true[tr], given[tr], c),
                                kind="file", rate=float(np.mean(given[tr] != true[tr])), seed=-1)
            fcfg = cfg.replace(method="ce", noise="none", rate=0.0, noise_file=None,
                               detect="off", snapshot_epochs=(), overwrite=True, progress=False,
                               runs_root=tmp, name=f"fold{f}", device="cpu",
                               **({"epochs": epochs} if epochs else {}))
            out = train.train(fcfg, data=(fold, noisy), out_dir=Path(tmp) / f"fold{f}")
            state = runs.load_checkpoint(out / runs.CHECKPOINT_FILE)
            model = models.build_model(cfg.arch, c, bundle.image_shape[2], width=cfg.width,
                                       projection=cfg.projection, embed_dim=cfg.embed_dim,
                                       shortcut=cfg.shortcut)
            model.load_state_dict(state["model"])
            logits, _, _ = engine.embed(model, to_nchw(fold.test_images, torch.device("cpu")),
                                        augment.Normalize(bundle.mean, bundle.std),
                                        cfg.eval_batch_size)
            pred_probs[ho] = torch.softmax(logits, dim=1).numpy()
            pred = pred_probs[ho].argmax(1)
            fit = float(runs.read_metrics(out)["train_acc_given"].iloc[-1])
            print(f"    {Path(path).name}, fold {f + 1}/{folds}: held-out accuracy against the "
                  f"true labels {np.mean(pred == true[ho]):.3f}, against the given "
                  f"{np.mean(pred == given[ho]):.3f}; given labels fitted {fit:.3f}; "
                  f"{time.perf_counter() - t_fold:.0f} s", flush=True)
    return pred_probs, time.perf_counter() - t0


def cleanlab_on(pred_probs: np.ndarray, given: np.ndarray,
                seconds: float) -> tuple[np.ndarray, np.ndarray, float]:
    import cleanlab  # noqa: PLC0415 -- benchmark-only dependency

    t0 = time.perf_counter()
    flagged = cleanlab.filter.find_label_issues(given, pred_probs)
    quality = cleanlab.rank.get_label_quality_scores(given, pred_probs)
    return flagged, quality, seconds + time.perf_counter() - t0


def on_runs(paths: list[str], cnn_folds: int = 0, cnn_epochs: int | None = None) -> None:
    from moit_explore.training import runs  # noqa: PLC0415

    print("| run | method | flagged | precision | recall | F1 | AUROC | correct labels flagged "
          "| seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for path in paths:
        run = runs.load_run(path)
        final = run.final()
        x = final["features"].astype(np.float32)
        given, true = final["labels_given"], final["labels_true"]
        noisy = given != true
        name = f"{Path(path).name} ({len(given)} images, {noisy.mean():.0%} wrong)"
        rows = {"package": package(x, given), "cleanlab": cleanlab_pipeline(x, given, 0)}
        if cnn_folds:
            pred_probs, secs = cnn_pred_probs(path, cnn_folds, cnn_epochs)
            label = (f"cleanlab, out-of-fold CE CNN ({cnn_folds} folds"
                     + (f", {cnn_epochs} epochs" if cnn_epochs else "") + ")")
            rows[label] = cleanlab_on(pred_probs, given, secs)
        if "clean" in final:
            rows["not selected for training"] = (~final["clean"].astype(bool),
                                                 -final["discrepancy"], float("nan"))
        for method, (flagged, quality, secs) in rows.items():
            r = evaluate(flagged, quality, noisy, secs)
            print(f"| {name} | {method} | " + " | ".join(fmt([r[m]], m) for m in METRICS)
                  + " |")


def fmt(values: list[float], key: str) -> str:
    v = np.asarray(values, dtype=float)
    if np.isnan(v).all():
        return "n/a"
    if key in ("flagged", "correct_flagged"):
        return f"{np.nanmean(v):.0f} ± {np.nanstd(v):.0f}"
    if key == "seconds":
        return f"{np.nanmean(v):.1f}"
    return f"{np.nanmean(v):.3f} ± {np.nanstd(v):.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="noise seeds")
    ap.add_argument("--components", type=int, default=64)
    ap.add_argument("--runs", nargs="+", metavar="RUN_DIR", default=None,
                    help="compare on these runs' final embeddings instead")
    ap.add_argument("--cnn-folds", type=int, default=0, metavar="K",
                    help="with --runs: also cleanlab on out-of-fold pred_probs of the run's "
                         "network trained with cross-entropy on K folds (cleanlab: 5)")
    ap.add_argument("--cnn-epochs", type=int, default=None,
                    help="with --cnn-folds: train each fold this many epochs (default: the "
                         "run's)")
    args = ap.parse_args()
    if args.cnn_folds and not args.runs:
        ap.error("--cnn-folds needs --runs")
    torch.set_num_threads(1)
    if args.runs:
        on_runs(args.runs, args.cnn_folds, args.cnn_epochs)
        return
    t_all = time.perf_counter()
    full = datasets.load_dataset("fashion-mnist", download=False)
    sub = datasets.subset(full, n_train=10_000, n_test=0, seed=0)
    x_bal, y_bal = pca_features(sub.train_images, args.components), sub.train_labels
    imb = imbalanced_indices(full.train_labels)
    x_imb, y_imb = pca_features(full.train_images[imb], args.components), full.train_labels[imb]
    data = {
        "symmetric 40 %": (x_bal, y_bal, "symmetric", 0.4),
        "asymmetric 40 %": (x_bal, y_bal, "asymmetric", 0.4),
        "imbalanced, 20 % symmetric": (x_imb, y_imb, "symmetric", 0.2),
        "clean": (x_bal, y_bal, None, 0.0),
    }
    print(f"Fashion-MNIST, PCA-{args.components} of the pixels; balanced: 10,000-image "
          f"stratified subset; imbalanced: {len(imb)} images (2,000 ... 100 per class); noise "
          f"seeds {args.seeds}; {platform.machine()}, torch {torch.__version__}, 1 thread\n")
    results: dict[tuple[str, str], dict[str, list[float]]] = {}
    for name in SETTINGS:
        x, clean, kind, rate = data[name]
        seeds = args.seeds if kind else args.seeds[:1]  # clean labels: nothing to draw
        for seed in seeds:
            given = (noise.inject_noise(clean, kind, rate, 10, seed=seed,
                                        dataset="fashion-mnist").noisy if kind else clean)
            noisy = np.asarray(given) != np.asarray(clean)
            for method in ("package", "cleanlab"):
                flagged, quality, secs = (package(x, given) if method == "package"
                                          else cleanlab_pipeline(x, given, seed))
                row = results.setdefault((name, method), {m: [] for m in METRICS})
                for key, v in evaluate(flagged, quality, noisy, secs).items():
                    row[key].append(v)
            print(f"  {name}, seed {seed}: package F1 {results[name, 'package']['f1'][-1]:.3f}"
                  f", cleanlab F1 {results[name, 'cleanlab']['f1'][-1]:.3f}", flush=True)
    print("\n| setting | method | flagged | precision | recall | F1 | AUROC | correct labels "
          "flagged | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for (name, method), row in results.items():
        print(f"| {name} | {method} | " + " | ".join(fmt(row[m], m) for m in METRICS) + " |")
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
