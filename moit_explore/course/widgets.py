"""Interactive panels for the notebooks (ipywidgets 8, imported lazily): the k slider, the
threshold, the suspicious images and the noise panel; the embeddings over training are
:mod:`moit_explore.course.epoch_panel`.

Each panel is a plain object: ``panel.update(**params)`` recomputes and returns the numbers
(tests call it without a browser), ``panel.widget()`` builds the ipywidgets UI once and binds
its controls to ``update``, and a panel that is the last expression of a cell displays that UI.
After ``widget()`` exists, ``update`` also redraws it.

The numbers are shown in an ``ipywidgets.HTML`` element with the CSS class ``moit-metrics``
(e.g. "precision 0.812 · recall 0.734 · F1 0.771 · selected 41,233"); the k slider's
description is "k". Plots are rendered with a pyplot-free matplotlib figure into an
``ipywidgets.Image``, so nothing piles up in pyplot's figure list.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from moit_explore.analysis import label_issues
from moit_explore.course import figures
from moit_explore.maths import detection as det_mod
from moit_explore.maths import noise as noise_mod
from moit_explore.maths.neighbors import Neighbors
from moit_explore.maths.validation import (
    BALANCE_CHOICES,
    DEFAULT_BALANCE,
    check_choice,
    check_k,
    check_labels,
    check_mask,
    resolve_k,
)
from moit_explore.training import engine

__all__ = ["KSliderPanel", "NoisePanel", "SuspiciousImagesPanel", "ThresholdPanel"]

METRICS_CSS_CLASS = "moit-metrics"
_D_MAX = -math.log(det_mod.CLIP_LOW)  # the largest possible discrepancy (p clipped at 0.01)


def _ipw():
    try:
        import ipywidgets  # noqa: PLC0415 -- optional (notebook extra)
    except ImportError as err:
        raise ImportError("the interactive panels need ipywidgets 8: `pip install ipywidgets` "
                          "(or `pip install -e '.[notebooks]'`); update() works without it"
                          ) from err
    return ipywidgets


def _figure(width: float, height: float) -> Figure:
    """A matplotlib Figure with an Agg canvas that pyplot does not track."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _image_widget(w: Any) -> Any:
    """A PNG widget shown at its own pixel size: a flex column would otherwise stretch it to
    the output's width and blur it."""
    return w.Image(format="png", layout=w.Layout(align_self="flex-start", max_width="100%"))


def _png(fig: Any, dpi: int = 80) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def metrics_html(metrics: dict[str, Any]) -> str:
    """The one-line metrics text, e.g. 'precision 0.812 · recall 0.734 · F1 0.771 · selected
    41,233', inside a <span class="moit-metrics">."""
    names = [("kind", "kind"), ("rate", "requested rate"), ("actual_rate", "realised rate"),
             ("n_noisy", "wrong labels"),
             ("k", "k"), ("threshold", "threshold"), ("epoch", "epoch"),
             ("precision", "precision"), ("recall", "recall"), ("f1", "F1"),
             ("auroc", "AUROC"), ("selected_noise_rate", "noise in selected"),
             ("n_selected", "selected for training"),
             ("n_not_selected", "not selected for training"),
             ("n_label_issues", "label issues"),
             ("knn_acc_true", "kNN acc (true)"), ("knn_acc_given", "kNN acc (given)"),
             ("noisy_agree_given", "noisy ↦ given"), ("noisy_agree_true", "noisy ↦ true"),
             ("distance_ratio_given", "within/between")]
    parts = [f"{label} {_fmt(metrics[key])}" for key, label in names if key in metrics]
    return f'<span class="{METRICS_CSS_CLASS}">{" · ".join(parts)}</span>'


def _groups(clean: np.ndarray, is_noisy: np.ndarray | None) -> tuple[np.ndarray, tuple]:
    """The two groups a histogram compares: the truth (correct vs noisy labels) when known,
    else the training selection (selected for training or not). -> (second-group mask, names)."""
    if is_noisy is not None:
        return is_noisy, ("correct label", "noisy label")
    return ~clean, ("selected for training", "not selected for training")


