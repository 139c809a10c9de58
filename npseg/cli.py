"""The ``npseg`` command: ``train``, ``evaluate`` and ``predict``.

    npseg train unet --data shapes --out runs/unet
    npseg evaluate runs/unet/best.npz --data shapes --split val
    npseg predict runs/unet/best.npz image.png --out predictions/
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

__all__ = ["main"]

MODEL_NAMES = ("fcn32s", "fcn16s", "fcn8s", "unet", "unet-valid", "segnet", "maskrcnn")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="npseg", description="Train, evaluate and predict with npseg's segmentation models.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model (defaults: the model's CPU preset)")
    t.add_argument("model", help=f"one of {', '.join(MODEL_NAMES)}")
    t.add_argument("--data", default="shapes",
                   help="'shapes' (built-in synthetic set) or a folder of images + PNG label maps")
    t.add_argument("--num-classes", type=int,
                   help="classes, background included (a folder not in the VOC layout)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--image-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--train-size", type=int, help="number of generated training images (shapes)")
    t.add_argument("--val-size", type=int, help="number of generated validation images (shapes)")
    t.add_argument("--device", choices=("cpu", "cuda"))
    t.add_argument("--seed", type=int)
    t.add_argument("--out", help="output folder (default runs/MODEL)")
    t.add_argument("--resume", metavar="CHECKPOINT", help="continue from a last.npz")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    e = sub.add_parser("evaluate", help="print a checkpoint's metrics as JSON")
    e.add_argument("checkpoint")
    e.add_argument("--data", help="'shapes' or a folder (default: the training data)")
    e.add_argument("--split", default="val")
    e.add_argument("--device", choices=("cpu", "cuda"), default="cpu")

    p = sub.add_parser("predict", help="write coloured predictions for images")
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+")
    p.add_argument("--out", default="predictions")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    return parser


def _train(args) -> int:
    from npseg.train.config import TrainConfig
    from npseg.train.loop import train

    if args.model not in MODEL_NAMES:
        raise ValueError(f"unknown model {args.model!r}; choose one of {', '.join(MODEL_NAMES)}")
    if args.data != "shapes" and not os.path.isdir(args.data):
        raise ValueError(f"--data must be 'shapes' or an existing folder, got {args.data!r}")
    out = args.out or os.path.join("runs", args.model)
    try:
        if args.resume:
            metrics = train(out_dir=out, resume=args.resume, epochs=args.epochs,
                            progress=not args.no_progress)
        else:
            config = TrainConfig.for_model(
                args.model, data=args.data, epochs=args.epochs, batch_size=args.batch_size,
                image_size=args.image_size, lr=args.lr, device=args.device, seed=args.seed,
                train_size=args.train_size, val_size=args.val_size, num_classes=args.num_classes)
            metrics = train(config, out_dir=out, progress=not args.no_progress)
    except KeyboardInterrupt as stop:
        print(f"\n{stop}" if str(stop) else "\ninterrupted", file=sys.stderr)
        return 130
    shown = {k: v for k, v in metrics.items() if k not in ("epochs", "config", "final")}
    print(json.dumps(shown, indent=2))
    print(f"checkpoints, metrics.json and predictions/ in {out}", file=sys.stderr)
    return 0


def _evaluate(args) -> int:
    from npseg.data.loader import DataLoader
    from npseg.train.loop import load_trained

    model, task, config, _ = load_trained(args.checkpoint, args.device)
    if args.data is not None:
        config.data = args.data
    if task.kind == "semantic":
        from npseg.train.semantic import build_datasets

        dataset, _, _ = build_datasets(config, split=args.split)
        loader = DataLoader(dataset, config.batch_size if config.data == "shapes" else 1)
        metrics = task.evaluate(model, loader)
    else:
        from npseg.train.instance import build_instance_datasets

        dataset = build_instance_datasets(config, split=args.split)
        metrics = task.evaluate_dataset(model, dataset)
    print(json.dumps(dict(split=args.split, checkpoint=args.checkpoint, **metrics), indent=2))
    return 0


def _read_image(path: str) -> np.ndarray:
    from PIL import Image

    if not os.path.isfile(path):
        raise ValueError(f"image not found: {path}")
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def _predict(args) -> int:
    from npseg.train.loop import load_trained

    model, task, _, _ = load_trained(args.checkpoint, args.device)
    os.makedirs(args.out, exist_ok=True)
    for path in args.images:
        picture = task.render(model, _read_image(path))
        target = os.path.join(args.out, os.path.splitext(os.path.basename(path))[0] + "_pred.png")
        picture.save(target)
        print(target)
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"train": _train, "evaluate": _evaluate, "predict": _predict}[args.command](args)
    except (ValueError, FileNotFoundError) as error:
        print(f"npseg {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
