"""The course as a static site to read without a kernel: ``make book``.

``python -m moit_explore.course.book [--out build/book] [--mode auto|full|smoke]`` executes the
six notebooks (full mode when every full-mode course run is already in the run cache, which
``make course`` prepares; otherwise smoke mode), converts each to one self-contained HTML page
(figures inline) and writes an index page; the executed notebooks (their widgets' saved state
in their metadata) go to ``notebooks/`` beside the pages. Every page starts with a line saying
the mode, the date and how long its notebook took to execute here. The exercises' answers stay
collapsed (they are ``<details>`` blocks in the notebooks). Widget panels show their static
copy (the metrics line and the figure at the starting value, see ``widgets._Panel.static_html``;
the review panel its queue): moving their controls needs a kernel, in ``make lab``. Nothing
outside ``--out`` is written.
"""

from __future__ import annotations

import html
import json
import os
import platform
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from moit_explore.course import notebook_runs
from moit_explore.training import runs

__all__ = ["BookPage", "build_book", "course_ready", "notebooks"]

# the HTML exporter's output order, without the widget view: a page needs no widget JavaScript
# (offline), so a panel shows its static copy (text/html) and a progress bar its text
STATIC_PRIORITY = ["text/html", "text/markdown", "image/svg+xml", "image/png", "image/jpeg",
                   "text/latex", "text/plain"]


@dataclass
class BookPage:
    """One executed notebook: its file name, title, page, mode, execution time (s) and the
    executed notebook's path in the book (outputs and widget state saved)."""

    notebook: str
    title: str
    page: str
    mode: str
    seconds: float
    executed: str


