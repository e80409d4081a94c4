"""Command line: ``python -m moit_explore <command> ...`` (also installed as ``moit-explore``).

Commands:

- ``train --preset P [--field-name value ...]``: every
  :class:`~moit_explore.training.config.TrainConfig`
  field is a flag (tuples as comma lists, booleans as ``--x`` / ``--no-x``); ``--resume RUN_DIR``
  continues a run; ``--dry-run`` prints the validated configuration.
- ``finetune RUN_DIR [--field-name value ...]``: MOIT+ from a finished run (FinetuneConfig).
- ``detect RUN_DIR --k 100 [--balance median]``: re-run the noise detection on a run's final
  features and print its metrics (writes nothing unless ``--out NEW_FILE.npz``).
- ``report RUN_DIR ... [--out DIR]``: a table of test accuracy and detection per run (+ figures).
- ``demo``: CE vs MOIT vs MOIT+ on a noisy Fashion-MNIST subset (``make demo``).
- ``fetch NAME``: download a data set.
- ``presets``: list the presets.

Invalid flags or values fail with a message before any data is loaded or any epoch runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import sys
import typing
from pathlib import Path
from typing import Any

import numpy as np

from moit_explore.analysis import health, label_issues, reports, review
from moit_explore.course import demo
from moit_explore.maths import detection
from moit_explore.maths.validation import BACKEND_CHOICES, BALANCE_CHOICES, DEFAULT_BALANCE
from moit_explore.training import config as cfg_mod
from moit_explore.training import datasets, distributed, fingerprint, presets, rundir, runs, train

__all__ = ["build_parser", "main"]


# --------------------------------------------------------------------------- dataclass -> flags


def _parse_tuple(text: str) -> tuple[int, ...]:
    text = text.strip()
    if text in ("", "none", "None", "()"):
        return ()
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a comma list of integers such as 125,200, got {text!r}") from None


def _optional(conv: Any) -> Any:
    def parse(text: str) -> Any:
        if text.strip().lower() in ("none", "null", ""):
            return None
        return conv(text)
    parse.__name__ = getattr(conv, "__name__", "value")
    return parse


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _add_fields(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One flag per dataclass field; only the flags given on the command line override."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(f"{cls.__name__} fields")
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        tp = hints[f.name]
        args = typing.get_args(tp)
        optional = type(None) in args
        base = next((a for a in args if a is not type(None)), tp) if optional else tp
        choices = f.metadata.get("choices")
        help_text = f.metadata.get("help", "")
        default = f.default
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        help_text = f"{help_text} (default: {shown})".replace("%", "%%")
        # SUPPRESS: an absent flag leaves no attribute, so an explicit "none" still overrides
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if base is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            continue
        if typing.get_origin(base) is tuple:
            conv: Any = _parse_tuple
            kw["metavar"] = "N,N,..."
        elif base is int:
            conv = _int
        elif base is float:
            conv = _float
        else:
            conv = str
        if choices:
            kw["choices"] = list(choices)
        group.add_argument(flag, type=_optional(conv) if optional else conv, **kw)


def _given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if hasattr(args, f.name)}


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        allow_abbrev=False,  # --over must not mean --overwrite
        prog="python -m moit_explore",
        description="MOIT / MOIT+ (Ortego et al., CVPR 2021): training, noise detection and "
                    "reports for learning with noisy labels.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    t = sub.add_parser("train", help="train one configuration into runs/<name>",
                       description="Train MOIT or a baseline. Every TrainConfig field is a "
                                   "flag; --preset picks the starting values.")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its checkpoint "
                   "(only --epochs, --progress, --device, ... may change); a MOIT+ run: "
                   "--resume RUN_DIR/finetune")
    t.add_argument("--dry-run", action="store_true",
                   help="print the validated configuration and exit")
    _add_fields(t, cfg_mod.TrainConfig)
    # --preset chooses from the presets (the field records it)
    for action in t._actions:
        if action.dest == "preset":
            action.choices = list(presets.PRESETS)
            action.help = "starting values: " + ", ".join(presets.PRESETS)

    f = sub.add_parser("finetune", help="MOIT+: fine-tune a finished run on its clean samples",
                       description="MOIT+ (spec §4) from RUN_DIR's final weights and last "
                                   "detection; writes RUN_DIR/finetune/ (continue an "
                                   "interrupted one: train --resume RUN_DIR/finetune).")
    f.add_argument("run_dir", metavar="RUN_DIR")
    f.add_argument("--preset", choices=list(presets.FINETUNE_PRESETS),
                   help="fine-tuning preset (default: the one matching the run's preset)")
    f.add_argument("--data-root", metavar="DIR", default=None,
                   help="folder holding the data sets (default: the run's, which must lie in "
                   "the project's data folder)")
    _add_fields(f, cfg_mod.FinetuneConfig)

    d = sub.add_parser("detect", help="re-run the noise detection on a run's final features")
    d.add_argument("run_dir", metavar="RUN_DIR")
    d.add_argument("--k", type=_int, default=None, help="neighbours (default: the run's k)")
    d.add_argument("--balance", choices=list(BALANCE_CHOICES), default=None,
                   help="class balancing (default: the run's)")
    d.add_argument("--backend", choices=list(BACKEND_CHOICES), default="auto")
    d.add_argument("--out", metavar="FILE.npz", default=None,
                   help="also write the detection to this NEW file (.npz is added to a name "
                   "without it; an existing file is never overwritten)")
    d.add_argument("--csv", metavar="FILE.csv", default=None,
                   help="write the label-issue table to this NEW file: one row per training "
                   "image, worst first (is_label_issue, given and suggested label, label "
                   "quality, selected_for_training, and for imagefolder data sets the image's "
                   "file as recorded at training time)")
    d.add_argument("--report", metavar="FILE.png", default=None,
                   help="print the data set's label-health report (per class: label issues, "
                   "estimated share of wrong labels, label quality; the most confused pairs) "
                   "and draw its figure into this NEW file")

    v = sub.add_parser("review", help="review a run's label issues worst first and export "
                       "the corrected labels (a label file for train --noise-file)")
    v.add_argument("run_dir", metavar="RUN_DIR")
    v.add_argument("--log", metavar="FILE.jsonl", required=True,
                   help="the decision log: created when missing, resumed when it exists; "
                   "every decision is appended as it is made")
    v.add_argument("--accept-suggested", metavar="N", type=_int, default=None,
                   help="accept the suggested label of the next N label issues, worst first "
                   "(no questions); without it the command asks about each issue")
    v.add_argument("--export", metavar="FILE", default=None,
                   help="write the corrected labels to this NEW .csv or .npy file, one per "
                   "image of the full training set (train --noise-file FILE reads it)")
    v.add_argument("--data-root", metavar="DIR", default=None,
                   help="folder holding the data set, for --export (default: the run's)")

    r = sub.add_parser("report", help="table of test accuracy and detection for runs")
    r.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    r.add_argument("--out", metavar="DIR", default=None,
                   help="write report.md and figures into DIR, a new (or empty) folder")
    r.add_argument("--data-root", metavar="DIR", default=None,
                   help="folder holding the data sets, for the figure of flagged images "
                   "(default: the run's, which must lie in the project's data folder)")

    m = sub.add_parser("demo", help="CE vs MOIT vs MOIT+ on a noisy Fashion-MNIST subset")
    m.add_argument("--root", default="runs", help="folder for the demo's run directory")
    m.add_argument("--name", default="demo", help="run directory name (a free -2, -3 ... "
                   "suffix is added when it exists)")
    m.add_argument("--preset", default="cpu-demo", choices=list(presets.PRESETS))
    m.add_argument("--noise", default="symmetric", choices=list(cfg_mod.NOISE_CHOICES))
    m.add_argument("--rate", type=_float, default=0.4)
    m.add_argument("--no-progress", dest="progress", action="store_false")

    g = sub.add_parser("fetch", help="download a data set into --root")
    g.add_argument("name", help="digits, fashion-mnist, cifar10 or cifar100")
    g.add_argument("--root", default="data")

    sub.add_parser("presets", help="list the training and fine-tuning presets")
    for command in sub.choices.values():
        command.allow_abbrev = False
    return p


# --------------------------------------------------------------------------- commands


def _cmd_train(args: argparse.Namespace) -> int:
    given = _given(args, cfg_mod.TrainConfig)
    if args.resume:
        args.run_dir_hint = Path(args.resume)
        data_root = given.pop("data_root", None)  # where the data are; trusted as given
        bad = sorted(set(given) - set(train.RESUMABLE_FIELDS))
        if bad:
            raise ValueError(
                f"--resume continues a run with its own configuration; cannot change "
                f"{', '.join('--' + b.replace('_', '-') for b in bad)}. Allowed: "
                f"{', '.join('--' + b.replace('_', '-') for b in train.RESUMABLE_FIELDS)}")
        if args.dry_run:
            print(f"would resume {args.resume} with {given}")
            return 0
        path = train.resume(args.resume, data_root=data_root, **given)
        print(f"run directory: {path}")
        return 0
    name = given.pop("preset", None)
    if given.get("noise_file") and (given.get("noise", "none") != "none"
                                    or given.get("rate", 0) != 0):
        raise ValueError("--noise-file gives the labels themselves; --noise and --rate draw "
                         "synthetic noise instead. Pass one or the other")
    cfg = presets.preset(name, **given)  # train.train validates it, once
    if args.dry_run:
        cfg.validate()
        for k, v in cfg.to_dict().items():
            print(f"{k:18s} {v}")
        return 0
    args.run_dir_hint = Path(cfg.runs_root).expanduser() / (cfg.name
                                                            or cfg.default_name(cfg.preset))
    path = train.train(cfg)
    if distributed.env_rank() == 0:  # under torchrun, rank 0 wrote the run directory
        _print_summary(path)
    return 0


def _print_summary(path: Path) -> None:
    m = runs.load_run(path).metrics
    if len(m):
        last = m.iloc[-1]
        print(f"run directory: {path}\nlast epoch {int(last['epoch'])}: test acc "
              f"{last['test_acc']:.4f} (best {m['test_acc'].max():.4f})")


def _cmd_finetune(args: argparse.Namespace) -> int:
    given = _given(args, cfg_mod.FinetuneConfig)
    base = runs.load_run(args.run_dir).config
    name = args.preset or presets.finetune_preset_for(base.get("preset"), base.get("rate"),
                                                      base.get("noise"))
    fcfg = presets.finetune_preset(name, **given)  # train.finetune validates it, once
    args.run_dir_hint = Path(args.run_dir) / fcfg.name
    path = train.finetune(args.run_dir, fcfg, data_root=args.data_root)
    _print_summary(path)
    return 0


def _cmd_detect(args: argparse.Namespace) -> int:
    run = runs.load_run(args.run_dir)
    rundir.check_not_in_use(run.path, "detect on it")
    final = run.final()
    k = args.k if args.k is not None else run.k  # detect_noise checks it against the data
    balance = args.balance or run.config.get("balance", DEFAULT_BALANCE)
    # np.savez adds .npz to a name without it: check (and print) the name really written
    out_npz = None if args.out is None else (
        args.out if str(args.out).endswith(".npz") else f"{args.out}.npz")
    for flag, out in (("--out", out_npz), ("--csv", args.csv), ("--report", args.report)):
        if out and Path(out).exists():
            raise FileExistsError(f"{out} exists; pass a new file name to {flag} (this command "
                                  "never overwrites)")
    paths = _image_paths(run) if args.csv else None
    given = final["labels_given"].copy()
    det_classes = int(run.config.get("num_classes", int(given.max()) + 1))
    det = detection.detect_noise(final["features"].astype(np.float32), given, det_classes, k=k,
                                 balance=balance, backend=args.backend)
    print(f"{run.path}: detection on the final features, k={det.k}, balance={balance}")
    if run.true_labels_known:
        is_noisy = final["labels_given"] != final["labels_true"]
        met = detection.detection_metrics(det.clean, is_noisy, det.discrepancy)
        for key, v in met.items():
            print(f"  {key:20s} {v:.4f}")
    else:
        print(f"  selected_frac        {float(np.mean(det.clean)):.4f} (true labels unknown)")
    issues = label_issues.examine_labels(given, final["features"], num_classes=det_classes,
                                         backend=args.backend)
    print(f"  label issues         {int(issues.is_label_issue.sum())} of {len(given)} (k="
          f"{issues.k}: label_issues.examine_labels); selected for training "
          f"{int(det.clean.sum())}")
    if args.report:
        _write_report(issues, run, args.report)
    if out_npz:
        arrays = dict(clean=det.clean, is_label_issue=issues.is_label_issue,
                      suggested_labels=issues.suggested_label,
                      label_quality=issues.label_quality,
                      discrepancy=det.discrepancy, soft_labels=det.soft_labels,
                      first_pass_soft_labels=det.first_pass_soft_labels,
                      corrected_labels=det.corrected_labels, k=det.k, balance=balance)
        rundir.write_new_file(out_npz, lambda tmp: tmp.write_bytes(_npz_bytes(arrays)),
                            "a new file name to --out")
        print(f"wrote {out_npz}")
    if args.csv:
        table = issues.table(class_names=run.classes or None, paths=paths,
                             selected_for_training=det.clean)
        label_issues.export_label_issues(table, args.csv)
        print(f"wrote {args.csv}: {int(table['is_label_issue'].sum())} of {len(table)} images "
              "are label issues, worst first")
    return 0


def _write_report(issues: label_issues.LabelIssues, run: runs.Run, figure: str) -> None:
    """Print the label-health report and save its figure to the NEW file ``figure``."""
    from moit_explore.course import label_health  # noqa: PLC0415 -- matplotlib, only here

    report = health.health_report(issues, class_names=run.classes or None)
    print(report.text())
    true = None
    if run.true_labels_known:
        final = run.final()
        g, t = final["labels_given"], final["labels_true"]
        true = [float(np.mean(t[g == c] != c)) if np.any(g == c) else np.nan
                for c in range(issues.num_classes)]
    fig = label_health.plot_health(report, true_wrong_share=true)
    # never replaces a file, and a failed write (a full disk) leaves none behind
    fmt = Path(figure).suffix.lstrip(".") or "png"
    rundir.write_new_file(figure, lambda tmp: fig.savefig(tmp, format=fmt, dpi=110),
                          "a new file name to --report")
    print(f"wrote {figure}")


def _cmd_review(args: argparse.Namespace) -> int:
    from moit_explore.course import review_panel  # noqa: PLC0415

    if args.export and Path(args.export).exists():
        raise FileExistsError(f"{args.export} exists; pass a new file name to --export (this "
                              "command never overwrites)")
    issues, run = label_issues.examine_run(args.run_dir)
    paths = _image_paths(run)
    try:
        rev = review.Review(issues, args.log, class_names=run.classes or None)
    except review.ReviewInUseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    with rev:
        if args.accept_suggested is not None:
            done = rev.accept_suggested(args.accept_suggested)
            print(f"accepted the suggested label of {len(done)} label issues")
        else:
            review_panel.prompt_review(rev, paths=paths)
        print(f"{args.log}: {rev.n_decided} of {rev.n_issues} label issues decided")
        if args.export:
            full, positions = review.run_label_positions(run, data_root=args.data_root)
            out = rev.export_labels(args.export, full_labels=full, positions=positions)
            changed = int(np.sum(full[positions] != rev.corrected_labels()))
            print(f"wrote {out}: {len(full)} labels, {changed} changed; train on them with "
                  f"--noise-file {out}")
    return 0


def _npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _image_paths(run: runs.Run) -> list[str] | None:
    """The files of an image-folder run's training images, as recorded when it trained; one
    moved, edited or deleted since is refused, naming it (fingerprint.check_image_files)."""
    if not str(run.config.get("dataset", "")).lower().startswith("imagefolder:"):
        return None
    paths = fingerprint.check_image_files(
        run.path, action="name its training images",
        fix="train a new run on the folder as it is now (the same flags, another --name) and "
            "detect on that")
    if paths is None:  # a run from before the files were recorded: the folder as it is now
        print(f"warning: {run.path} has no {fingerprint.TRAINED_ON_FILE} (trained by an older "
              "version); the paths are read from the folder as it is now, and are wrong if "
              "images were moved, added or removed since", file=sys.stderr)
        return run.dataset().train_paths
    return paths


def _cmd_report(args: argparse.Namespace) -> int:
    loaded = [runs.load_run(d) for d in args.run_dirs]
    out = Path(args.out) if args.out else None
    if out is not None and (out.is_symlink() or out.exists() and (
            not out.is_dir() or any(out.iterdir()))):
        raise FileExistsError(f"{out} exists{'' if out.is_dir() else ' and is not a folder'}; "
                              "pass --out a new (or empty) folder: report never replaces files")
    table = reports.summarize_runs({str(r.path): r for f in loaded for r in _with_finetune(f)})
    text = table.to_markdown(floatfmt=".4f") if _has_tabulate() \
        else table.to_string(float_format=lambda v: f"{v:.4f}")
    print(text)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(text + "\n")
        written = demo.write_figures(loaded, out, data_root=args.data_root)
        for p in written:
            print(f"wrote {p}")
    return 0


def _with_finetune(run: runs.Run) -> list[runs.Run]:
    """The run, and its MOIT+ run when it has one."""
    return [run, run.finetune()] if run.has_finetune else [run]


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401, PLC0415 -- optional: pandas' to_markdown needs it
    except ImportError:
        return False
    return True


def _cmd_demo(args: argparse.Namespace) -> int:
    demo.run_demo(root=args.root, name=args.name, preset=args.preset, noise=args.noise,
                  rate=args.rate, progress=args.progress)
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    print(datasets.fetch(args.name, args.root))
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    print("training presets (train --preset NAME):")
    for name in presets.PRESETS:
        c = presets.preset(name)
        print(f"  {name:15s} {c.dataset}, n_train={c.n_train}, {c.arch} w{c.width}, "
              f"{c.epochs} epochs, k={c.k}, correction from epoch {c.correction_start + 1}")
    print("fine-tuning presets (finetune --preset NAME):")
    for name in presets.FINETUNE_PRESETS:
        c = presets.finetune_preset(name)
        print(f"  {name:15s} {c.epochs} epochs, lr {c.lr}, bootstrapping from epoch "
              f"{c.bootstrap_start + 1}")
    return 0


COMMANDS = {"train": _cmd_train, "finetune": _cmd_finetune, "detect": _cmd_detect,
            "review": _cmd_review, "report": _cmd_report, "demo": _cmd_demo, "fetch": _cmd_fetch,
            "presets": _cmd_presets}


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse reports the problem itself
        return int(e.code) if isinstance(e.code, int) else 2
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:  # the training diverged
        print(f"error: training diverged: {e}{_diverged_hint(args)}", file=sys.stderr)
        return 1
    except OSError as e:  # disk full, a read-only folder, no permission ...
        print(f"error: {_os_error(e)}", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as e:
        if not _out_of_memory(e):
            raise
        print(f"error: out of memory ({_first_line(e)}): the configuration needs more memory "
              "than this machine has; lower --width, --batch-size or --eval-batch-size",
              file=sys.stderr)
        return 1
    except distributed.DistributedError as e:  # under torchrun: a rank died or hung
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted{_interrupt_hint(args, argv)}", file=sys.stderr)
        return 130


def _out_of_memory(e: BaseException) -> bool:
    text = str(e)
    return isinstance(e, MemoryError) or "can't allocate memory" in text \
        or "out of memory" in text.lower()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    tail = text[text.find("you tried"):] if "you tried" in text else text
    return (tail.splitlines() or [type(e).__name__])[0][:160]


def _os_error(e: OSError) -> str:
    """An OSError as one sentence naming the file and what to do."""
    where = f" {e.filename}" if e.filename else ""
    fix = {28: "free some space (or write elsewhere) and run the command again",
           13: "it is not writable by you: make it writable, or work on a copy in a folder "
               "you can write",
           30: "the file system is read-only: work on a copy in a writable folder"}.get(
        e.errno or 0, "fix the cause and run the command again")
    return f"cannot write or read{where}: {e.strerror or e}; {fix}"


def _diverged_hint(args: argparse.Namespace) -> str:
    """The run directory a diverged training left, and how to start it again."""
    run_dir = getattr(args, "run_dir_hint", None)
    if run_dir is None or not run_dir.is_dir():
        return ""
    done = len(runs.read_metrics(run_dir)) if rundir.is_run_dir(run_dir) else 0
    return (f". The run directory {run_dir} is left with {done} finished epoch(s), and a new "
            "run of that name is refused until it is replaced: train again with a lower --lr "
            "plus --overwrite, or under another --name")


def _interrupt_hint(args: argparse.Namespace, argv: list[str] | None) -> str:
    """How to carry on after Ctrl-C: resume from the checkpoint, or (none yet) start again."""
    run_dir = getattr(args, "run_dir_hint", None)
    if run_dir is None:
        return ""
    if (run_dir / runs.CHECKPOINT_FILE).is_file():
        return f"; continue with: {runs.command('train', '--resume', run_dir)}"
    if args.command == "train" and args.resume:
        return ""
    again = list(sys.argv[1:] if argv is None else argv)
    if "--overwrite" not in again:
        again.append("--overwrite")
    return ("; no epoch finished, so there is nothing to continue; start again with: "
            + runs.command(*again))
