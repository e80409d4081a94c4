"""``make demo``: CE vs MOIT vs MOIT+ on a noisy Fashion-MNIST subset, on a laptop CPU.

:func:`run_demo` trains cross-entropy and MOIT side by side on the "cpu-demo" preset with 40%
symmetric noise, fine-tunes MOIT into MOIT+, prints a table of what came out (test accuracy at
the last and the best epoch, noise-detection precision / recall / F1 against the true labels)
and writes figures next to the runs:

- ``accuracy.png``: test accuracy per epoch, and training accuracy against the GIVEN labels
  (how much of the noise each method memorises);
- ``detection.png``: precision / recall / F1 of the detected noisy samples per epoch;
- ``flagged.png``: training images MOIT flags as mislabelled, with the given label, the label
  the neighbours suggest, and (for checking) the true label.

- ``memorization.png``: training accuracy on the given labels against the share of them that
  is right.

The table is :func:`moit_explore.reports.summarize_runs`; the figures come from
:mod:`moit_explore.viz`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from moit_explore import config, reports, runs, train, viz

__all__ = ["run_demo", "write_figures"]

# summarize_runs columns shown in the demo's table, with their headings
_SHOWN = {"epochs": "epochs", "test_acc_last": "test acc (last)",
          "test_acc_best": "test acc (best)", "det_precision_last": "det precision",
          "det_recall_last": "det recall", "det_f1_last": "det F1",
          "train_acc_given_last": "train acc on given labels", "time_s": "time (s)"}


# --------------------------------------------------------------------------- table


def _shown(summary: pd.DataFrame) -> pd.DataFrame:
    table = summary.reindex(columns=list(_SHOWN)).rename(columns=_SHOWN)
    table.insert(0, "method", summary.index)
    return table.reset_index(drop=True)


def _format_table(df: Any) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if isinstance(v, float):
                cells.append("n/a" if v != v else (f"{v:.1f}" if c == "time (s)" else f"{v:.3f}"))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- figures


def _label(run: Any) -> str:
    return "MOIT+" if run.method == "moit+" else run.method.upper()


def _label_issue_order(final: dict, n: int) -> np.ndarray:
    """The run's label issues (not selected as clean), most discrepant first, at most n."""
    issues = np.flatnonzero(~final["clean"].astype(bool))
    return issues[np.argsort(-final["discrepancy"][issues], kind="stable")][:n]


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _figures(entries: list[tuple[str, Any]], flag_run: Any, out: Path) -> list[Path]:
    # MOIT+ continues where its base run ended
    frames = reports.continued_metrics(dict(entries))
    right = (1 - entries[0][1].noise.actual_rate, "share of given labels that are right")
    written = [
        _save(viz.plot_training_curves(frames, "test_acc", title="test accuracy"),
              out / "accuracy.png"),
        _save(viz.plot_training_curves(
            frames, "train_acc_given",
            title="training accuracy on the given labels (memorising the noise)",
            reference=right),
            out / "memorization.png"),
        _save(viz.plot_detection_curves(
            {k: v for k, v in frames.items() if k != "MOIT+"}), out / "detection.png"),
    ]
    if flag_run is not None:
        final = flag_run.final()
        order = _label_issue_order(final, 24)
        if len(order):
            fig = viz.plot_flagged_images(
                flag_run.dataset().train_images, final["labels_given"],
                final["soft_labels"].argmax(1), flag_run.classes or None, indices=order,
                true=final["labels_true"], ncols=6, max_images=24)
            fig.suptitle(f"{_label(flag_run)}: training images flagged as mislabelled")
            written.append(_save(fig, out / "flagged.png"))
    return written


def write_figures(run_list: list[Any], out: str | Path) -> list[Path]:
    """accuracy.png, memorization.png, detection.png and flagged.png (of the first MOIT run,
    else the first run with a detection)."""
    out = Path(out)
    entries = []
    for run in run_list:
        entries.append((_label(run), run))
        if run.has_finetune:
            ft = run.finetune()
            entries.append((_label(ft), ft))
    candidates = [r for r in run_list if r.method == "moit"] + list(run_list)
    flag_run = next((r for r in candidates
                     if (r.path / "embeddings" / "final.npz").is_file()
                     and "clean" in r.final()), None)
    try:
        return _figures(entries, flag_run, out)
    except FileNotFoundError as e:  # the data set is not on disk any more
        print(f"skipped a figure: {e}")
        return sorted(out.glob("*.png"))