class _Panel:
    """Shared UI plumbing: widget() builds once, the panel displays as its widget.

    ``controls`` maps each ``update()`` parameter to the ipywidget that sets it (empty until
    the UI is built); moving a control calls ``update`` with every control's value.
    """

    _ui: Any = None
    _syncing: bool = False
    _controls: dict[str, Any] | None = None

    @property
    def controls(self) -> dict[str, Any]:
        """Each update() parameter -> the ipywidget that sets it (empty before widget())."""
        return dict(self._controls or {})

    def _assemble(self, **controls: Any) -> Any:
        """The UI: ``controls`` (keyword = the update() parameter the widget sets, in display
        order), the metrics line (``self._html``) and the figure (``self._image``)."""
        w = _ipw()
        self._controls = controls
        self._html = w.HTML()
        self._html.add_class(METRICS_CSS_CLASS)
        self._image = _image_widget(w)

        def on_change(_change: Any) -> None:
            if not self._syncing:
                self.update(**self._read_controls())

        for control in controls.values():
            control.observe(on_change, names="value")
        return w.VBox([w.HBox(list(controls.values())), self._html, self._image])

    def _read_controls(self) -> dict[str, Any]:
        """The update() arguments the controls hold now."""
        return {name: control.value for name, control in self.controls.items()}

    def _sync_controls(self, **values: Any) -> None:
        """Show the panel's state on its controls: each control gets ``values[name]``, else the
        attribute of its name. Their change events do not call update meanwhile."""
        self._syncing = True
        try:
            for name, control in self.controls.items():
                control.value = values[name] if name in values else getattr(self, name)
        finally:
            self._syncing = False

    def widget(self) -> Any:
        """The ipywidgets UI (built on first call)."""
        if self._ui is None:
            self._ui = self._build()
            self._redraw()
        return self._ui

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = self.widget()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):  # JupyterLab shows the live widget (it ranks first)
            bundle = {**bundle, "text/html": self.static_html()}
        return bundle

    def static_html(self) -> str:
        """The panel as it stands, without a kernel: its metrics line and its figure (an
        inline PNG). Displayed beside the live widget, for readers of an executed notebook
        (nbconvert's HTML, the course book), who cannot move the controls."""
        self.widget()
        png = self._image.value
        img = (f'<img alt="panel figure" src="data:image/png;base64,'
               f'{base64.b64encode(png).decode("ascii")}">' if png else "")
        return (f'<div class="moit-static-panel"><p>{self._html.value}</p>{img}'
                "<p><em>(a static copy at the starting value: move the controls in "
                "JupyterLab)</em></p></div>")

    def _build(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def _redraw(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _maybe_redraw(self) -> None:
        if self._ui is not None:
            self._redraw()


# --------------------------------------------------------------------------- k slider


class KSliderPanel(_Panel):
    """Detection as a function of k from ONE neighbour search (spec §3 with k <= k_max).

    neighbors: Neighbors from knn_search(features, k_max); labels (N,)
    given labels; is_noisy (N,) bool when the truth is known (precision/recall/F1/AUROC), else
    the panel reports what was selected; either way n_selected / n_not_selected (selected for
    training or not) and n_label_issues (label issues: label_issues.examine_labels on the same
    neighbours at the same k). k: the starting k (None: validation.default_k of the
    labels, within k_max; for a run's features pass its ``run.k``). ``update(k)`` runs
    detection.detect_from_neighbors and returns the metrics; ``histograms`` holds the
    discrepancy histograms (correct vs noisy labels, or selected vs not selected without
    ``is_noisy``). torch_threads: intra-op threads while detecting (1 by default, see
    :func:`~moit_explore.training.engine.torch_threads`; None leaves torch's setting alone).
    """

    def __init__(
        self,
        neighbors: Neighbors,
        labels: Any,
        num_classes: int,
        *,
        is_noisy: Any = None,
        balance: str = DEFAULT_BALANCE,
        k: int | None = None,
        bins: int = 24,
        torch_threads: int | None = 1,
    ) -> None:
        if not isinstance(neighbors, Neighbors):
            raise ValueError("neighbors must be a Neighbors: compute it once with "
                             "knn_search(features, k_max)")
        self.neighbors = neighbors
        self.k_max = int(neighbors.indices.shape[1])
        self.n = int(neighbors.indices.shape[0])
        self.labels = check_labels(labels, self.n, num_classes)
        self.num_classes = int(num_classes)
        self.is_noisy = None if is_noisy is None else check_mask(is_noisy, self.n, "is_noisy")
        self.balance = check_choice("balance", balance, BALANCE_CHOICES)
        self.edges = np.linspace(0.0, _D_MAX * 1.0001, bins + 1)
        self.torch_threads = torch_threads
        self.k = resolve_k(k, self.labels, self.n, k_max=self.k_max)
        self.detection: det_mod.Detection | None = None
        self.histograms: dict[str, np.ndarray] = {}
        self.last: dict[str, Any] = {}
        self.update(self.k)

    def _check_k(self, k: Any) -> int:
        return check_k(k, self.n, k_max=self.k_max)

    def _compute(self, k: int, balance: str) -> tuple[dict[str, Any], det_mod.Detection]:
        with engine.torch_threads(self.torch_threads):
            det = det_mod.detect_from_neighbors(self.neighbors, self.labels, self.num_classes,
                                                k=k, balance=balance)
        clean = det.clean
        n_sel = int(np.count_nonzero(clean))
        out: dict[str, Any] = {"k": k, "balance": balance}
        if self.is_noisy is not None:
            out.update(det_mod.detection_metrics(clean, self.is_noisy, det.discrepancy))
        else:
            out["selected_frac"] = n_sel / clean.size
        # label issues: the verdict on each label (label_issues), not the training selection
        issues = label_issues.examine_labels(self.labels, self.neighbors, k=k,
                                             num_classes=self.num_classes)
        out.update(n_selected=n_sel, n_not_selected=int(clean.size - n_sel),
                   n_label_issues=int(issues.is_label_issue.sum()))
        return out, det

    def metrics(self, k: int | None = None, balance: str | None = None) -> dict[str, Any]:
        """The metrics at ``k`` (default: the current one) without changing the panel."""
        k = self.k if k is None else self._check_k(k)
        balance = self.balance if balance is None else balance
        return self._compute(k, balance)[0]

    def update(self, k: int | None = None, balance: str | None = None) -> dict[str, Any]:
        """Detect at ``k`` (and ``balance``), store and return the metrics, redraw the UI."""
        k = self.k if k is None else self._check_k(k)
        if balance is not None:
            self.balance = check_choice("balance", balance, BALANCE_CHOICES)
        out, det = self._compute(k, self.balance)
        self.k, self.detection, self.last = k, det, out
        second, names = _groups(det.clean, self.is_noisy)
        self.histograms = {
            "edges": self.edges,
            names[0]: np.histogram(det.discrepancy[~second], self.edges)[0],
            names[1]: np.histogram(det.discrepancy[second], self.edges)[0],
        }
        self._maybe_redraw()
        return out

    # -- UI
    def _build(self) -> Any:
        w = _ipw()
        return self._assemble(
            k=w.IntSlider(value=self.k, min=1, max=self.k_max, step=1, description="k",
                          continuous_update=False),
            balance=w.Dropdown(options=list(BALANCE_CHOICES), value=self.balance,
                               description="balance"))

    def _redraw(self) -> None:
        self._sync_controls()
        self._html.value = metrics_html(self.last)
        if getattr(self, "_fig", None) is None:
            self._fig = _figure(5.5, 2.6)  # one figure for the panel's life, redrawn per k
        self._fig.clear()
        second, names = _groups(self.detection.clean, self.is_noisy)
        figures.plot_discrepancy_histograms(
            self.detection.discrepancy, second, bins=self.edges, labels=names,
            ax=self._fig.add_subplot(), title=f"k = {self.k}, balance = {self.balance}")
        self._image.value = _png(self._fig)


# --------------------------------------------------------------------------- threshold


CRITERIA = ("threshold", *BALANCE_CHOICES)


class ThresholdPanel(_Panel):
    """Clean selection by a discrepancy threshold (clean = d <= t) or a balance criterion.

    ThresholdPanel(discrepancy, is_noisy=None): the threshold criterion. With ``labels``,
    ``agree`` and ``num_classes`` (keywords) also the balance criteria ("none", "min",
    "median", "max", via detection.select_clean); :meth:`from_detection` takes them from a
    detection.Detection. ``update(threshold=, criterion=)`` returns n_selected, selected_frac
    and, with is_noisy, precision/recall/F1 of the noisy class (detection.detection_metrics)
    and the noise rate among the selected.
    """

    def __init__(
        self, discrepancy: Any, *, is_noisy: Any = None, labels: Any = None, agree: Any = None,
        num_classes: int | None = None, threshold: float | None = None,
        criterion: str = "threshold", bins: int = 30,
    ) -> None:
        if isinstance(discrepancy, det_mod.Detection):
            raise TypeError("discrepancy must be an array (N,), got a Detection: use "
                            "ThresholdPanel.from_detection(detection, labels)")
        self.discrepancy = np.asarray(discrepancy, dtype=np.float64)
        if self.discrepancy.ndim != 1:
            raise ValueError(f"discrepancy must be 1-D (N,), got shape {self.discrepancy.shape}")
        n = self.discrepancy.shape[0]
        self.labels = None if labels is None else check_labels(labels, n, num_classes)
        self.agree = None if agree is None else check_mask(agree, n, "agree")
        self.num_classes = num_classes
        self.is_noisy = None if is_noisy is None else check_mask(is_noisy, n, "is_noisy")
        self.order = np.sort(self.discrepancy)
        self.edges = np.linspace(0.0, max(float(self.discrepancy.max(initial=0.0)), 1e-3),
                                 bins + 1)
        self.criterion = self._check_criterion(criterion)
        self.threshold = float(np.median(self.discrepancy)) if threshold is None and n \
            else float(threshold or 0.0)
        self.clean = np.zeros(n, dtype=bool)
        self.last: dict[str, Any] = {}
        self.update()

    @classmethod
    def from_detection(cls, detection: det_mod.Detection, labels: Any, *, is_noisy: Any = None,
                       **kwargs: Any) -> ThresholdPanel:
        """A panel on a detection's discrepancy, with every criterion (its agree mask and
        class count, and the given ``labels`` it was computed with)."""
        return cls(detection.discrepancy, is_noisy=is_noisy, labels=labels,
                   agree=detection.agree, num_classes=detection.soft_labels.shape[1], **kwargs)

    @property
    def criteria(self) -> tuple[str, ...]:
        """The criteria this panel can use (balance ones need labels, agree, num_classes)."""
        ok = self.labels is not None and self.agree is not None and self.num_classes is not None
        return CRITERIA if ok else ("threshold",)

    def _check_criterion(self, criterion: str) -> str:
        check_choice("criterion", criterion, CRITERIA)
        if criterion not in self.criteria:
            raise ValueError(f"criterion={criterion!r} needs labels, agree and num_classes "
                             "(ThresholdPanel.from_detection(detection, labels))")
        return criterion

    def update(self, threshold: float | None = None, criterion: str | None = None
               ) -> dict[str, Any]:
        """Select clean samples by the criterion, return the numbers, redraw the UI."""
        if criterion is not None:
            self.criterion = self._check_criterion(criterion)
        if threshold is not None:
            self.threshold = float(threshold)
        if self.criterion == "threshold":
            self.clean = self.discrepancy <= self.threshold
        else:
            self.clean = det_mod.select_clean(self.discrepancy, self.labels, self.agree,
                                              int(self.num_classes), balance=self.criterion)
        n_sel = int(np.count_nonzero(self.clean))
        n = self.clean.size
        out: dict[str, Any] = {"criterion": self.criterion, "threshold": self.threshold,
                               "n_selected": n_sel,
                               "selected_frac": n_sel / n if n else float("nan")}
        if self.is_noisy is not None:
            quality = det_mod.detection_metrics(self.clean, self.is_noisy)
            out.update({key: quality[key] for key in ("precision", "recall", "f1",
                                                       "selected_noise_rate")})
        self.last = out
        self._maybe_redraw()
        return out

    def _build(self) -> Any:
        w = _ipw()
        top = float(self.edges[-1])
        return self._assemble(
            criterion=w.Dropdown(options=list(self.criteria), value=self.criterion,
                                 description="criterion"),
            threshold=w.FloatSlider(value=min(self.threshold, top), min=0.0, max=top,
                                    step=top / 200, description="threshold",
                                    continuous_update=False, readout_format=".3f"))

    def _redraw(self) -> None:
        slider = self.controls["threshold"]
        self._sync_controls(threshold=min(self.threshold, slider.max))
        slider.disabled = self.criterion != "threshold"
        shown = dict(self.last)
        if self.criterion != "threshold":
            shown.pop("threshold", None)
        self._html.value = metrics_html(shown)
        fig = _figure(5.5, 2.6)
        ax = fig.add_subplot()
        second, names = _groups(self.clean, self.is_noisy)
        figures.plot_discrepancy_histograms(self.discrepancy, second, bins=self.edges, labels=names,
                                        ax=ax, title=f"criterion: {self.criterion}")
        if self.criterion == "threshold":
            ax.axvline(self.threshold, color="black", lw=1.5, label="threshold")
            ax.legend(fontsize="small")
        self._image.value = _png(fig)


# --------------------------------------------------------------------------- images


class SuspiciousImagesPanel(_Panel):
    """The most suspicious samples (largest discrepancy) of one given class, as an image grid.

    SuspiciousImagesPanel(images, labels, discrepancy=..., suggested=..., classes=...), or
    :meth:`from_detection` (images, detection, labels): a detection.Detection supplies the
    discrepancy and suggested = corrected labels. images uint8 (N, H, W, C). ``update(cls)``
    (a class index, or None for all classes) returns the indices shown, most suspicious first
    (ties: lower index first).
    """

    def __init__(
        self,
        images: Any,
        labels: Any,
        *,
        discrepancy: Any,
        suggested: Any,
        classes: list[str] | None = None,
        true_labels: Any = None,
        n_images: int = 16,
        ncols: int = 8,
    ) -> None:
        if isinstance(labels, det_mod.Detection):
            raise TypeError("labels must be an array (N,), got a Detection: use "
                            "SuspiciousImagesPanel.from_detection(images, detection, labels)")
        self.images = np.asarray(images)
        n = self.images.shape[0]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.discrepancy = np.asarray(discrepancy, dtype=np.float64)
        self.suggested = np.asarray(suggested, dtype=np.int64)
        for name, arr in (("labels", self.labels), ("discrepancy", self.discrepancy),
                          ("suggested", self.suggested)):
            if arr.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},) (one per image), got {arr.shape}")
        self.true_labels = None if true_labels is None else np.asarray(true_labels)
        num = int(max(self.labels.max(initial=0), self.suggested.max(initial=0))) + 1
        self.classes = list(classes) if classes is not None else [str(c) for c in range(num)]
        self.n_images, self.ncols = int(n_images), int(ncols)
        # most suspicious first, ties by index: one sort, filtered per class
        self._ranked = np.lexsort((np.arange(n), -self.discrepancy))
        self.cls: int | None = None
        self.indices = np.zeros(0, dtype=np.int64)
        self.update(None)

    @classmethod
    def from_detection(cls, images: Any, detection: det_mod.Detection, labels: Any,
                       **kwargs: Any) -> SuspiciousImagesPanel:
        """The panel of a detection's discrepancy and corrected labels, for the given
        ``labels`` it was computed with."""
        return cls(images, labels, discrepancy=detection.discrepancy,
                   suggested=detection.corrected_labels, **kwargs)

    def update(self, cls: int | None = None) -> np.ndarray:
        """Show the ``n_images`` most suspicious samples with given label ``cls``."""
        if cls is not None and not 0 <= int(cls) < len(self.classes):
            raise ValueError(f"cls={cls!r} must be a class index in [0, {len(self.classes) - 1}] "
                             "or None for all classes")
        self.cls = None if cls is None else int(cls)
        ranked = self._ranked
        if self.cls is not None:
            ranked = ranked[self.labels[ranked] == self.cls]
        self.indices = ranked[: self.n_images]
        self._maybe_redraw()
        return self.indices

    def _build(self) -> Any:
        w = _ipw()
        # -1 stands for "all classes" (update's cls=None): a Dropdown value of None would
        # mean "nothing selected"
        options = [("all classes", -1)] + [(name, i) for i, name in enumerate(self.classes)]
        return self._assemble(cls=w.Dropdown(options=options, value=self._cls_option(),
                                             description="class"))

    def _cls_option(self) -> int:
        return -1 if self.cls is None else self.cls

    def _read_controls(self) -> dict[str, Any]:
        cls = int(self.controls["cls"].value)
        return {"cls": None if cls < 0 else cls}

    def _redraw(self) -> None:
        self._sync_controls(cls=self._cls_option())
        idx = self.indices
        text = f"{len(idx)} most suspicious"
        if self.true_labels is not None and len(idx):
            wrong = float(np.mean(self.true_labels[idx] != self.labels[idx]))
            text += f" · truly mislabelled {wrong:.0%}"
        self._html.value = f'<span class="{METRICS_CSS_CLASS}">{text}</span>'
        if not len(idx):
            self._image.value = b""
            return
        titles = [f"{self.classes[self.labels[i]]}→{self.classes[self.suggested[i]]}\n"
                  f"d={self.discrepancy[i]:.2f}" for i in idx]
        colors = None
        if self.true_labels is not None:  # red: truly mislabelled
            colors = ["tab:red" if self.true_labels[i] != self.labels[i] else "tab:green"
                      for i in idx]
        key = "titles: given label → the neighbours' label, d = discrepancy"
        if colors is not None:
            key += "; red: the given label is truly wrong, green: it is right"
        fig = _figure(1.0, 1.0)  # sized by the grid
        figures.plot_image_grid(self.images[idx], titles, ncols=self.ncols, panel=1.4,
                                title_colors=colors, fig=fig, suptitle=key)
        self._image.value = _png(fig)


