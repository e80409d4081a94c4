"""The review's front ends: the terminal prompt, the notebook panel, and the command line
(``review`` and ``detect --report``) on a run directory written in the real format."""

from __future__ import annotations

import base64
import html
import re

import numpy as np
import pytest

from moit_explore import cli
from moit_explore.analysis import label_issues, review
from moit_explore.course import review_panel
from moit_explore.maths import detection, noise
from moit_explore.training import datasets, rundir, runs


@pytest.fixture
def digits_run(tmp_path, digits):
    """A run on a 300-image stratified subset of the digits with 30 % symmetric noise, its
    final features the pixels."""
    sub = datasets.subset(digits, 300, 0, seed=0)
    x = sub.train_images.reshape(300, -1).astype(np.float32)
    nz = noise.inject_noise(sub.train_labels, "symmetric", 0.3, 10, seed=1)
    path = rundir.create_run_dir(tmp_path / "runs", "r")
    runs.write_json_atomic(path / runs.CONFIG_FILE, {
        "method": "moit", "dataset": "digits", "n_train": 300, "subset_seed": 0,
        "num_classes": 10, "true_labels_known": True, "k": 10,
        "classes": [f"digit{i}" for i in range(10)]})
    noise.save_noise(path / runs.NOISE_FILE, nz)
    runs.save_final(path, x, detection.detect_noise(x, nz.noisy, 10, k=10, backend="torch"),
                    nz.noisy, nz.clean)
    return path, x, nz, sub


def test_prompt_decides_until_quit_and_resumes(tmp_path, digits_run):
    _, x, nz, _ = digits_run
    issues = label_issues.examine_labels(nz.noisy, x)
    said = []
    answers = iter(["a", "k", "nonsense", "digit3", "7", "q"])
    with review.Review(issues, tmp_path / "r.jsonl",
                       class_names=[f"digit{i}" for i in range(10)]) as rev:
        order = rev.pending()[:4].tolist()
        made = review_panel.prompt_review(rev, ask=lambda q: next(answers), say=said.append)
        assert made == 4 and rev.n_decided == 4
        table = rev.decisions()
    assert table.loc[order[0], "label"] == issues.suggested_label[order[0]]
    assert table.loc[order[1], "label"] == nz.noisy[order[1]]
    assert table.loc[order[2], "label"] == 3 and table.loc[order[3], "label"] == 7
    assert any("'nonsense' is not an answer" in s for s in said)
    # end of input stops too, and a new prompt goes on from where the log stopped
    with review.Review(issues, tmp_path / "r.jsonl") as rev:
        asked = []

        def ask(q):
            asked.append(q)
            raise EOFError

        assert review_panel.prompt_review(rev, ask=ask, say=said.append) == 0
        assert f"sample {rev.next()}:" in asked[0] and asked[0].startswith("[5/")


def test_panel_decides_the_worst_pending_image(tmp_path, digits_run):
    _, x, nz, sub = digits_run
    issues = label_issues.examine_labels(nz.noisy, x)
    with review.Review(issues, tmp_path / "r.jsonl") as rev:
        panel = review_panel.ReviewPanel(rev, sub.train_images)
        first = panel.current
        assert first == rev.pending()[0]
        assert f"sample {first} · given {nz.noisy[first]}" in panel.status()
        assert panel.accept() == "accept" and panel.current != first
        second = panel.current
        assert panel.keep() == "keep" and panel.relabel(4) in ("accept", "relabel", "keep")
        assert rev.corrected_labels()[first] == issues.suggested_label[first]
        assert rev.corrected_labels()[second] == nz.noisy[second]
        ui = panel.widget()
        assert "3 of" in panel._html.value and panel._image.value[:4] == b"\x89PNG"
        panel._accept.click()  # the button decides and moves on
        assert rev.n_decided == 4 and ui is panel.widget()
        with pytest.raises(ValueError, match="uint8"):
            review_panel.ReviewPanel(rev, sub.train_images[:10])


# one pending label issue of a static copy: its sample, (path), given, suggested, quality
STATIC_ROW = re.compile(r'<tr class="moit-review-issue" data-sample="(\d+)"><td><img alt="sample '
                        r'\1" src="data:image/png;base64,([A-Za-z0-9+/=]+)"></td><td>\1<br><code>'
                        r"([^<]*)</code></td><td>([^<]*)</td><td>([^<]*)</td><td>([0-9.]+)</td></tr>")


def _static_rows(panel) -> list[tuple[int, str, str, str, float]]:
    found = STATIC_ROW.findall(panel.static_html())
    for _, png, *_ in found:
        assert base64.b64decode(png)[:4] == b"\x89PNG"
    return [(int(i), path, given, suggested, float(q)) for i, _, path, given, suggested, q
            in found]