def notebooks(root: Path | None = None) -> list[Path]:
    """The course notebooks, in order (notebooks/0*.ipynb)."""
    folder = (root or notebook_runs.project_root()) / "notebooks"
    found = sorted(folder.glob("0*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no course notebooks (0*.ipynb) in {folder}")
    return found


def course_ready(preset_name: str = "cpu-demo") -> bool:
    """True when every run of :data:`notebook_runs.COURSE_RUNS` has a finished folder in the run
    cache for ``preset_name`` (``make course`` trains them), so full mode opens in minutes."""
    cache = notebook_runs.runs_dir()
    for method, rate, *noise in notebook_runs.COURSE_RUNS:
        if method == "folder":
            if not any(runs.is_finished(p) for p in (cache / "folders").glob("*")):
                return False
            continue
        path = notebook_runs.course_run_dir(method, noise[0] if noise else "symmetric", rate,
                                            preset_name)
        if not runs.is_finished(path):
            return False
    return True


def _title(nb: dict, fallback: str) -> str:
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            text = "".join(cell["source"])
            match = re.search(r"^#\s+(.+)$", text, flags=re.M)
            if match:
                return match.group(1).strip()
    return fallback


def _execute(path: Path, smoke: bool, timeout: int) -> tuple[dict, float]:
    """Run the notebook in a fresh kernel (MOIT_SMOKE set for smoke mode, unset for full);
    a cell that raises stops the build with nbclient's error."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    env_before = os.environ.get("MOIT_SMOKE")
    os.environ.pop("MOIT_SMOKE", None)
    if smoke:
        os.environ["MOIT_SMOKE"] = "1"
    try:
        t0 = time.perf_counter()
        # store_widget_state: the executed notebook keeps its panels' widget state in its
        # metadata, where JupyterLab and nbviewer-like readers can restore it without a kernel
        NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        seconds = time.perf_counter() - t0
    finally:
        os.environ.pop("MOIT_SMOKE", None)
        if env_before is not None:
            os.environ["MOIT_SMOKE"] = env_before
    return nb, seconds


def _banner(mode: str, seconds: float, smoke_reason: str, executed: str) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.machine()}, {os.cpu_count()} CPU threads, {platform.system()}"
    text = (f"> **Executed in {mode} mode** on {when}; this notebook took **{seconds:.0f} s** to "
            f"execute here ({machine}).")
    if mode == "smoke":
        text += f" {smoke_reason}"
    return text + (" Panels show a static copy at their starting value: to move their "
                   "controls, open the notebook in JupyterLab (`make lab`). The executed "
                   f"notebook, with its outputs and its widgets' saved state: [{executed}]"
                   f"({executed}).")


def _local_mathjax(out: Path) -> str:
    """Copy MathJax (the ``jupyter-server-mathjax`` package's) into ``out``/_static/mathjax and
    return the pages' URL for it: formulas render offline, where the exporter's default (a
    CDN) leaves them as LaTeX source."""
    import shutil

    try:
        import jupyter_server_mathjax
    except ImportError as err:
        raise ImportError("make book needs jupyter-server-mathjax (MathJax for offline pages): "
                          "pip install -e '.[notebooks]'") from err
    source = Path(jupyter_server_mathjax.__file__).parent / "static"
    target = out / "_static" / "mathjax"
    if not (target / "MathJax.js").is_file():
        shutil.copytree(source, target, dirs_exist_ok=True)
    return "_static/mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"


def build_book(out: str | Path = "build/book", *, mode: str = "auto", timeout: int = 3600,
               root: Path | None = None, progress: bool = True) -> list[BookPage]:
    """Execute every course notebook and write ``out``/index.html and one page per notebook.

    mode: "full", "smoke", or "auto" (full when :func:`course_ready`, else smoke). Returns the
    pages in order; ``out``/book.json records them (mode, seconds) for tests and tools.
    """
    import nbformat
    from nbconvert import HTMLExporter
    from tqdm.auto import tqdm

    if mode not in ("auto", "full", "smoke"):
        raise ValueError(f"mode must be 'auto', 'full' or 'smoke', got {mode!r}")
    smoke = mode == "smoke" or (mode == "auto" and not course_ready())
    reason = ("(Smoke mode: the full-mode run cache is not prepared; `make course` trains it, "
              "then `make book` again.)" if mode == "auto" else "(Smoke mode, as asked.)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from traitlets.config import Config

    # the output filter reads its priority from the configuration, not from the exporter
    exporter = HTMLExporter(template_name="lab", mathjax_url=_local_mathjax(out),
                            config=Config(
        {"NbConvertBase": {"display_data_priority": STATIC_PRIORITY},
         "HTMLExporter": {"display_data_priority": STATIC_PRIORITY}}))
    pages: list[BookPage] = []
    paths = notebooks(root)
    (out / "notebooks").mkdir(exist_ok=True)
    for path in tqdm(paths, desc="book: executing notebooks", unit="notebook",
                     disable=not progress):
        nb, seconds = _execute(path, smoke, timeout)
        seconds = round(seconds, 1)  # one value for the page and book.json
        label = "smoke" if smoke else "full"
        executed = f"notebooks/{path.name}"
        nb.cells.insert(1, nbformat.v4.new_markdown_cell(
            _banner(label, seconds, reason, executed)))
        nbformat.write(nb, out / executed)
        body, _ = exporter.from_notebook_node(nb)
        page = path.stem + ".html"
        # links between notebooks point at their pages
        body = re.sub(r'href="(0[^"/]*)\.ipynb', r'href="\1.html', body)
        (out / page).write_text(body, encoding="utf-8")
        pages.append(BookPage(path.name, _title(nb, path.stem), page, label, seconds, executed))
    _write_index(out, pages)
    (out / "book.json").write_text(json.dumps([p.__dict__ for p in pages], indent=1) + "\n")
    return pages


def _write_index(out: Path, pages: list[BookPage]) -> None:
    rows = "\n".join(
        f'<tr><td><a href="{p.page}">{html.escape(p.title)}</a></td><td>{p.mode}</td>'
        f"<td>{p.seconds:.0f} s</td></tr>" for p in pages)
    total = sum(p.seconds for p in pages)
    (out / "index.html").write_text(f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>MOIT course: label noise</title>
<style>body{{font-family:sans-serif;max-width:52em;margin:2em auto;line-height:1.5}}
td,th{{padding:.3em 1em;text-align:left}}</style></head><body>
<h1>Learning with noisy labels: the MOIT course</h1>
<p>Six notebooks, executed and saved as pages to read before class: every figure, the printed
numbers each statement is computed from, the exercises with their answers collapsed. To run
them and move the panels' controls, use <code>make lab</code>.</p>
<table><thead><tr><th>notebook</th><th>mode</th><th>execution time</th></tr></thead>
<tbody>
{rows}
</tbody></table>
<p>Total execution time {total:.0f} s. Smoke mode trains tiny runs on scikit-learn's digits;
full mode shows the Fashion-MNIST runs the course is written for.</p>
</body></html>
""", encoding="utf-8")


if __name__ == "__main__":  # make book
    import argparse

    ap = argparse.ArgumentParser(description="execute the course notebooks into a static site",
                                 allow_abbrev=False)
    ap.add_argument("--out", default=str(notebook_runs.project_root() / "build" / "book"))
    ap.add_argument("--mode", default="auto", choices=("auto", "full", "smoke"))
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per cell at most")
    args = ap.parse_args()
    built = build_book(args.out, mode=args.mode, timeout=args.timeout)
    print(f"{len(built)} pages ({built[0].mode} mode) in {args.out}: open "
          f"{Path(args.out) / 'index.html'}")
