"""Train the small Mask R-CNN on the synthetic shapes and measure its COCO box and mask AP.

Everything through the Python API: a data set and a loader, the model (``MaskRCNN(3,
"shapes")``: ResNet-18 layout at half width, FPN 64), an optimizer, a loop that sums the five
losses, then ``evaluate_instances`` on held-out images. Training from scratch on a laptop CPU:
the losses fall within the first hundred steps; a few thousand steps give useful masks.

    python examples/maskrcnn_shapes.py [--steps 300] [--batch-size 4] [--threads 2]
                                       [--val-size 50] [--save maskrcnn.npz] [--png out.png]
"""

from __future__ import annotations

import argparse
import os
import sys


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--val-size", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=20)
    parser.add_argument("--save", default=None, help="write a checkpoint (.npz) here")
    parser.add_argument("--png", default=None, help="draw the detections on val images here")
    return parser.parse_args()


args = parse_args()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(args.threads)          # before numpy is imported

import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import npseg.random  # noqa: E402
from npseg import checkpoint, optim  # noqa: E402
from npseg.autograd import Tensor  # noqa: E402
from npseg.data import DataLoader, ShapesDataset  # noqa: E402
from npseg.models.maskrcnn import MaskRCNN  # noqa: E402
from npseg.train.instance import (evaluate_instances, instance_loss_names,  # noqa: E402
                                  predict_instances)


def main():
    npseg.random.manual_seed(args.seed)
    train = ShapesDataset("train", args.train_size, args.image_size, seed=args.seed)
    val = ShapesDataset("val", args.val_size, args.image_size, seed=args.seed)
    loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, seed=args.seed,
                        drop_last=True)

    model = MaskRCNN(num_classes=3, config="shapes")
    optimizer = optim.Adam(model.parameters(), lr=args.lr)
    print(f"Mask R-CNN (shapes preset): {sum(p.numel() for p in model.parameters()):,} "
          f"parameters; {args.steps} steps of {args.batch_size} images")

    model.train()
    step, start, running = 0, time.perf_counter(), {k: 0.0 for k in instance_loss_names}
    while step < args.steps:
        for batch in loader:
            losses = model(Tensor(batch["images"]), batch["instances"])
            total = sum(losses.values())
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            step += 1
            for k in running:
                running[k] += losses[k].item() / args.log_every
            if step % args.log_every == 0 or step == args.steps:
                parts = "  ".join(f"{k[5:]} {v:.3f}" for k, v in running.items())
                elapsed = time.perf_counter() - start
                print(f"step {step:5d}  total {sum(running.values()):.3f}  {parts}  "
                      f"({elapsed / step:.2f} s/step)", flush=True)
                running = {k: 0.0 for k in instance_loss_names}
            if step == args.steps:
                break

    metrics = evaluate_instances(model, val, batch_size=args.batch_size)
    print("val: " + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items()
                              if k.startswith(("bbox", "segm"))))
    if args.save:
        checkpoint.save_checkpoint(args.save, model, optimizer,
                                   meta={"model": "maskrcnn", "num_classes": 3,
                                         "config": model.config.to_dict(), "step": step})
        print(f"checkpoint written to {args.save}")
    if args.png:
        from npseg.train.visualize import draw_instances, side_by_side

        samples = [val[i] for i in range(min(4, len(val)))]
        detections = predict_instances(model, np.stack([s["image"] for s in samples]))
        panels = []
        for s, det in zip(samples, detections):
            keep = det["scores"] >= 0.5
            panels.append(np.asarray(draw_instances(
                s["image"], det["boxes"][keep], det["labels"][keep], det["scores"][keep],
                det["masks"][keep], class_names=train.class_names)))
        side_by_side(panels).save(args.png)
        print(f"detections drawn to {args.png}")


if __name__ == "__main__":
    main()