# --------------------------------------------------------------------------- noise


class NoisePanel(_Panel):
    """Synthetic label noise on a set of labels: the realised transition matrix as the noise
    rate and kind change (noise.inject_noise, the same seed every time).

    labels (N,) the true labels; classes: their names; flip_map: the asymmetric noise's flips
    (source -> target class; without it only "symmetric" is offered). ``update(rate=, kind=)``
    returns kind, rate (requested), actual_rate (realised share of wrong labels) and n_noisy,
    and keeps ``noisy`` (the noise.NoisyLabels).
    """

    def __init__(
        self,
        labels: Any,
        num_classes: int,
        *,
        classes: list[str] | None = None,
        flip_map: dict[int, int] | None = None,
        rate: float = 0.4,
        kind: str = "symmetric",
        seed: int = 42,
    ) -> None:
        self.labels = check_labels(labels, None, num_classes)
        self.num_classes = int(num_classes)
        self.classes = list(classes) if classes is not None else None
        self.flip_map = None if flip_map is None else dict(flip_map)
        self.kinds = ("symmetric", "asymmetric") if self.flip_map else ("symmetric",)
        self.seed = seed
        self.kind = check_choice("kind", kind, self.kinds)
        self.rate = float(rate)
        self.noisy: Any = None
        self.last: dict[str, Any] = {}
        self.update()

    def update(self, rate: float | None = None, kind: str | None = None) -> dict[str, Any]:
        """Inject noise of ``kind`` at ``rate`` (default: the current ones), return the
        numbers, redraw the UI."""
        if kind is not None:
            self.kind = check_choice("kind", kind, self.kinds)
        if rate is not None:
            self.rate = float(rate)
        self.noisy = noise_mod.inject_noise(
            self.labels, self.kind, self.rate, self.num_classes, seed=self.seed,
            flip_map=self.flip_map if self.kind == "asymmetric" else None)
        self.last = {"kind": self.kind, "rate": self.rate,
                     "actual_rate": float(self.noisy.actual_rate),
                     "n_noisy": int(self.noisy.is_noisy.sum())}
        self._maybe_redraw()
        return self.last

    def _build(self) -> Any:
        w = _ipw()
        return self._assemble(
            kind=w.Dropdown(options=list(self.kinds), value=self.kind, description="kind"),
            rate=w.FloatSlider(value=self.rate, min=0.0, max=0.9, step=0.05, description="rate",
                               continuous_update=False, readout_format=".2f"))

    def _redraw(self) -> None:
        self._sync_controls()
        self._html.value = metrics_html(self.last)
        fig = _figure(5.2, 4.4)
        figures.plot_transition_matrix(self.noisy.transition, self.classes, ax=fig.add_subplot(),
                                   title=f"{self.kind} noise, rate {self.rate:.2f}, realised")
        self._image.value = _png(fig)
