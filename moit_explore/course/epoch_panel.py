"""The epoch panel: an embedding over training, snapshot by snapshot (notebooks 2 and 5).

A 2-D picture of each snapshot (the same projection throughout), its collapse measures, and
the kNN accuracy over epochs, for one run or two side by side; built on
:mod:`moit_explore.course.widgets`' panel.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from moit_explore.analysis import collapse, projection
from moit_explore.course import figures
from moit_explore.course.widgets import _figure, _ipw, _Panel, _png, metrics_html
from moit_explore.training import runs

__all__ = ["EpochPanel"]


class EpochPanel(_Panel):
    """Embedding snapshots of a run over training: 2-D projection, collapse measures and the
    kNN-accuracy-over-epochs curve.

    run: a runs.Run (or its directory) with ``embeddings/epoch_XXXX.npz`` snapshots (without
    any, the final embedding is the only frame, named -1). compare: a second run shown side by
    side at the same epoch (its nearest snapshot). k: the collapse measures' neighbours (None:
    each run's own k, see collapse.run_collapse_metrics). method: "pca" by default (fast per
    frame); "umap" is slower, cache it with ``cache_path`` (a notebook that shows a static
    UMAP figure of the same features passes the same method and cache_path: the panel's frame
    of that embedding is then the very same projection). subsample: rows projected per frame
    (the same rows every epoch; None: all). Each frame is its own fit of the projection:
    compare the cluster structure between epochs, not the positions.

    ``curves`` holds the collapse measures of every frame (one DataFrame per run, name ->
    table as analysis.collapse_over_epochs), computed once; the panel draws ``curve_metric``
    from it ("knn_acc_true" when the true labels are known, else "knn_acc_given") with the
    shown epoch marked. ``update(epoch)`` returns {"epoch", collapse measures...,
    "compare": {...}} and keeps ``projections``.
    """

    def __init__(
        self,
        run: Any,
        *,
        compare: Any = None,
        k: int | None = None,
        method: str = "pca",
        subsample: int | None = 2000,
        cache_path: Any = None,
        seed: int = 0,
    ) -> None:
        self.run = runs.load_run(run)
        self.compare = None if compare is None else runs.load_run(compare)
        self.k, self.method, self.subsample = k, method, subsample
        self.cache_path, self.seed = cache_path, seed
        self.epochs = self._frames(self.run)
        self._rows: dict[int, pd.DataFrame] = {}  # the collapse measures of each run, by epoch
        self._proj_cache: dict[tuple[int, int], Any] = {}
        self.labels = {"run": self._label(self.run, "run")}
        self.curves = {self.labels["run"]: self._curve(0, self.run)}
        if self.compare is not None:
            self.labels["compare"] = self._label(self.compare, "compare")
            if self.labels["compare"] == self.labels["run"]:
                self.labels["compare"] += " (compare)"
            self.curves[self.labels["compare"]] = self._curve(1, self.compare)
        known = self.run.true_labels_known and (
            self.compare is None or self.compare.true_labels_known)
        self.curve_metric = "knn_acc_true" if known else "knn_acc_given"
        self.epoch = self.epochs[-1]
        self.projections: dict[str, Any] = {}
        self.last: dict[str, Any] = {}
        self.update(self.epoch)

    @staticmethod
    def _frames(run: Any) -> list[int]:
        epochs = list(getattr(run, "snapshot_epochs", []))
        return epochs if epochs else [-1]

    @staticmethod
    def _label(run: Any, fallback: str) -> str:
        """A short name: the method and noise rate (e.g. "supcon 40%"), else the folder."""
        cfg = getattr(run, "config", {}) or {}
        if "method" in cfg and isinstance(cfg.get("rate"), (int, float)):
            return f"{cfg['method']} {cfg['rate']:.0%}"
        return str(getattr(run, "name", fallback))

    def curve(self, which: str = "run") -> Any:
        """The collapse measures of every snapshot of the run ("run") or of the compared run
        ("compare"): a DataFrame with an epoch column, as analysis.collapse_over_epochs."""
        if which not in self.labels:
            raise ValueError(f"which must be one of {list(self.labels)}, got {which!r}")
        return self.curves[self.labels[which]]

    def _arrays(self, run: Any, epoch: int) -> dict[str, Any]:
        return run.final() if epoch == -1 else run.snapshot(epoch)

    def _metrics(self, which: int, run: Any, epoch: int) -> dict[str, Any]:
        self._curve(which, run)
        return self._rows[which].loc[epoch].to_dict()

    def _curve(self, which: int, run: Any) -> pd.DataFrame:
        """collapse.collapse_over_epochs of the run (its final embedding, as epoch -1, when it
        has no snapshots), computed once."""
        if which not in self._rows:
            curve = collapse.collapse_over_epochs(run, self.k) if run.snapshot_epochs else \
                pd.DataFrame([{"epoch": -1, **collapse.run_collapse_metrics(run, run.final(),
                                                                          self.k)}])
            self._rows[which] = curve.set_index("epoch", drop=False)
        return self._rows[which].reset_index(drop=True)

    def _projection(self, which: int, run: Any, epoch: int) -> Any:
        key = (which, epoch)
        if key not in self._proj_cache:
            self._proj_cache[key] = projection.embedding_projection(
                self._arrays(run, epoch)["features"], method=self.method,
                cache_path=self.cache_path, seed=self.seed, subsample=self.subsample)
        return self._proj_cache[key]

    def update(self, epoch: int | None = None) -> dict[str, Any]:
        """Metrics (and projection) of snapshot ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else int(epoch)
        if epoch not in self.epochs:
            raise ValueError(f"epoch {epoch} has no snapshot; available: {self.epochs}")
        self.epoch = epoch
        out: dict[str, Any] = {"epoch": epoch, **self._metrics(0, self.run, epoch)}
        self.projections = {"run": self._projection(0, self.run, epoch)}
        if self.compare is not None:
            other = self._frames(self.compare)
            e2 = min(other, key=lambda e: (abs(e - epoch), e))
            out["compare"] = {"epoch": e2, **self._metrics(1, self.compare, e2)}
            self.projections["compare"] = self._projection(1, self.compare, e2)
        self.last = out
        self._maybe_redraw()
        return out

    def _build(self) -> Any:
        w = _ipw()
        return self._assemble(epoch=w.SelectionSlider(
            options=self.epochs, value=self.epoch, description="epoch", continuous_update=False))

    def _redraw(self) -> None:
        self._sync_controls()
        lines = [metrics_html({k: v for k, v in self.last.items() if k != "compare"})]
        if "compare" in self.last:
            lines.append("compare: " + metrics_html(self.last["compare"]))
        self._html.value = "<br>".join(lines)
        panels = [("run", self.run, 0)]
        if self.compare is not None:
            panels.append(("compare", self.compare, 1))
        fig = _figure(3.8 * len(panels) + 4.2, 4.2)  # room for the legend below
        grid = fig.add_gridspec(1, len(panels) + 1)
        for i, (name, run, which) in enumerate(panels):
            ax = fig.add_subplot(grid[0, i])
            epoch = self.epoch if which == 0 else self.last["compare"]["epoch"]
            proj = self.projections[name]
            a = self._arrays(run, epoch)
            noisy = None
            if "labels_true" in a and run.true_labels_known:
                noisy = np.asarray(a["labels_given"]) != np.asarray(a["labels_true"])
            color = a["labels_true"] if noisy is not None else a["labels_given"]
            shown = epoch if epoch >= 0 else "final"
            figures.plot_embedding(proj, color, is_noisy=noisy, ax=ax, point_size=4, legend=False,
                               title=f"{self.labels[name]} · epoch {shown} · "
                                     f"{proj.method.upper()}")
        # one legend for both panels: class colours (true class where known), crosses
        figures.embedding_figure_legend(fig, color, self.run.classes or None,
                                        noisy=noisy is not None)
        names = {"knn_acc_true": "kNN accuracy (true labels)",
                 "knn_acc_given": "kNN accuracy (given labels)"}
        figures.plot_knn_over_epochs(self.curves, self.curve_metric,
                                     ax=fig.add_subplot(grid[0, -1]),
                                     epoch=self.epoch if self.epoch >= 0 else None,
                                     title=f"{names[self.curve_metric]} over epochs")
        self._image.value = _png(fig)
