"""``aiforge train``: the fine-tuning loop, readable top to bottom.

Phases, in the order they run (after nanoGPT's ``train.py``)::

    prepare   read + check the data, load the backbone, tokenise, pick max_length
    resume    restore model, optimizer, scheduler, RNG and data position from the last checkpoint
    baseline  fit the task's cheap baseline on the same split (TF-IDF or a linear probe + logreg)
    loop      lr schedule -> forward/backward (+ accumulation) -> clip -> step -> log
              -> checkpoint every N steps -> evaluate each epoch, keep the best model
    finish    test the best model, write the model dir + aiforge.json + plots, track and register

Everything an observer needs goes through named events (:mod:`aiforge.train.callbacks`); MLflow
is one such callback, so tracking can fail without touching the loop.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aiforge.errors import AiforgeError, disk_full_guard
from aiforge.models import ModelRef
from aiforge.train.batches import epoch_batches
from aiforge.train.calibration import calibrate, save_temperature
from aiforge.train.callbacks import Callback, CallbackRunner, TrainState
from aiforge.train.checkpoint import load_checkpoint, save_checkpoint, seed_everything, set_rng_state
from aiforge.train.config import (
    ScratchModel,
    TrainConfig,
    default_model,
    dump_yaml,
    trainer_for,
)
from aiforge.train.data import Dataset
from aiforge.train.dataset import load_dataset
from aiforge.train.metrics import scalar_metrics
from aiforge.train.parallel import SINGLE, DataParallel
from aiforge.train.prepared import Prepared
from aiforge.train.report import TrainResult, comparison_metrics, git_commit, write_metadata, write_reports
from aiforge.train.significance import assess
from aiforge.train.task import TrainingTask

log = logging.getLogger(__name__)


# ---- prepare ------------------------------------------------------------------------------------------
def resolve_backbone(config: TrainConfig) -> tuple[str, ModelRef]:
    """(the model reference used, what it resolved to: ``.location`` is what from_pretrained receives)."""
    from aiforge.models import resolve

    if isinstance(config.model, ScratchModel):
        from aiforge.train.scratch import scratch_ref

        return config.model.describe(), scratch_ref(config.model)
    ref_text = default_model(config.task) if config.model == "auto" else config.model
    return ref_text, resolve(ref_text, task=config.task)


def make_task(config: TrainConfig, dataset: Dataset, ref: ModelRef) -> TrainingTask[Any]:
    """The training adapter the task's card names (``module:Class``), built from (config, dataset,
    backbone reference); every adapter implements :class:`~aiforge.train.task.TrainingTask`."""
    adapter = trainer_for(config).adapter
    module_name, _, class_name = adapter.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    task: TrainingTask[Any] = cls(config, dataset, ref)
    return task


def prepare(config: TrainConfig, strict: bool = False) -> Prepared[Any]:
    """Read and check the data, load the backbone, tokenise: every error a run can hit before step 1."""
    from aiforge.tasks import quiet_libraries
    from aiforge.tasks.base import resolve_device

    quiet_libraries()
    device = resolve_device(config.training.device)
    if config.training.num_threads:
        torch.set_num_threads(config.training.num_threads)
    seed_everything(config.training.seed)
    kind = trainer_for(config).input
    media = kind if kind in ("image", "audio") else None  # the input column holds file paths
    if kind == "corpus":
        from aiforge.train.corpus import load_corpus

        dataset = load_corpus(config.data)
    elif kind == "qa":
        from aiforge.train.qa import load_qa_dataset

        dataset = load_qa_dataset(config.data, config.training.seed, strict)
    else:
        dataset = load_dataset(
            config.data, config.training.seed, strict, kind == "tokens", media, kind == "chat"
        )
    backbone, ref = resolve_backbone(config)
    task = make_task(config, dataset, ref)
    model = task.load()
    train_lengths = task.input_lengths(dataset.train)
    task.resolve_max_length(train_lengths)
    frozen = freeze(model, config.training.freeze)
    model.to(device)
    test = task.encode(dataset.test) if dataset.test is not None else None
    return Prepared(
        config,
        dataset,
        task,
        model,
        backbone,
        task.encode(dataset.train),
        task.encode(dataset.validation),
        test,
        train_lengths,
        device,
        frozen,
    )


def freeze(model: torch.nn.Module, prefixes: list[str]) -> int:
    """Freeze parameters whose name (with or without the backbone prefix, e.g. ``bert.``) starts with
    one of ``prefixes``; returns how many tensors were frozen."""
    if not prefixes:
        return 0
    base = getattr(model, "base_model_prefix", "")
    frozen, used = 0, set()
    for name, param in model.named_parameters():
        short = name.removeprefix(f"{base}.") if base else name
        hit = next((p for p in prefixes if short.startswith(p) or name.startswith(p)), None)
        if hit is not None:
            param.requires_grad_(False)
            frozen += 1
            used.add(hit)
    unused = [p for p in prefixes if p not in used]
    if unused:
        tops = sorted({n.removeprefix(f"{base}.").split(".")[0] for n, _ in model.named_parameters()})
        raise AiforgeError(
            "AF-CONFIG-001",
            f"training.freeze: {unused} match no parameter of the model",
            f"use prefixes of parameter names, e.g. {', '.join(tops)} or encoder.layer.0",
        )
    return frozen


def build_optimizer(model: torch.nn.Module, cfg: Any) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norm weights (BERT's recipe)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=False)


def get_lr_lambda(cfg: Any, total_steps: int):
    """Linear warmup, then linear / cosine decay to 0 (or constant): multiplier of the peak lr."""
    warmup = int(cfg.warmup_ratio * total_steps)

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if cfg.scheduler == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        if cfg.scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return max(0.0, 1.0 - progress)

    return lr_lambda


def autocast_factory(mode: str, device: str):
    """A context factory for mixed precision: bf16 on GPUs that support it, otherwise plain fp32."""
    kind = device.split(":")[0]
    if mode == "auto":
        mode = "bf16" if kind == "cuda" and torch.cuda.is_bf16_supported() else "no"
    if mode == "no":
        return contextlib.nullcontext, None
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(kind) if mode == "fp16" else None
    return (lambda: torch.autocast(device_type=kind, dtype=dtype)), scaler


def plan_steps(n_batches: int, cfg: Any) -> tuple[int, int, int]:
    """(optimizer steps per epoch, total optimizer steps, epochs to iterate)."""
    per_epoch = max(1, math.ceil(n_batches / cfg.grad_accum))
    total = max(1, round(cfg.epochs * per_epoch))
    if cfg.max_steps:
        total = min(total, cfg.max_steps) if cfg.max_steps <= total else cfg.max_steps
    return per_epoch, total, math.ceil(total / per_epoch)


# ---- the run --------------------------------------------------------------------------------------------
def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    strict: bool = False,
    callbacks: list[Callback] | None = None,
    progress: bool = True,
    parallel: DataParallel = SINGLE,
) -> TrainResult:
    """Fine-tune ``config.model`` on ``config.data``; see the module docstring for the phases.

    ``parallel`` is this process's share of a data-parallel run (:mod:`aiforge.train.parallel`).
    """
    started = time.perf_counter()
    out = Path(config.output_dir)
    ckpt_dir = out / "checkpoints"
    saved = load_checkpoint(ckpt_dir) if resume else None
    if saved is not None:
        config = TrainConfig.model_validate(saved["config"])  # a resumed run keeps its own config
    out.mkdir(parents=True, exist_ok=True)
    if parallel.main:
        (out / "config.yaml").write_text(dump_yaml(config), encoding="utf-8")

    # -- prepare
    prep = prepare(config, strict)
    cfg, task, model, device = config.training, prep.task, prep.model, prep.device
    autocast, scaler = autocast_factory(cfg.mixed_precision, device)
    optimizer = build_optimizer(model, cfg)
    lengths = prep.train.lengths()
    n_batches = parallel.shard_count(math.ceil(len(prep.train) / cfg.batch_size))
    steps_per_epoch, total_steps, n_epochs = plan_steps(n_batches, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, get_lr_lambda(cfg, total_steps))
    state = TrainState(out, config.model_dump(mode="json"), total_steps, metric=task.metric_name())
    patience_left = cfg.early_stopping_patience

    # -- resume
    if saved is not None:
        if saved.get("world_size", 1) != parallel.world_size:
            raise AiforgeError(
                "AF-CONFIG-001",
                f"this run was checkpointed with {saved.get('world_size', 1)} worker(s), "
                f"not {parallel.world_size}: its data position would not match",
                f"resume with the same number of workers ({saved.get('world_size', 1)})",
            )
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        set_rng_state(saved["rng"])
        state.epoch, state.batch, state.step = (saved["position"][k] for k in ("epoch", "batch", "step"))
        state.history, state.best_metric = saved["history"], saved["best_metric"]
        patience_left = saved.get("patience_left", patience_left)
        log.info("resuming %s at epoch %d, batch %d, step %d", out, state.epoch, state.batch, state.step)

    # -- baseline (kept in the checkpoint, so a resumed run does not refit it)
    baseline = saved.get("baseline") if saved is not None else None
    if baseline is None and parallel.main and config.baseline:
        baseline = task.fit_baseline(prep)  # before step 1: probes see the pretrained backbone

    tracking = _tracking_callbacks(config, prep, saved) if parallel.main else []
    runner = CallbackRunner(tracking + list(callbacks or []))
    runner.trigger("on_train_start", state)

    def checkpoint(epoch: int, batch: int) -> None:
        extra = {
            "config": config.model_dump(mode="json"),
            "history": state.history,
            "baseline": baseline,
            "best_metric": state.best_metric,
            "patience_left": patience_left,
            "run_id": state.run_id,
            "world_size": parallel.world_size,
        }
        if parallel.main:
            position = {"epoch": epoch, "batch": batch, "step": state.step}
            save_checkpoint(ckpt_dir, model, optimizer, scheduler, position, extra)
        runner.trigger("on_checkpoint", state)

    def evaluate() -> bool:
        """Validate; save the model when it is the best so far. Returns True to stop early."""
        nonlocal patience_left
        metrics = task.evaluate(model, prep.validation, device, cfg.batch_size * 2, autocast)
        model.train()
        state.evaluation = metrics
        state.history["evals"].append({"step": state.step, "epoch": state.epoch, **scalar_metrics(metrics)})
        runner.trigger("on_eval_end", state)
        metric = task.metric_name()
        value = metrics.get(metric)
        if value is None:
            raise AiforgeError(
                "AF-CONFIG-001",
                f"training.metric '{metric}' is not computed for {task.name}",
                f"choose one of {', '.join(scalar_metrics(metrics))}",
            )
        better = (
            value < state.best_metric
            if metric == "loss" and state.best_metric is not None
            else state.best_metric is None or value > state.best_metric
        )
        if better:
            state.best_metric = value
            patience_left = cfg.early_stopping_patience
            if parallel.main:
                save_model_dir(task, model, out / "model")
            return False
        if patience_left is not None:
            patience_left -= 1
            return patience_left <= 0
        return False

    # -- loop
    bar = _progress_bar(total_steps, state.step, progress and parallel.main)
    window_loss, window_batches, window_items = torch.zeros((), device=device), 0, 0
    window_start = time.perf_counter()
    stop = state.step >= total_steps
    model.train()
    step_model = parallel.wrap(model)  # DDP in a data-parallel run: gradients averaged during backward
    try:
        for epoch in range(state.epoch, n_epochs):
            if stop or state.stop_requested:
                break
            state.epoch = epoch
            batches = parallel.shard(
                epoch_batches(lengths, cfg.batch_size, cfg.seed, epoch, cfg.length_grouping)
            )
            first = state.batch if epoch == saved_epoch(saved) else 0
            for index in range(first, len(batches)):
                batch = task.collate(prep.train, batches[index], device)
                with autocast():
                    loss = training_loss(step_model(**batch), batch, cfg.label_smoothing) / cfg.grad_accum
                (scaler.scale(loss) if scaler else loss).backward()
                window_loss += loss.detach()
                window_batches += 1
                window_items += len(batches[index])
                state.batch = index + 1
                if state.batch % cfg.grad_accum and state.batch != len(batches):
                    continue  # accumulate more micro-batches before stepping
                _optimizer_step(model, optimizer, scaler, cfg.grad_clip)
                scheduler.step()
                state.step += 1
                bar.update(1)
                if state.step % cfg.log_every_steps == 0 or state.step == total_steps:
                    elapsed = time.perf_counter() - window_start
                    state.logs = {
                        "loss": float(window_loss) * cfg.grad_accum / max(1, window_batches),
                        "lr": float(scheduler.get_last_lr()[0]),
                        "samples_per_s": window_items * parallel.world_size / elapsed,
                    }
                    state.history["steps"].append(state.step)
                    state.history["loss"].append(state.logs["loss"])
                    bar.set_postfix(loss=f"{state.logs['loss']:.4f}", lr=f"{state.logs['lr']:.1e}")
                    runner.trigger("on_log", state)
                    window_loss, window_batches, window_items = torch.zeros((), device=device), 0, 0
                    window_start = time.perf_counter()
                if cfg.eval_every_steps and state.step % cfg.eval_every_steps == 0 and evaluate():
                    stop = True
                if state.step % cfg.checkpoint_every_steps == 0:
                    checkpoint(epoch, state.batch)
                runner.trigger("on_step_end", state)
                if stop or state.step >= total_steps or state.stop_requested:
                    stop = True
                    break
            epoch_done = state.batch == len(batches)
            if epoch_done and evaluate():
                stop = True
            elif not epoch_done and (
                not state.history["evals"] or state.history["evals"][-1]["step"] != state.step
            ):
                evaluate()  # max_steps ended mid-epoch: the last weights still deserve a validation
            checkpoint(epoch + 1 if epoch_done else epoch, 0 if epoch_done else state.batch)
            state.batch = 0
    except torch.OutOfMemoryError:
        raise _oom_error(config) from None
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():
            raise _oom_error(config) from None
        raise
    finally:
        bar.close()

    # -- finish: the best model on test, files, tracking (rank 0 of a data-parallel run)
    if not parallel.main:
        return TrainResult(
            out, out / "model", prep.backbone, {}, baseline, time.perf_counter() - started, state.step
        )
    return _finish(config, prep, state, runner, baseline, started, autocast)


def training_loss(output: Any, batch: dict[str, torch.Tensor], label_smoothing: float) -> torch.Tensor:
    """The model's own loss, or with ``label_smoothing`` the cross-entropy against smoothed targets
    (class-id labels only: sequence or token classification; -100 marks ignored tokens)."""
    labels = batch.get("labels")
    if not label_smoothing or labels is None or labels.is_floating_point():
        return output.loss
    logits = output.logits
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        labels.reshape(-1),
        ignore_index=-100,
        label_smoothing=label_smoothing,
    )


def saved_epoch(saved: dict[str, Any] | None) -> int | None:
    return saved["position"]["epoch"] if saved is not None else None


def _optimizer_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: Any, grad_clip: float | None
) -> None:
    if scaler is not None:
        scaler.unscale_(optimizer)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _progress_bar(total: int, done: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, disable=not enabled, unit="step", dynamic_ncols=True, desc="train")


def _oom_error(config: TrainConfig) -> AiforgeError:
    cfg = config.training
    return AiforgeError(
        "AF-TRAIN-001",
        f"out of memory with batch_size={cfg.batch_size}, max_length={cfg.max_length}",
        "halve the batch and keep the effective batch: "
        f"--set training.batch_size={max(1, cfg.batch_size // 2)} "
        f"--set training.grad_accum={cfg.grad_accum * 2}; or lower training.max_length; "
        "`aiforge train CONFIG --dry-run` estimates memory per step",
    )


def export_onnx(task: str, model_dir: Path, precision: str) -> None:
    """``export: onnx-int8``: the ONNX Runtime model beside the HF dir, checked against PyTorch the
    way every ONNX load is (tasks/onnxrt.py); a model that fails the check keeps only its HF dir."""
    from aiforge.tasks import load_pipeline

    try:
        pipe = load_pipeline(task, str(model_dir), device="cpu", precision=precision)
    except AiforgeError as exc:
        log.warning("no ONNX export for %s: %s", model_dir, exc.message)
        return
    if pipe.runtime != "onnx":
        log.warning("no ONNX export for %s: %s", model_dir, getattr(pipe, "runtime_fallback", None))


def save_model_dir(task: TrainingTask[Any], model: torch.nn.Module, target: Path) -> None:
    """save_pretrained into a temporary dir, then swap it in: a crash never leaves half a model."""
    tmp = target.with_name(target.name + ".tmp")
    old = target.with_name(target.name + ".old")
    if old.exists() and not target.exists():  # a crash between the two renames below: the old one is whole
        old.rename(target)
    shutil.rmtree(tmp, ignore_errors=True)
    with disk_full_guard(target, "model folder", leftovers=[tmp]):
        task.save(model, tmp)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _tracking_callbacks(config: TrainConfig, prep: Prepared, saved: dict[str, Any] | None) -> list[Callback]:
    if not config.tracking.enabled:
        return []
    from aiforge.train.tracking import MlflowCallback

    tags = {
        "aiforge.task": config.task,
        "aiforge.backbone": prep.backbone,
        "aiforge.data_hash": prep.dataset.data_hash,
        "aiforge.git_commit": git_commit() or "",
    }
    if config.tracking.parent_run_id:
        tags["mlflow.parentRunId"] = config.tracking.parent_run_id  # MLflow's tag for a nested run
    params = {
        **config.flat(),
        "backbone": prep.backbone,
        "data_hash": prep.dataset.data_hash,
        "n_train": len(prep.train),
        "n_validation": len(prep.validation),
        "max_length_resolved": prep.task.max_length,
        "frozen_tensors": prep.frozen,
    }
    return [
        MlflowCallback(
            config.tracking,
            Path(config.output_dir),
            tags,
            params,
            resume_run_id=saved.get("run_id") if saved else None,
        )
    ]


def _finish(
    config: TrainConfig,
    prep: Prepared,
    state: TrainState,
    runner: CallbackRunner,
    baseline: dict[str, Any] | None,
    started: float,
    autocast: Any,
) -> TrainResult:
    out = Path(config.output_dir)
    model_dir = out / "model"
    task = prep.task
    best = task.reload(model_dir, prep.device)
    batch = config.training.batch_size * 2
    metrics = {"validation": task.evaluate(best, prep.validation, prep.device, batch, autocast)}
    if prep.test is not None:
        metrics["test"] = task.evaluate(best, prep.test, prep.device, batch, autocast)
    report_split = "test" if "test" in metrics else "validation"
    calibration = calibrate(metrics, task.multi_label, report_split)  # T fitted on validation logits
    if calibration is not None:
        save_temperature(model_dir, calibration["temperature"])
    ensemble = _stack(config, prep, metrics, baseline, calibration)  # before assess drops the rows
    comparison = assess(metrics, baseline, len(task.labels))  # intervals, paired test vs the baseline
    artifacts = write_reports(
        out, prep, state, metrics, baseline, report_split, comparison, calibration, ensemble
    )
    write_metadata(model_dir, config, prep, metrics, baseline, state, comparison, calibration, ensemble)
    if config.export != "none":
        export_onnx(config.task, model_dir, config.export.removeprefix("onnx-"))

    final = {
        **scalar_metrics(metrics["validation"], "final_val_"),
        **(scalar_metrics(metrics["test"], "test_") if "test" in metrics else {}),
        **comparison_metrics(metrics, baseline, comparison, ensemble),
        **({k: v for k, v in calibration.items() if isinstance(v, float)} if calibration else {}),
    }
    state.summary = {
        "final_metrics": final,
        "tags": {f"aiforge.vs_baseline.{split}": c["verdict"] for split, c in comparison.items()},
        "artifacts": artifacts,
        "model_dir": str(model_dir),
        "description": f"{prep.backbone} trained on {config.data.train}; "
        f"{report_split} {task.metric_name()} {metrics[report_split].get(task.metric_name(), 0):.4f}",
    }
    runner.trigger("on_train_end", state)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # finished: nothing left to resume
    return TrainResult(
        out,
        model_dir,
        prep.backbone,
        metrics,
        baseline,
        time.perf_counter() - started,
        state.step,
        state.run_id,
        state.summary.get("registered_name"),
        state.registered_version,
        config.tracking.alias if state.registered_version else None,
        comparison=comparison,
        calibration=calibration,
        ensemble=ensemble,
    )


def _stack(
    config: TrainConfig,
    prep: Prepared,
    metrics: dict[str, Any],
    baseline: dict[str, Any] | None,
    calibration: dict[str, Any] | None,
) -> dict[str, Any] | None:
    """``ensemble: baseline``: fit the stack (TF-IDF on train, stacker on validation), save it in the
    model dir and score it on every split beside the model and the baseline; None otherwise."""
    if config.ensemble == "none":
        return None
    from aiforge.train.baseline import scored_splits
    from aiforge.train.stacking import fit_stack, stack_report

    dataset = prep.dataset
    temperature = calibration["temperature"] if calibration else 1.0
    logits = np.asarray(metrics["validation"]["rows"]["logits"])
    stack = fit_stack(dataset.train, dataset.validation, logits, prep.task.labels, temperature)
    if stack is None:
        return None
    stack.save(Path(config.output_dir) / "model")
    return stack_report(stack, scored_splits(dataset), metrics, baseline)
