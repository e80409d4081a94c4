"""The two front ends of a label review (analysis.review): a panel for the notebook and a
prompt for the terminal (``python -m moit_explore review``). Both only call the
:class:`~moit_explore.analysis.review.Review`, which saves each decision as it is made.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from moit_explore.analysis.review import Review

__all__ = ["ReviewPanel", "prompt_review"]


def _describe(rev: Review, i: int) -> tuple[str, str, float]:
    names = rev.class_names
    return (names[int(rev.issues.labels[i])], names[int(rev.issues.suggested_label[i])],
            float(rev.issues.label_quality[i]))


def prompt_review(rev: Review, *, paths: list[str] | None = None,
                  ask: Callable[[str], str] = input, say: Callable[[str], Any] = print) -> int:
    """Ask about each pending label issue, worst first, until every one is decided or the
    answer is ``q`` (or end of input). Answers: ``a`` accept the suggested label, ``k`` keep
    the given one, a class index or name: that class. Returns the number of decisions made."""
    made = 0
    lookup = {name.lower(): c for c, name in enumerate(rev.class_names)}
    while (i := rev.next()) is not None:
        given, suggested, quality = _describe(rev, i)
        where = f" {paths[i]}" if paths is not None else ""
        question = (f"[{rev.n_decided + 1}/{rev.n_issues}] sample {i}{where}: given {given}, "
                    f"suggested {suggested} (label quality {quality:.3f}); a = accept, k = keep, "
                    "a class index or name = relabel, q = quit: ")
        try:
            answer = ask(question).strip()
        except EOFError:
            break
        low = answer.lower()
        if low in ("q", "quit"):
            break
        if low in ("a", "accept"):
            rev.accept(i)
        elif low in ("k", "keep"):
            rev.keep(i)
        elif low.isdigit() and int(low) < rev.issues.num_classes:
            rev.decide(i, int(low))
        elif low in lookup:
            rev.decide(i, lookup[low])
        else:
            say(f"  {answer!r} is not an answer: a, k, q, a class index 0-"
                f"{rev.issues.num_classes - 1} or one of {', '.join(rev.class_names)}")
            continue
        made += 1
    if rev.next() is None:
        say("every label issue is decided")
    return made


def _png(image: np.ndarray, scale: int) -> bytes:
    """uint8 (H, W, C) or (H, W) -> PNG bytes, enlarged ``scale`` times (nearest)."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    img = Image.fromarray(a)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class ReviewPanel:
    """Review label issues in the notebook: the worst pending image, its given and suggested
    label, and buttons to accept the suggestion, keep the given label or pick another class.

    review: an open analysis.review.Review; images: uint8 (N, H, W, C) of the same samples;
    paths: the images' files (shown when given). :meth:`accept`, :meth:`keep` and
    :meth:`relabel` decide the current image (what the buttons call), and the panel moves on.
    """

    def __init__(self, review: Review, images: Any, *, paths: list[str] | None = None,
                 scale: int = 5) -> None:
        if not isinstance(review, Review):
            raise TypeError(f"review must be an analysis.review.Review, got "
                            f"{type(review).__name__}")
        self.review = review
        self.images = np.asarray(images)
        n = review.issues.labels.shape[0]
        if self.images.shape[0] != n or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, H, W, C) with N = {n}, got "
                             f"{self.images.dtype} {self.images.shape}")
        self.paths, self.scale = paths, int(scale)
        self._ui: Any = None

    @property
    def current(self) -> int | None:
        """The sample on display: the worst pending label issue (None when all are done)."""
        return self.review.next()

    def status(self) -> str:
        """One line: what is on display and how far the review is."""
        i = self.current
        done = f"{self.review.n_decided} of {self.review.n_issues} label issues decided"
        if i is None:
            return f"every label issue is decided ({done})"
        given, suggested, quality = _describe(self.review, i)
        where = f" · {self.paths[i]}" if self.paths is not None else ""
        return (f"sample {i}{where} · given {given} · suggested {suggested} · label quality "
                f"{quality:.3f} · {done}")

    def _decide(self, action: Callable[[int], str]) -> str | None:
        i = self.current
        if i is None:  # decided meanwhile (in code, say): show that instead of a stale image
            self._redraw()
            return None
        kind = action(i)
        self._redraw()
        return kind

    def _click(self, action: Callable[[], Any]) -> None:
        """A button's action; a refusal (a closed review, say) shows in the panel, where the
        user looks, instead of in JupyterLab's log console."""
        try:
            action()
        except (RuntimeError, ValueError) as err:
            self._html.value = (f'<span class="moit-review-error" style="color: #b00">'
                                f"{html.escape(str(err))}: run the cell that opens the review "
                                "and this panel again</span>")

    def accept(self) -> str | None:
        """Give the current image its suggested label."""
        return self._decide(self.review.accept)

    def keep(self) -> str | None:
        """Keep the current image's given label."""
        return self._decide(self.review.keep)

    def relabel(self, label: int) -> str | None:
        """Give the current image class ``label``."""
        return self._decide(lambda i: self.review.decide(i, label))

    # -- UI
    def widget(self) -> Any:
        """The ipywidgets UI (built on first call)."""
        if self._ui is None:
            try:
                import ipywidgets as w  # noqa: PLC0415 -- optional (notebook extra)
            except ImportError as err:
                raise ImportError("the review panel needs ipywidgets 8: `pip install "
                                  "ipywidgets`; accept() / keep() / relabel() work without "
                                  "it") from err
            self._image = w.Image(format="png", layout=w.Layout(align_self="flex-start"))
            self._html = w.HTML()
            self._accept = w.Button(description="accept suggested", button_style="success")
            self._keep = w.Button(description="keep given")
            self._choice = w.Dropdown(options=[(name, c) for c, name in
                                               enumerate(self.review.class_names)],
                                      description="other class")
            self._set = w.Button(description="set label")
            self._accept.on_click(lambda _b: self._click(self.accept))
            self._keep.on_click(lambda _b: self._click(self.keep))
            self._set.on_click(lambda _b: self._click(
                lambda: self.relabel(int(self._choice.value))))
            self._ui = w.VBox([self._image, self._html,
                               w.HBox([self._accept, self._keep, self._choice, self._set])])
            self._redraw()
        return self._ui

    def _redraw(self) -> None:
        if self._ui is None:
            return
        i = self.current
        self._html.value = html.escape(self.status())
        done = i is None
        for button in (self._accept, self._keep, self._set):
            button.disabled = done
        if not done:
            self._image.value = _png(self.images[i], self.scale)
            self._accept.description = f"accept {_describe(self.review, i)[1]}"
            self._keep.description = f"keep {_describe(self.review, i)[0]}"

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = self.widget()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):  # JupyterLab shows the live widget (it ranks first)
            bundle = {**bundle, "text/html": self.static_html()}
        return bundle

    def static_html(self, max_rows: int = 8) -> str:
        """The review as it stands, without a kernel: the status line and the first
        ``max_rows`` pending label issues, worst first, each with its image, given and
        suggested label and label quality. Displayed beside the live widget, for readers of an
        executed notebook (nbconvert's HTML, the course book), who cannot press the buttons."""
        pending = self.review.pending()
        rows = []
        for i in pending[:max(0, int(max_rows))]:
            i = int(i)
            given, suggested, quality = _describe(self.review, i)
            png = base64.b64encode(_png(self.images[i], self.scale)).decode("ascii")
            where = (f"<br><code>{html.escape(str(self.paths[i]))}</code>"
                     if self.paths is not None else "")
            rows.append(f'<tr class="moit-review-issue" data-sample="{i}">'
                        f'<td><img alt="sample {i}" src="data:image/png;base64,{png}"></td>'
                        f"<td>{i}{where}</td><td>{html.escape(given)}</td>"
                        f"<td>{html.escape(suggested)}</td><td>{quality:.3f}</td></tr>")
        table = ""
        if rows:
            more = (f"<p>(and {len(pending) - len(rows)} more pending)</p>"
                    if len(pending) > len(rows) else "")
            table = ('<table class="moit-review-table"><thead><tr><th>image</th><th>sample'
                     "</th><th>given</th><th>suggested</th><th>label quality</th></tr></thead>"
                     f"<tbody>{''.join(rows)}</tbody></table>{more}")
        log = html.escape(str(self.review.log))
        return (f'<div class="moit-static-panel moit-review-static"><p>'
                f"{html.escape(self.status())}</p>{table}"
                "<p><em>(a static copy: deciding needs a kernel, in JupyterLab (<code>make lab"
                "</code>) or on the command line: <code>python -m moit_explore review RUN_DIR "
                f"--log review.jsonl</code>; this review's log: <code>{log}</code>)</em></p>"
                "</div>")