# --------------------------------------------------------------------------- the demo


def run_demo(root: str | Path = "runs", name: str = "demo", preset: str = "cpu-demo",
             noise: str = "symmetric", rate: float = 0.4, progress: bool = True,
             **overrides: Any) -> Path:
    """Train CE and MOIT, fine-tune MOIT+, print the table and write the figures.

    Writes ``root/name`` (or the first free ``name-2``, ``name-3`` ... when it exists: an
    earlier demo is never overwritten). Returns that folder.
    """
    t0 = time.perf_counter()
    out = runs.unique_run_dir(root, name)
    if out.name != name:
        print(f"{Path(root) / name} exists; writing this demo to {out} instead")
    out.mkdir(parents=True, exist_ok=True)
    base = config.preset(preset, noise=noise, rate=rate, runs_root=str(out), **overrides)
    print(f"moit-explore demo: {base.dataset} ({base.n_train} train / {base.n_test} test "
          f"images), {round(rate * 100)}% {noise} noise, {base.arch} width {base.width}, "
          f"{base.epochs} epochs on {train.resolve_device(base.device)}\n")
    ce_dir = train.train(base.replace(method="ce", name="ce"), progress=progress)
    moit_dir = train.train(base.replace(method="moit", name="moit"), progress=progress)
    ft_dir = train.finetune(moit_dir, progress=progress)
    ce, moit, moit_plus = runs.load_run(ce_dir), runs.load_run(moit_dir), runs.load_run(ft_dir)

    summary = reports.summarize_runs({"CE": ce, "MOIT": moit, "MOIT+": moit_plus})
    text = _format_table(_shown(summary))
    elapsed = time.perf_counter() - t0
    notes = (
        f"- noise: {moit.noise.kind} {moit.noise.rate:.0%} "
        f"({moit.noise.actual_rate:.1%} of the {len(moit.noise)} training labels are wrong)\n"
        "- det precision / recall / F1: samples flagged as noisy vs the truly mislabelled ones "
        "(kNN detection of spec §3 after the last epoch; for CE on its encoder features h). "
        "MOIT+ trains on the MOIT selection, so its row repeats that selection.\n"
        "- test acc (best) is the best epoch seen on the test set: an optimistic figure, "
        "reported next to the last epoch, the paper's number.\n"
        f"- wall time: {elapsed:.0f} s"
    )
    ce_mem = reports.memorisation(summary.loc["CE"])
    ce_fit, clean_frac = ce_mem.train_acc_given, ce_mem.clean_share
    if ce_mem.test_acc_last >= summary.loc["MOIT", "test_acc_last"] and not ce_mem.memorises:
        notes += (
            f"\n- CE beats MOIT here: in this short CPU schedule CE has not yet memorised the "
            f"noise (its accuracy on the given training labels, {ce_fit:.2f}, stays below the "
            f"clean fraction {clean_frac:.2f}), which is where the paper's gains come from "
            "(hundreds of epochs, a ResNet); MOIT's small CNN also trains on heavily augmented "
            "interpolated views. The detection columns are the part that carries over: see "
            "flagged.png. For the real comparison run benchmarks/bench_accuracy.py on a GPU.")
    print("\n" + text + "\n\n" + notes)
    figures = write_figures([ce, moit], out)
    (out / "summary.md").write_text(f"# moit-explore demo\n\n{text}\n\n{notes}\n\nFigures: "
                                    + ", ".join(p.name for p in figures) + "\n")
    print("\nwrote " + ", ".join(str(p) for p in figures) + f", {out / 'summary.md'}")
    print(f"runs: {ce_dir}, {moit_dir}, {ft_dir} (open them with moit_explore.runs.load_run)")
    return out
