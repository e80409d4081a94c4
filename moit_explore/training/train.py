"""Training entry points: MOIT (spec §2-3) and its baselines, and MOIT+ (spec §4).

:func:`train` runs one configuration into a new run directory (:mod:`.runs`); :func:`finetune`
runs MOIT+ from a finished run into a folder of it (``finetune/`` by default); :func:`resume`
continues either from its checkpoint, on the same trajectory. All three build a
:class:`~moit_explore.training.engine.Session` and hand it to the one epoch loop,
:func:`~moit_explore.training.engine.run`; MOIT+ is one more method of it
(:data:`~moit_explore.training.methods.METHODS`), with the same checkpoints, metrics,
snapshots and final file.

Where things are: the data set and its noise, :mod:`.datasets`; the batches, :mod:`.pipelines`;
the loss of each method's step (the MOIT step reads ``L = L_ICL + L_CLS``), :mod:`.steps`; what
each method is, :mod:`.methods`; the epoch loop, :mod:`.engine`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from moit_explore.maths import memory, models
from moit_explore.maths.validation import check_k
from moit_explore.training import distributed, engine, fingerprint, rundir, runs
from moit_explore.training.config import (
    PLACE_FIELDS,
    FinetuneConfig,
    TrainConfig,
    config_differences,
)
from moit_explore.training.datasets import load_data
from moit_explore.training.engine import EpochCallback, Session, embed, resolve_device
from moit_explore.training.methods import fine_tuning, get_method
from moit_explore.training.pipelines import GpuPipeline, ReferencePipeline, augment_for, device_data
from moit_explore.training.presets import finetune_preset, finetune_preset_for
from moit_explore.training.presets import preset as make_preset

__all__ = [
    "FINETUNE_RESUMABLE_FIELDS",
    "RESUMABLE_FIELDS",
    "FinetuneSetup",
    "embed",
    "finetune",
    "load_data",
    "prepare_finetune",
    "resolve_device",
    "resume",
    "train",
]

# fields that may change when a run is resumed (they do not change the trajectory, except
# epochs, which extends a finished run)
RESUMABLE_FIELDS = ("epochs", "progress", "device", "workers", "eval_batch_size",
                    "snapshot_epochs", "detect_backend", "compile", "dist_timeout")
# the same for a MOIT+ run (FinetuneConfig fields)
FINETUNE_RESUMABLE_FIELDS = ("epochs", "progress", "device", "eval_batch_size",
                             "snapshot_epochs")


# --------------------------------------------------------------------------- training


def _build_config(cfg: TrainConfig | None, preset: str | None, overrides: dict) -> TrainConfig:
    if cfg is None:
        return make_preset(preset, **overrides)
    if preset is not None:
        raise ValueError("pass either a TrainConfig or a preset name, not both")
    return cfg.replace(**overrides) if overrides else cfg


def train(cfg: TrainConfig | None = None, progress: bool | None = None, *,
          preset: str | None = None, out_dir: str | Path | None = None,
          on_epoch_end: EpochCallback | None = None, data: tuple | None = None,
          **overrides: Any) -> Path:
    """Train one configuration into a new run directory and return its path.

    cfg: a TrainConfig; or ``preset`` (a name in presets.PRESETS) plus field ``overrides``.
    progress: tqdm bars (None: ``cfg.progress``). out_dir: the run directory (default
    ``runs_root/name``). on_epoch_end: called with each metrics row.
    data: ``(DatasetBundle, NoisyLabels)`` to train on instead of loading ``cfg.dataset``
    (benchmarks on synthetic data; such a run cannot be resumed or reloaded by name).
    The configuration is validated before any data is loaded or any epoch runs.
    Under torchrun the run is data-parallel (:mod:`moit_explore.training.distributed`); rank 0
    creates
    and writes the run directory.
    """
    cfg = _resolved_paths(_build_config(cfg, preset, overrides).validate())
    with distributed.process_group(cfg.device, cfg.dist_bn, cfg.dist_timeout) as d, \
            _run_lock(_target_dir(cfg, out_dir)):
        run_dir = distributed.on_main(d, lambda: _new_run_dir(cfg, out_dir))
        engine.set_threads()
        with _removed_if_empty_on_error(run_dir) if d is None or d.is_main \
                else contextlib.nullcontext():
            s = _training_session(cfg, run_dir, data, d)
        if s.writes:
            _write_training_header(s)
        return engine.run(s, cfg.progress if progress is None else progress, on_epoch_end)


def _resolved_paths(cfg: TrainConfig) -> TrainConfig:
    """The configuration with its relative paths (data_root, noise_file, an image folder)
    resolved, as config.json stores them: a resume from another folder finds the same files."""
    changes: dict[str, Any] = {"data_root": str(Path(cfg.data_root).expanduser().resolve())}
    if cfg.noise_file:
        changes["noise_file"] = str(Path(cfg.noise_file).expanduser().resolve())
        # the file gives the labels: no synthetic noise is drawn, and config.json says so
        # (noise_actual_rate then holds the file's share of wrong labels)
        changes.update(noise="none", rate=0.0)
    kind, _, folder = cfg.dataset.partition(":")
    if kind.lower() == "imagefolder" and folder:
        changes["dataset"] = f"{kind}:{Path(folder).expanduser().resolve()}"
    return cfg.replace(**changes)


def _target_dir(cfg: TrainConfig, out_dir: str | Path | None) -> Path:
    if out_dir is not None:
        return rundir.run_dir_path(Path(out_dir).parent, Path(out_dir).name)
    return rundir.run_dir_path(cfg.runs_root, cfg.name or cfg.default_name(cfg.preset))


def _run_lock(path: Path, action: str = "train in it", create: bool = True) -> Any:
    """The run directory's OS lock (rundir.lock_run_dir), held by the process that writes it (under
    torchrun: rank 0)."""
    if distributed.env_rank() != 0:
        return contextlib.nullcontext(path)
    return rundir.lock_run_dir(path, action, create=create)


def _new_run_dir(cfg: TrainConfig, out_dir: str | Path | None) -> Path:
    if out_dir is not None:
        out = Path(out_dir)
        return rundir.create_run_dir(out.parent, out.name, overwrite=cfg.overwrite)
    return rundir.create_run_dir(cfg.runs_root, cfg.name or cfg.default_name(cfg.preset),
                               overwrite=cfg.overwrite)


@contextlib.contextmanager
def _removed_if_empty_on_error(run_dir: Path) -> Iterator[None]:
    """On an error, remove the new run directory if nothing was written to it yet."""
    try:
        yield
    except BaseException:
        if run_dir.is_dir() and all(p.name == rundir.LOCK_FILE for p in run_dir.iterdir()):
            with contextlib.suppress(OSError):  # the lock file, then the folder
                (run_dir / rundir.LOCK_FILE).unlink(missing_ok=True)
                run_dir.rmdir()
        raise


def _training_session(cfg: TrainConfig, run_dir: Path, data: tuple | None = None,
                      d: distributed.Dist | None = None) -> Session:
    device = resolve_device(cfg.device) if d is None else d.device
    amp = cfg.amp_dtype(device.type)
    bundle, noisy = load_data(cfg) if data is None else data
    # a resume: the data must be what the run recorded (a new run has no record yet)
    fingerprint.check_data(
        run_dir, bundle, noisy, cfg.noise_file, action=f"resume {run_dir}",
        fix="train a new run with the same flags under another --name (or add --overwrite "
            "to replace this one)")
    cfg.check_training_size(len(bundle.train_labels))  # validated at the public boundary
    cfg.check_class_sizes(noisy.noisy)
    c = bundle.num_classes
    method = get_method(cfg.method)
    if method.uses_memory:
        size = memory.memory_size(c, cfg.xbm_per_class)
        if size < 2 * cfg.batch_size:
            raise ValueError(f"the memory ({size} slots = 2 * xbm_per_class * {c} classes) "
                             f"cannot hold one batch of 2B = {2 * cfg.batch_size} embeddings; "
                             f"raise --xbm-per-class to >= {math.ceil(cfg.batch_size / c)}")

    engine.seed_everything(cfg.seed)
    model = models.build_model(cfg.arch, c, bundle.image_shape[2], width=cfg.width,
                               projection=cfg.projection, embed_dim=cfg.embed_dim,
                               shortcut=cfg.shortcut).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if d is not None:
        model = d.prepare_model(model)
    # static shapes: the epoch's smaller last batch gets a graph of its own, instead of turning
    # every batch into a slower dynamic-shape graph
    train_model = torch.compile(model, dynamic=False) if cfg.compile else model
    if d is not None:  # DDP, each process forwarding its share of the global batch
        train_model = d.wrap(model, cfg.compile, train_projector=method.uses_memory)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    mem = None
    if method.uses_memory:
        mem = memory.CrossBatchMemory(memory.memory_size(c, cfg.xbm_per_class), cfg.embed_dim,
                                      device=device)

    images, test_images, labels_given, labels_true, test_labels, normalize = \
        device_data(bundle, noisy, device)
    aug_name = cfg.augment_name()
    if cfg.pipeline == "gpu":
        pipeline: Any = GpuPipeline(images, labels_given,
                                    augment_for(aug_name, bundle, cfg.crop_padding),
                                    normalize, cfg.batch_size, cfg.channels_last,
                                    drop_last=cfg.drop_last)
    else:
        pipeline = ReferencePipeline(bundle.train_images, labels_given, aug_name, bundle.mean,
                                     bundle.std, cfg.batch_size, cfg.workers, device,
                                     cfg.channels_last, cfg.crop_padding, cfg.drop_last)
    if d is not None:
        d.prepare_pipeline(pipeline, cfg.batch_size)
    return Session(cfg=cfg, base_cfg=cfg, method=method, run_dir=run_dir, device=device,
                   amp=amp, bundle=bundle, noisy=noisy, model=model, train_model=train_model,
                   optimizer=optimizer,
                   scheduler=engine.lr_schedule(optimizer, cfg.lr_milestones, cfg.lr_gamma),
                   memory=mem, pipeline=pipeline, images=images, test_images=test_images,
                   labels_given=labels_given, labels_true=labels_true, test_labels=test_labels,
                   normalize=normalize, dist=d)


def _write_training_header(s: Session) -> None:
    cfgd = s.cfg.to_dict()
    cfgd.update(classes=list(s.bundle.classes), num_classes=s.bundle.num_classes,
                n_train_actual=int(len(s.bundle.train_labels)),
                n_test_actual=int(len(s.bundle.test_labels)),
                image_shape=list(s.bundle.image_shape), dataset_name=s.bundle.name,
                true_labels_known=bool(s.bundle.true_labels_known),
                noise_actual_rate=float(s.noisy.actual_rate), device_resolved=str(s.device),
                amp_resolved=s.amp, detect_resolved=s.cfg.detect_mode(),
                detect_features_resolved=s.cfg.feature_kind(),
                augment_resolved=s.cfg.augment_name(), torch_version=torch.__version__)
    runs.write_json_atomic(s.run_dir / runs.CONFIG_FILE, cfgd)
    runs.save_noise(s.run_dir, s.noisy)
    # what the run trains on: resume, finetune and detect --csv check it before reusing the run
    fingerprint.save_fingerprint(s.run_dir, fingerprint.data_fingerprint(
        s.bundle, s.noisy, s.cfg.noise_file))


# --------------------------------------------------------------------------- resuming


def resume(run_dir: str | Path, progress: bool | None = None, *,
           on_epoch_end: EpochCallback | None = None, data_root: str | Path | None = None,
           **overrides: Any) -> Path:
    """Continue a run from its checkpoint.pt, on the same trajectory.

    run_dir: a training run, or a MOIT+ run (``RUN_DIR/finetune``, config.json's method
    "moit+"). overrides: only ``RESUMABLE_FIELDS`` (MOIT+: ``FINETUNE_RESUMABLE_FIELDS``), e.g.
    ``epochs`` to extend a finished run. Metric rows after the checkpoint's epoch (from an
    interrupted epoch) are dropped. Under torchrun a training run resumes data-parallel, with
    any number of processes (the checkpoint does not depend on it); MOIT+ runs in one process.
    data_root: where the data sets are (None: the stored one, which must lie in the project's
    data folder: runs.trusted_data_root). The run directory is locked while it trains; a
    config.json that differs from the configuration stored in the checkpoint is refused.
    """
    run_dir = Path(run_dir)
    with _run_lock(run_dir, "resume it", create=False):
        return _resume(run_dir, progress, on_epoch_end, data_root, overrides)


def _resume(run_dir: Path, progress: bool | None, on_epoch_end: EpochCallback | None,
            data_root: str | Path | None, overrides: dict) -> Path:
    run = runs.load_run(run_dir)
    plus = get_method(run.method).is_fine_tuning
    allowed = FINETUNE_RESUMABLE_FIELDS if plus else RESUMABLE_FIELDS
    bad = sorted(set(overrides) - set(allowed))
    if bad:
        raise ValueError(f"cannot change {', '.join(bad)} when resuming (it would change the "
                         f"trajectory); resumable fields: {', '.join(allowed)}. Start a new "
                         "run with --name instead")
    if plus:
        _single_process("resuming MOIT+")
        fcfg = FinetuneConfig.from_dict(run.config.get("finetune", {})).replace(
            **overrides).validate()
        epochs = fcfg.epochs
    else:
        root = runs.trusted_data_root(run.config, run_dir / runs.CONFIG_FILE, data_root,
                                      hint=("train", "--resume", run_dir))
        cfg = TrainConfig.from_dict(run.config).replace(data_root=root, **overrides).validate()
        epochs = cfg.epochs
    ck_path = run_dir / runs.CHECKPOINT_FILE
    state = runs.check_training_state(runs.load_checkpoint(ck_path), ck_path)
    _check_same_config(run, state, ck_path, plus)
    if state["epoch"] >= epochs:
        more = state["epoch"] + max(1, state["epoch"] // 5)
        raise ValueError(f"{run_dir} already finished epoch {state['epoch']} of {epochs}; to "
                         f"train further, e.g. to epoch {more}: "
                         f"{runs.command('train', '--resume', run_dir, '--epochs', more)}")
    engine.set_threads()
    if plus:
        base_dir = run_dir.parent  # a MOIT+ run lives in a folder of its base run
        # the base run stays locked, as in finetune(): its checkpoint is read here
        with rundir.lock_run_dir(base_dir, "resume a fine-tune of it", create=False):
            setup = prepare_finetune(base_dir, fcfg, data_root=data_root,
                                     hint=("train", "--resume", run_dir))
            trained_on = state.get("clean")
            if trained_on is None or not torch.equal(trained_on.bool(),
                                                     torch.from_numpy(_clean_mask(setup))):
                raise ValueError(f"the clean samples of {base_dir}'s last detection are not "
                                 f"those {run_dir} was fine-tuned on (was the base run trained "
                                 "further?); start MOIT+ again: "
                                 + runs.command("finetune", base_dir, "--name", run_dir.name,
                                                "--overwrite"))
            s = _finetune_session(base_dir, fcfg, run_dir, setup)
            return _resume_session(s, state, run, overrides, progress, on_epoch_end)
    with distributed.process_group(cfg.device, cfg.dist_bn, cfg.dist_timeout) as d:
        s = _training_session(cfg, run_dir, d=d)
        return _resume_session(s, state, run, overrides, progress, on_epoch_end)


def _resume_session(s: Session, state: dict, run: Any, overrides: dict, progress: bool | None,
                    on_epoch_end: EpochCallback | None) -> Path:
    try:
        engine.restore(s, state)
    except (RuntimeError, KeyError) as e:  # states of other shapes than the model's
        ck, why = s.run_dir / runs.CHECKPOINT_FILE, (str(e).strip().splitlines() or [""])[-1]
        raise ValueError(f"checkpoint {ck} does not fit the run its config.json describes "
                         f"({type(e).__name__}: {why[:160]}); it is "
                         "another run's checkpoint. Restore the run's own files, or train it "
                         "again with --overwrite") from None
    if s.writes:
        runs.truncate_metrics(s.run_dir, state["epoch"])
        if overrides:
            config = dict(run.config, **overrides)
            if s.method.is_fine_tuning:
                config["finetune"] = dict(run.config.get("finetune", {}), **overrides)
            runs.write_json_atomic(s.run_dir / runs.CONFIG_FILE, config)
    return engine.run(s, s.cfg.progress if progress is None else progress, on_epoch_end)


def _check_same_config(run: Any, state: dict, ck_path: Path, plus: bool) -> None:
    """Refuse a config.json that differs from the configuration the checkpoint was trained
    with (an edited method, n_train, width ... would resume into an inconsistent run)."""
    stored = state.get("config")
    if not isinstance(stored, dict):
        return  # a checkpoint from before configurations were stored in it
    current = run.config.get("finetune", {}) if plus else run.config
    cls = FinetuneConfig if plus else TrainConfig
    free = set(FINETUNE_RESUMABLE_FIELDS if plus else RESUMABLE_FIELDS) | PLACE_FIELDS
    trained = {f.name: stored[f.name] for f in dataclasses.fields(cls) if f.name in stored}
    diffs = [f"{k} (config.json {current[k]!r}, checkpoint {stored[k]!r})"
             for k in config_differences(current, trained, ignore=frozenset(free),
                                         missing_differs=False)]
    if diffs:
        raise ValueError(f"{run.path / runs.CONFIG_FILE} differs from the configuration its "
                         f"checkpoint {ck_path} was trained with: {'; '.join(diffs)}. Restore "
                         "config.json (put the checkpoint's values back), or start a new run "
                         "with those settings under another --name")


def _clean_mask(setup: FinetuneSetup) -> np.ndarray:
    mask = np.zeros(len(setup.run.noise.noisy) if setup.run.noise is not None
                    else int(setup.train_indices.max()) + 1, dtype=bool)
    mask[setup.train_indices] = True
    return mask


def _single_process(what: str) -> None:
    if distributed.launched():
        raise ValueError(f"{what} runs in one process; run it without torchrun (python -m "
                         "moit_explore ...)")


# --------------------------------------------------------------------------- MOIT+


@dataclass
class FinetuneSetup:
    """MOIT+ before its first step: the MOIT model with a fresh classifier, and the clean set."""

    model: nn.Module
    train_indices: np.ndarray   # (n_clean,) dataset indices of the samples marked clean
    base_config: dict
    base_state: dict            # the MOIT checkpoint
    run: Any                    # runs.Run of the MOIT run


def prepare_finetune(run_dir: str | Path, fcfg: FinetuneConfig, *,
                     data_root: str | Path | None = None, hint: tuple = ()) -> FinetuneSetup:
    """Load the finished run's final weights and LAST detection's clean mask, and re-initialise
    the classifier head (spec §4). Only a run of ``fine_tuning().fine_tunes`` (MOIT) is
    fine-tuned. data_root: where the data sets are (None: the stored one, which must lie in the
    project's data folder); hint: the command that retries with ``--data-root``."""
    run = runs.load_run(run_dir)
    plus = fine_tuning()
    base = plus.fine_tunes
    if run.method != base:
        raise ValueError(f"{run_dir} is a {run.method!r} run; {plus.label} fine-tunes a "
                         f"finished run of method {base!r}: train one first, e.g. "
                         + runs.command("train", "--preset", run.config.get("preset") or "smoke",
                                        "--method", base))
    final_path = Path(run_dir) / runs.EMBEDDINGS_DIR / runs.FINAL_FILE
    ck_path = Path(run_dir) / runs.CHECKPOINT_FILE
    if not final_path.is_file():
        if not ck_path.is_file():
            raise FileNotFoundError(f"{final_path} does not exist: the run was stopped before "
                                    "its first epoch ended, so there is nothing to fine-tune. "
                                    "Train it again: the same command with --overwrite added")
        state = runs.check_training_state(runs.load_checkpoint(ck_path), ck_path)
        if state["epoch"] >= int(run.config.get("epochs", 0)):  # finished, then the file lost
            raise FileNotFoundError(
                f"{final_path} does not exist, though the run finished (its checkpoint is of "
                f"epoch {state['epoch']}): the file was deleted, and only training writes it. "
                "Restore it from a copy, or train the run again: the same command with "
                "--overwrite added")
        raise FileNotFoundError(f"{final_path} does not exist: the run has not finished. Finish "
                                f"it first: {runs.command('train', '--resume', run_dir)}")
    final = run.final()
    if "clean" not in final:
        raise ValueError(f"{final_path} holds no detection (the run used --detect off); MOIT+ "
                         "needs the clean mask of the last detection")
    state = runs.check_training_state(runs.load_checkpoint(ck_path), ck_path)
    config = dict(run.config, data_root=runs.trusted_data_root(
        run.config, Path(run_dir) / runs.CONFIG_FILE, data_root,
        hint=hint or ("finetune", run_dir)))
    cfg = TrainConfig.from_dict(config)
    if state["epoch"] != cfg.epochs:
        raise ValueError(f"the checkpoint of {run_dir} is from epoch {state['epoch']}, not the "
                         f"final epoch {cfg.epochs}; resume the run to its end first: "
                         f"{runs.command('train', '--resume', run_dir)}")
    try:  # MOIT+ scores its final features with the base run's detection, k included
        check_k(cfg.k, len(final["labels_given"]), samples="training images")
    except ValueError as e:
        raise ValueError(f"the detection of {run_dir}: {e}") from None
    c = int(run.config["num_classes"])
    in_ch = int(run.config["image_shape"][2])
    model = models.build_model(cfg.arch, c, in_ch, width=cfg.width, projection=cfg.projection,
                               embed_dim=cfg.embed_dim, shortcut=cfg.shortcut)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:  # weights of other shapes than config.json's model
        first = (str(e).strip().splitlines() or [""])[-1].strip()[:160]
        raise ValueError(f"checkpoint {ck_path} does not fit the model {run_dir}'s config.json "
                         f"describes ({first}); it is another run's checkpoint, or config.json "
                         "was edited. Restore the run's own files, or train it again with "
                         "--overwrite") from None
    torch.manual_seed(fcfg.seed)
    models.reset_classifier(model)
    indices = np.flatnonzero(np.asarray(final["clean"], dtype=bool))
    if len(indices) < 2:
        raise ValueError(f"the last detection of {run_dir} marked {len(indices)} samples clean; "
                         "MOIT+ needs at least 2")
    return FinetuneSetup(model=model, train_indices=indices, base_config=config,
                         base_state=state, run=run)


def finetune(run_dir: str | Path, fcfg: FinetuneConfig | None = None,
             progress: bool | None = None, *, on_epoch_end: EpochCallback | None = None,
             data_root: str | Path | None = None, **overrides: Any) -> Path:
    """MOIT+ (spec §4): fine-tune a finished run on its detected clean samples.

    Writes ``run_dir/<fcfg.name>`` (default ``finetune/``), a run directory of the same form;
    an interrupted one continues with :func:`resume` (``train --resume RUN_DIR/finetune``).
    fcfg None: the fine-tuning preset matching the run's preset, plus ``overrides``.
    Single view (``fcfg.augment``, spec: "simple"); mixup CE until ``bootstrap_start``, then
    mixup + hard bootstrapping with z_hat = argmax of the model on the non-augmented image.
    """
    _single_process("MOIT+ fine-tuning")
    run_dir = Path(run_dir)
    if fcfg is None:
        base = runs.load_run(run_dir).config
        fcfg = finetune_preset(finetune_preset_for(base.get("preset"), base.get("rate"),
                                                   base.get("noise")), **overrides)
    elif overrides:
        fcfg = fcfg.replace(**overrides)
    fcfg.validate()
    # the base run is locked too: a `train --resume` of it must not rewrite the checkpoint
    # and detection this fine-tune reads
    with rundir.lock_run_dir(run_dir, "fine-tune from it", create=False):
        setup = prepare_finetune(run_dir, fcfg, data_root=data_root)  # checks before writing
        with rundir.lock_run_dir(rundir.run_dir_path(run_dir, fcfg.name), "fine-tune into it"):
            return _finetune_locked(run_dir, fcfg, setup, progress, on_epoch_end)


def _finetune_locked(run_dir: Path, fcfg: FinetuneConfig, setup: FinetuneSetup,
                     progress: bool | None, on_epoch_end: EpochCallback | None) -> Path:
    out = rundir.run_dir_path(run_dir, fcfg.name)
    engine.set_threads()
    with _removed_if_empty_on_error(out):
        # the session checks the data against the base run's record: before create_run_dir, so
        # that --overwrite never removes an earlier fine-tune for nothing
        s = _finetune_session(run_dir, fcfg, out, setup)
        rundir.create_run_dir(run_dir, fcfg.name, overwrite=fcfg.overwrite)
    cfgd = dict(setup.base_config)
    cfgd.update(fcfg.to_dict())
    cfgd.update(method=fine_tuning().name, base_method=setup.base_config.get("method"),
                base_run=str(run_dir.resolve()), finetune=fcfg.to_dict(),
                n_clean=int(len(setup.train_indices)), device_resolved=str(s.device),
                amp_resolved=s.amp, augment_resolved=fcfg.augment)
    runs.write_json_atomic(out / runs.CONFIG_FILE, cfgd)
    runs.save_noise(out, s.noisy)
    if (run_dir / fingerprint.TRAINED_ON_FILE).is_file():  # MOIT+ trained on the same data
        shutil.copyfile(run_dir / fingerprint.TRAINED_ON_FILE, out / fingerprint.TRAINED_ON_FILE)
    return engine.run(s, fcfg.progress if progress is None else progress, on_epoch_end)


def _finetune_session(base_dir: Path, fcfg: FinetuneConfig, out: Path,
                      setup: FinetuneSetup) -> Session:
    """The MOIT+ session: the base run's data, model (fresh classifier) and clean samples."""
    cfg = TrainConfig.from_dict(setup.base_config)
    device = resolve_device(fcfg.device)
    # one mixed-precision rule for every run: TrainConfig.amp_dtype, with the fine-tuning's
    # amp on the GPU pipeline MOIT+ trains with
    amp = cfg.replace(amp=fcfg.amp, pipeline="gpu").amp_dtype(device.type)
    bundle, noisy = load_data(cfg)
    fingerprint.check_data(
        base_dir, bundle, noisy, cfg.noise_file, action=f"fine-tune {base_dir}",
        fix="train a new base run on them (the same flags, another --name) and fine-tune that")
    model = setup.model.to(device)
    if fcfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=fcfg.lr, momentum=fcfg.momentum,
                                weight_decay=fcfg.weight_decay)
    images, test_images, labels_given, labels_true, test_labels, normalize = \
        device_data(bundle, noisy, device)
    keep = torch.from_numpy(setup.train_indices).to(device)
    # the clean subset, with its GIVEN labels
    pipeline = GpuPipeline(images[keep], labels_given[keep],
                           augment_for(fcfg.augment, bundle, cfg.crop_padding),
                           normalize, min(fcfg.batch_size, len(keep)), fcfg.channels_last,
                           indices=keep, drop_last=fcfg.drop_last)
    clean = torch.zeros(len(labels_given), dtype=torch.bool, device=device)
    clean[keep] = True
    return Session(cfg=fcfg, base_cfg=cfg, method=fine_tuning(), run_dir=out, device=device,
                   amp=amp, bundle=bundle, noisy=noisy, model=model, train_model=model,
                   optimizer=optimizer,
                   scheduler=engine.lr_schedule(optimizer, fcfg.lr_milestones, fcfg.lr_gamma),
                   memory=None, pipeline=pipeline, images=images, test_images=test_images,
                   labels_given=labels_given, labels_true=labels_true, test_labels=test_labels,
                   normalize=normalize, streams=(2, 3, 5), clean=clean, train_subset=keep)


