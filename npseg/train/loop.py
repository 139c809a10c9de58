"""The training loop shared by every task: epochs, validation, checkpoints, resume, progress bar.

Output folder::

    last.npz         the state after the last finished step (model, optimizer, scheduler, random
                     state, position in the data), written atomically; --resume continues from it
    best.npz         the state of the epoch with the best validation score
    metrics.json     per epoch and final metrics (loss, validation scores, seconds)
    predictions/     pictures of validation predictions (image | truth | prediction)

Resume is bit-exact: the data order and augmentation of epoch e are a pure function of
(seed, e) (see :mod:`npseg.data.loader`), the checkpoint stores the position inside the epoch,
and Ctrl-C only raises a flag that the loop checks between steps, so a checkpoint never holds a
half-applied optimizer step. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import time

import numpy as np
from tqdm import tqdm

from npseg import checkpoint, optim
from npseg import random as npseg_random
from npseg.data.loader import DataLoader

from .config import TrainConfig

__all__ = ["train", "load_trained", "write_json"]

FORMAT = "npseg-train-v1"


def write_json(path: str, value) -> None:
    """Write JSON atomically (a temporary file renamed over the target)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2, allow_nan=True)
    os.replace(tmp, path)


class _StopFlag:
    """SIGINT sets ``raised``; the loop stops at the next step boundary. A second SIGINT raises
    KeyboardInterrupt as usual."""

    def __init__(self):
        self.raised = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: no signal handling
            self._previous = None
        return self

    def _handle(self, signum, frame):
        if self.raised:
            raise KeyboardInterrupt
        self.raised = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def _build(config: TrainConfig):
    """Model, task and data sets for a config (the same for a new and a resumed run)."""
    from npseg.models import build_model

    if config.model == "maskrcnn":
        from .instance import build_instance_run

        return build_instance_run(config)
    from .semantic import SemanticTask, build_datasets

    train_set, val_set, transform = build_datasets(config)
    num_classes = train_set.num_classes
    model = build_model(config.model, num_classes, **config.model_config)
    task = SemanticTask(num_classes, getattr(train_set, "class_names", None), config.device)
    return model, task, train_set, val_set, transform


