"""``make demo``: CE vs MOIT vs MOIT+ on a noisy Fashion-MNIST subset, on a laptop CPU.

:func:`run_demo` trains cross-entropy and MOIT side by side on the "cpu-demo" preset with 40%
symmetric noise, fine-tunes MOIT into MOIT+, prints a table of what came out (test accuracy at
the last and the best epoch, noise-detection precision / recall / F1 against the true labels)
and writes figures next to the runs:

- ``accuracy.png``: test accuracy per epoch, and training accuracy against the GIVEN labels
  (how much of the noise each method memorises);
- ``detection.png``: precision / recall / F1 of the detected noisy samples per epoch;
- ``flagged.png``: the label issues of MOIT's final embedding (analysis.label_issues), worst
  first, with the given label, the suggested label and (for checking) the true label.

- ``memorization.png``: training accuracy on the given labels against the share of them that
  is right.

The table is :func:`moit_explore.analysis.reports.summarize_runs`; the figures come from
:mod:`moit_explore.course.figures`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from moit_explore.analysis import health, label_issues, reports
from moit_explore.course import figures
from moit_explore.training import presets, rundir, runs, train
from moit_explore.training.methods import get_method

__all__ = ["describe", "detection_over_training", "run_demo", "write_figures"]

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
    return get_method(run.method).label


def _label_issue_order(issues: label_issues.LabelIssues, n: int) -> np.ndarray:
    """The label issues, worst label_quality first, at most n."""
    order = issues.ranked()
    return order[issues.is_label_issue[order]][:n]


def health_lines(run: Any) -> list[str]:
    """One sentence on the label health of ``run``'s final embedding (analysis.health): the
    share of label issues next to the true share of wrong labels, and the most confused pair."""
    issues, run = label_issues.examine_run(run)
    report = health.health_report(issues, class_names=run.classes or None, top_pairs=1)
    o = report.overall
    line = (f"Label health of MOIT's final embedding (label_issues, k = {o['k']}): "
            f"{o['n_label_issues']:,} of {o['n']:,} labels are label issues, an estimated "
            f"{o['est_wrong_share']:.1%} wrong")
    if run.true_labels_known:
        final = run.final()
        line += f" (truly wrong: {np.mean(final['labels_given'] != final['labels_true']):.1%})"
    if len(report.pairs):
        top = report.pairs.iloc[0]
        line += (f"; most confused pair {top['given_name']} -> {top['suggested_name']} "
                 f"({int(top['n_label_issues'])} issues)")
    return [line + " (detect --report for the whole report)."]


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _figures(entries: list[tuple[str, Any]], flag_run: Any, out: Path,
             data_root: str | Path | None = None) -> list[Path]:
    # MOIT+ continues where its base run ended
    frames = reports.continued_metrics(dict(entries))
    right = (1 - entries[0][1].noise.actual_rate, "share of given labels that are right")
    written = [
        _save(figures.plot_training_curves(frames, "test_acc", title="test accuracy"),
              out / "accuracy.png"),
        _save(figures.plot_training_curves(
            frames, "train_acc_given",
            title="training accuracy on the given labels (memorising the noise)",
            reference=right),
            out / "memorization.png"),
        _save(figures.plot_detection_curves(
            {k: v for k, v in frames.items() if k != "MOIT+"}), out / "detection.png"),
    ]
    if flag_run is not None:
        final = flag_run.final()
        issues, _ = label_issues.examine_run(flag_run)
        order = _label_issue_order(issues, 24)
        if len(order):
            fig = figures.plot_flagged_images(
                flag_run.dataset(data_root).train_images, issues.labels,
                issues.suggested_label, flag_run.classes or None, indices=order,
                true=final["labels_true"], ncols=6, max_images=24)
            fig.suptitle(f"{_label(flag_run)}: label issues of its final embedding, worst "
                         "first (given / suggested label)\ngreen: the suggested label is the "
                         "true one; red: it is not")
            written.append(_save(fig, out / "flagged.png"))
    return written


def write_figures(run_list: list[Any], out: str | Path,
                  data_root: str | Path | None = None) -> list[Path]:
    """accuracy.png, memorization.png, detection.png and flagged.png (of the first MOIT run,
    else the first run with a detection; its images read from ``data_root``, None: the run's
    own, see runs.trusted_data_root)."""
    out = Path(out)
    entries = []
    for run in run_list:
        entries.append((_label(run), run))
        if run.has_finetune:
            ft = run.finetune()
            entries.append((_label(ft), ft))
    # the detection of a method that corrects labels with it (MOIT) first
    candidates = [r for r in run_list if get_method(r.method).corrects_labels] + list(run_list)
    flag_run = next((r for r in candidates
                     if runs.is_finished(r.path)
                     and "clean" in r.final()), None)
    try:
        return _figures(entries, flag_run, out, data_root)
    except FileNotFoundError as e:  # the data set is not on disk any more
        print(f"skipped a figure: {e}")
        return sorted(out.glob("*.png"))


# --------------------------------------------------------------------------- words


def _points(diff: float) -> str:
    return f"{abs(diff) * 100:.1f} points {'ahead of' if diff >= 0 else 'behind'}"


def detection_over_training(moit_metrics: pd.DataFrame,
                            ce_metrics: pd.DataFrame | None = None) -> list[str]:
    """Sentences on MOIT's detection as it trains (epoch 1 against the last, from the per-epoch
    metrics) and, with CE's metrics, on the same detector over CE's encoder features after the
    last epoch (AUROC and F1)."""
    m = moit_metrics.dropna(subset=["det_f1"]) if "det_f1" in moit_metrics else None
    if m is None or m.empty:
        return []
    first, last = m.iloc[0], m.iloc[-1]
    best = m.loc[m["det_f1"].idxmax()]
    trend = ("improves as the embedding learns" if last["det_f1"] > first["det_f1"]
             else "gets worse as MOIT trains")
    lines = [
        f"MOIT's detection {trend}: F1 {first['det_f1']:.3f} after epoch {int(first['epoch'])} "
        f"(precision {first['det_precision']:.1%}, recall {first['det_recall']:.1%}), "
        f"{last['det_f1']:.3f} after epoch {int(last['epoch'])} (precision "
        f"{last['det_precision']:.1%}, recall {last['det_recall']:.1%}); its best F1 "
        f"{best['det_f1']:.3f} at epoch {int(best['epoch'])} (detection.png)."]
    if ce_metrics is not None and {"det_f1", "det_auroc"} <= set(ce_metrics) \
            and "det_auroc" in m:
        ce = ce_metrics.dropna(subset=["det_f1"]).iloc[-1]

        def side(key: str) -> str:
            return "ahead" if last[key] > ce[key] else "not ahead"

        lines.append(
            f"After the last epoch, MOIT's detection on its own embedding against the same "
            f"detector on CE's encoder features: AUROC {last['det_auroc']:.3f} vs "
            f"{ce['det_auroc']:.3f} ({side('det_auroc')}), F1 {last['det_f1']:.3f} vs "
            f"{ce['det_f1']:.3f} ({side('det_f1')}).")
    return lines


def describe(summary: pd.DataFrame, ce_metrics: pd.DataFrame, noise: Any, *,
             moit_metrics: pd.DataFrame | None = None) -> list[str]:
    """What the demo's run shows, in sentences computed from its numbers.

    summary: reports.summarize_runs of {"CE", "MOIT", "MOIT+"}; ce_metrics: CE's per-epoch
    metrics (for the epoch of its best test accuracy); noise: the runs' NoisyLabels;
    moit_metrics: MOIT's per-epoch metrics (what the detection does over training).
    """
    ce = reports.memorisation(summary.loc["CE"])
    best_epoch = int(ce_metrics["epoch"][ce_metrics["test_acc"].idxmax()])
    lines = [f"noise: {noise.kind} {noise.rate:.0%}: {noise.actual_rate:.1%} of the "
             f"{len(noise)} training labels are wrong."]
    if ce.memorises:
        lines.append(
            f"CE memorises the noise: by the last epoch it fits {ce.train_acc_given:.1%} of the "
            f"given training labels although only {ce.clean_share:.1%} are right, and its test "
            f"accuracy fell from {ce.test_acc_best:.3f} (epoch {best_epoch}) to "
            f"{ce.test_acc_last:.3f}.")
    else:
        lines.append(
            f"CE does not memorise the noise in this run: it fits {ce.train_acc_given:.1%} of "
            f"the given training labels, no more than the {ce.clean_share:.1%} that are right "
            f"(test accuracy {ce.test_acc_last:.3f} at the last epoch, {ce.test_acc_best:.3f} "
            f"at its best, epoch {best_epoch}).")
    moit, plus = summary.loc["MOIT", "test_acc_last"], summary.loc["MOIT+", "test_acc_last"]
    lines.append(
        f"MOIT+ ends at {plus:.3f}, {_points(plus - ce.test_acc_last)} CE's last epoch; "
        f"MOIT ends at {moit:.3f}, {_points(moit - ce.test_acc_last)} CE "
        f"(last-epoch test accuracy, the paper's figure; one seed: "
        f"benchmarks/RESULTS.md has the spread over seeds).")
    p, r = summary.loc["MOIT", "det_precision_last"], summary.loc["MOIT", "det_recall_last"]
    if pd.notna(p) and pd.notna(r):
        aside = 1 - summary.loc["MOIT", "det_selected_frac_last"]
        lines.append(
            f"MOIT's last detection sets aside {aside:.1%} of "
            f"the training images as noisy: {p:.1%} of those are really mislabelled "
            f"(precision) and they hold {r:.1%} of all wrong labels (recall); MOIT+ "
            "fine-tunes on the rest.")
    cp, cr = summary.loc["CE", "det_precision_last"], summary.loc["CE", "det_recall_last"]
    if pd.notna(cp) and pd.notna(cr):
        lines.append(f"The same detector on CE's encoder features: precision {cp:.1%}, recall "
                     f"{cr:.1%}.")
    if moit_metrics is not None:
        lines += detection_over_training(moit_metrics, ce_metrics)
    lines.append("test acc (best) is the best epoch seen on the test set: optimistic, shown "
                 "next to the last epoch.")
    return lines


# --------------------------------------------------------------------------- the demo


def run_demo(root: str | Path = "runs", name: str = "demo", preset: str = "cpu-demo",
             noise: str = "symmetric", rate: float = 0.4, progress: bool = True,
             **overrides: Any) -> Path:
    """Train CE and MOIT, fine-tune MOIT+, print the table and write the figures.

    Writes ``root/name`` (or the first free ``name-2``, ``name-3`` ... when it exists: an
    earlier demo is never overwritten). Returns that folder.
    """
    t0 = time.perf_counter()
    out = rundir.unique_run_dir(root, name)
    if out.name != name:
        print(f"{Path(root) / name} exists; writing this demo to {out} instead")
    out.mkdir(parents=True, exist_ok=True)
    base = presets.preset(preset, noise=noise, rate=rate, runs_root=str(out), **overrides)
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
    notes = "\n".join(f"- {line}" for line in describe(summary, ce.metrics, moit.noise,
                                                       moit_metrics=moit.metrics)
                      + health_lines(moit) + [f"wall time: {elapsed:.0f} s"])
    print("\n" + text + "\n\n" + notes)
    figures = write_figures([ce, moit], out)
    (out / "summary.md").write_text(f"# moit-explore demo\n\n{text}\n\n{notes}\n\nFigures: "
                                    + ", ".join(p.name for p in figures) + "\n")
    print("\nwrote " + ", ".join(str(p) for p in figures) + f", {out / 'summary.md'}")
    print(f"runs: {ce_dir}, {moit_dir}, {ft_dir} "
          "(open them with moit_explore.training.runs.load_run)")
    return out