def test_panel_static_copy_lists_the_pending_issues_worst_first(tmp_path, digits_run):
    """Without a kernel (nbconvert, the course book) the panel shows its status line and the
    first pending label issues, worst first, as text/html beside the live widget."""
    _, x, nz, sub = digits_run
    issues = label_issues.examine_labels(nz.noisy, x)
    names = [f"<digit {c}>" for c in range(10)]  # escaped, never read as markup
    paths = [f"folder/{c}/img_{i}&.png" for i, c in enumerate(nz.noisy)]
    with review.Review(issues, tmp_path / "r.jsonl", class_names=names) as rev:
        panel = review_panel.ReviewPanel(rev, sub.train_images, paths=paths)
        expected = rev.pending()
        assert len(expected) > 10

        def rows_of(samples):
            return [(int(i), html.escape(paths[i]), html.escape(names[nz.noisy[i]]),
                     html.escape(names[issues.suggested_label[i]]),
                     round(float(issues.label_quality[i]), 3)) for i in samples]

        static = panel.static_html()
        assert _static_rows(panel) == rows_of(expected[:8])
        assert html.escape(panel.status()) in static and f"0 of {rev.n_issues}" in static
        assert f"and {len(expected) - 8} more pending" in static
        assert "make lab" in static and "python -m moit_explore review RUN_DIR --log" in static
        assert "<digit" not in static and "&lt;digit" in static
        # a decision moves the copy on: the decided issue leaves, the next one comes in
        first = int(expected[0])
        panel.accept()
        assert _static_rows(panel) == rows_of(expected[1:9])
        assert f"1 of {rev.n_issues} label issues decided" in panel.static_html()
        assert f'data-sample="{first}"' not in panel.static_html()
        assert [r[0] for r in STATIC_ROW.findall(panel.static_html(max_rows=1000))] == [
            str(i) for i in rev.pending()]
        # the notebook's output: the live widget for JupyterLab, the static copy for the rest
        bundle = panel._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in bundle
        assert bundle["text/html"] == panel.static_html()
        assert panel._html.value == html.escape(panel.status())
        rev.accept_suggested(rev.n_issues)
        done = panel.static_html()
        assert "every label issue is decided" in done and not STATIC_ROW.search(done)


def test_panel_button_on_a_closed_review_says_so(tmp_path, digits_run):
    _, x, nz, sub = digits_run
    issues = label_issues.examine_labels(nz.noisy, x)
    rev = review.Review(issues, tmp_path / "r.jsonl")
    panel = review_panel.ReviewPanel(rev, sub.train_images)
    panel.widget()
    rev.close()
    panel._keep.click()  # a click must not fail silently in JupyterLab's log console
    assert "is closed" in panel._html.value and "run the cell" in panel._html.value
    assert rev.n_decided == 0
    with pytest.raises(RuntimeError, match="closed"):
        panel.keep()


def test_cli_review_accepts_exports_and_refuses_a_second_review(tmp_path, digits_run, digits,
                                                                capsys):
    path, _, nz, _ = digits_run
    log, out = tmp_path / "d.jsonl", tmp_path / "fixed.csv"
    assert cli.main(["review", str(path), "--log", str(log), "--accept-suggested", "25",
                     "--export", str(out)]) == 0
    text = capsys.readouterr().out
    assert "accepted the suggested label of 25 label issues" in text
    assert f"--noise-file {out}" in text
    labels = noise.read_label_file(out)
    assert labels.shape == digits.train_labels.shape  # the full training set
    # the run trains on its subset: the file gives the subset its corrected labels
    from moit_explore.training import presets

    cfg = presets.preset("digits", n_train=300, noise_file=str(out)).validate()
    _, nz2 = datasets.load_data(cfg, download=False)
    assert int(np.sum(nz2.noisy != nz.noisy)) > 0
    assert (nz2.noisy != nz.clean).sum() < (nz.noisy != nz.clean).sum()
    # an existing export is refused; a held log too
    assert cli.main(["review", str(path), "--log", str(log), "--accept-suggested", "1",
                     "--export", str(out)]) == 2
    assert "never overwrites" in capsys.readouterr().err
    issues, _ = label_issues.examine_run(path)
    with review.Review(issues, log):
        assert cli.main(["review", str(path), "--log", str(log), "--accept-suggested", "1"]) == 1
    assert "another review holds" in capsys.readouterr().err


def test_cli_detect_report_prints_the_health_and_draws_it(tmp_path, digits_run, capsys):
    path, x, nz, _ = digits_run
    fig = tmp_path / "health.png"
    assert cli.main(["detect", str(path), "--k", "10", "--report", str(fig)]) == 0
    text = capsys.readouterr().out
    n = int(label_issues.find_label_issues(nz.noisy, x, num_classes=10).sum())
    assert f"label issues         {n} of 300" in text
    assert f"label health: {n:,} of 300 labels are label issues" in text
    assert "most confused pairs" in text and fig.read_bytes()[:4] == b"\x89PNG"
    assert cli.main(["detect", str(path), "--k", "10", "--report", str(fig)]) == 2
    assert "never overwrites" in capsys.readouterr().err


def test_demo_health_line_is_computed_from_the_run(digits_run):
    from moit_explore.course import demo

    path, x, nz, _ = digits_run
    n = int(label_issues.find_label_issues(nz.noisy, x, num_classes=10).sum())
    (line,) = demo.health_lines(path)
    assert f"{n:,} of 300 labels are label issues, an estimated {n / 300:.1%} wrong" in line
    assert f"(truly wrong: {np.mean(nz.noisy != nz.clean):.1%})" in line
    assert "most confused pair digit" in line