def _optimizer(model, config: TrainConfig, steps_per_epoch: int):
    optimizer = optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total = max(1, config.epochs * steps_per_epoch)
    scheduler = optim.lr_scheduler.WarmupCosineLR(optimizer, max_iters=total,
                                                  warmup_iters=min(100, total // 10))
    return optimizer, scheduler


def load_trained(path: str, device: str = "cpu"):
    """``(model, task, config, meta)`` rebuilt from a checkpoint (for evaluate/predict)."""
    arrays, meta = checkpoint.load(path)
    user = (meta or {}).get("user") or {}
    if user.get("format") != FORMAT:
        raise checkpoint.CheckpointError(f"{path} is not a checkpoint of `npseg train`")
    config = TrainConfig.from_dict(dict(user["config"], device=device))
    model, task, *_ = _build(config)
    if device != "cpu":
        model.to(device)
    checkpoint.unpack_training_state(arrays, meta, model=model, restore_random=False)
    model.eval()
    return model, task, config, user


def train(config: TrainConfig | None = None, out_dir: str = "runs/out", resume: str | None = None,
          epochs: int | None = None, progress: bool = True, on_step=None) -> dict:
    """Train (or resume) and return the final metrics.

    Args:
        config: the run's configuration (ignored when resuming: the checkpoint's is used).
        out_dir: where checkpoints, metrics and pictures go.
        resume: a ``last.npz`` to continue from.
        epochs: when resuming, a new total number of epochs (changes the LR schedule).
        progress: show a tqdm bar.
        on_step: called as ``on_step(epoch, step, logs)`` after every step (tests use it).
    """
    state = None
    if resume is not None:
        arrays, meta = checkpoint.load(resume)
        state = (meta or {}).get("user") or {}
        if state.get("format") != FORMAT:
            raise checkpoint.CheckpointError(f"{resume} is not a checkpoint of `npseg train`")
        config = TrainConfig.from_dict(state["config"])
        if epochs is not None:
            config.epochs = epochs
    if config is None:
        raise ValueError("train() needs a config or a checkpoint to resume")
    os.makedirs(out_dir, exist_ok=True)

    npseg_random.manual_seed(config.seed)
    model, task, train_set, val_set, transform = _build(config)
    if config.device != "cpu":
        model.to(config.device)
    loader = DataLoader(train_set, config.batch_size, shuffle=True, seed=config.seed,
                        drop_last=len(train_set) >= config.batch_size, transform=transform)
    same_size = config.data == "shapes"
    val_loader = DataLoader(val_set, config.batch_size if same_size else 1, shuffle=False)
    optimizer, scheduler = _optimizer(model, config, len(loader))

    # log_sums: the sums of this epoch's logged losses so far (their means go to metrics.json)
    history, best, log_sums = [], None, {}
    start_epoch, start_step, seconds = 0, 0, 0.0
    if state is not None:
        checkpoint.unpack_training_state(arrays, meta, model, optimizer, scheduler)
        history, best, log_sums = state["history"], state["best"], state["log_sums"]
        start_epoch, start_step, seconds = state["epoch"], state["step"], state["seconds"]

    def save(path, epoch, step):
        user = dict(format=FORMAT, config=config.to_dict(), task=task.kind, epoch=epoch, step=step,
                    history=history, best=best, log_sums=log_sums, seconds=seconds,
                    num_classes=task.num_classes, class_names=task.class_names)
        checkpoint.save_checkpoint(path, model, optimizer, scheduler, meta=user)

    last_path, best_path = os.path.join(out_dir, "last.npz"), os.path.join(out_dir, "best.npz")
    with _StopFlag() as stop:
        for epoch in range(start_epoch, config.epochs):
            model.train()
            first = start_step if epoch == start_epoch else 0
            if first == 0:
                log_sums = {}
            bar = tqdm(total=len(loader), initial=first, disable=not progress, unit="batch",
                       desc=f"{config.model} epoch {epoch + 1}/{config.epochs}", dynamic_ncols=True)
            tic = time.perf_counter()
            batches = itertools.islice(loader.iter_epoch(epoch), first, None)
            for step, batch in enumerate(batches, start=first):
                t0 = time.perf_counter()
                loss, logs = task.loss(model, batch)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                for name, value in logs.items():
                    log_sums[name] = log_sums.get(name, 0.0) + value
                speed = len(batch["images"]) / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(loss=f"{logs['loss']:.4f}", img_s=f"{speed:.1f}")
                bar.update(1)
                if on_step is not None:
                    on_step(epoch, step, logs)
                if stop.raised:
                    seconds += time.perf_counter() - tic
                    save(last_path, epoch, step + 1)
                    bar.close()
                    raise KeyboardInterrupt(f"stopped; resume with --resume {last_path}")
            bar.close()
            seconds += time.perf_counter() - tic
            steps = max(len(loader), 1)
            record = dict(epoch=epoch + 1, **{k: v / steps for k, v in log_sums.items()},
                          lr=float(scheduler.get_last_lr()[0]), seconds=round(seconds, 2))
            record.update(task.evaluate(model, val_loader))
            history.append(record)
            score = record[task.score_name]
            if best is None or (score is not None and score > best[task.score_name]):
                best = {"epoch": epoch + 1, task.score_name: score}
                save(best_path, epoch + 1, 0)
            save(last_path, epoch + 1, 0)
            _write_metrics(out_dir, config, task, history, best)
            task.write_predictions(model, val_set, os.path.join(out_dir, "predictions"),
                                   config.num_predictions)
            if progress:
                shown = {k: v for k, v in record.items() if not isinstance(v, (list, dict))}
                tqdm.write(json.dumps(shown))
    return _write_metrics(out_dir, config, task, history, best)


def _write_metrics(out_dir, config, task, history, best) -> dict:
    final = dict(history[-1]) if history else {}
    metrics = dict(final, model=config.model, config=config.to_dict(), best=best, epochs=history,
                   final=final)
    write_json(os.path.join(out_dir, "metrics.json"), _jsonable(metrics))
    return metrics


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value
