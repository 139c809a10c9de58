"""Train a tiny segmentation network on generated data, with npseg's autograd, nn and optim.

The task: 32x32 grey images with noise and a few bright squares; label every pixel as square (1)
or background (0). The network is the smallest encoder-decoder:

    conv 3x3 (1 -> 16) - BN - ReLU - max pool 2      (32x32 -> 16x16)
    conv 3x3 (16 -> 32) - BN - ReLU
    transposed conv 2x2 stride 2 (32 -> 16) - ReLU   (16x16 -> 32x32)
    conv 3x3 (16 -> 2)                                per-pixel class scores

It trains with per-pixel softmax cross entropy and SGD with momentum for about half a minute on
a laptop CPU; the loss printed every few steps falls, and the pixel accuracy on held-out images
ends well above what "everything is background" scores. Same ``--seed``, same numbers.

    python examples/train_tiny.py [--seed 0] [--steps 1200] [--device cpu] [--save tiny.npz]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# The matrices of a tiny network are small: one BLAS thread is fastest (several threads spend
# more time synchronising than multiplying). An explicit setting in the environment wins.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import npseg.functional as F  # noqa: E402
import npseg.nn as nn  # noqa: E402
import npseg.random  # noqa: E402
from npseg import checkpoint, optim  # noqa: E402
from npseg.autograd import Tensor, no_grad  # noqa: E402


def make_batch(rng: np.random.Generator, n: int, size: int = 32, noise: float = 0.6):
    """``n`` images (n, 1, size, size) float32 and their masks (n, size, size) int64."""
    images = np.zeros((n, 1, size, size), dtype=np.float32)
    masks = np.zeros((n, size, size), dtype=np.int64)
    for i in range(n):
        for _ in range(rng.integers(2, 6)):
            side = int(rng.integers(4, 13))
            top, left = rng.integers(0, size - side + 1, size=2)
            masks[i, top:top + side, left:left + side] = 1
    images[:, 0] = masks + noise * rng.standard_normal((n, size, size))
    return images, masks


class TinySegNet(nn.Module):
    def __init__(self, classes: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.up = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.head = nn.Conv2d(16, classes, 3, padding=1)

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.up(x))
        return self.head(x)


def pixel_accuracy(model, images, masks, device, batch_size=64) -> float:
    model.eval()
    correct = 0
    with no_grad():
        for i in range(0, len(images), batch_size):
            x = Tensor(images[i:i + batch_size]).to(device)
            scores = model(x).numpy()
            correct += int((scores.argmax(axis=1) == masks[i:i + batch_size]).sum())
    model.train()
    return correct / masks.size


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--print-every", type=int, default=50)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--save", metavar="PATH", help="write a checkpoint here at the end")
    args = parser.parse_args(argv)

    npseg.random.manual_seed(args.seed)          # initialisation (and dropout, if any)
    data_rng = np.random.default_rng(args.seed)  # the generated images
    model = TinySegNet().to(args.device)
    optimizer = optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.steps)
    test_images, test_masks = make_batch(np.random.default_rng(args.seed + 1), 128)

    print(f"tiny segmentation net, {sum(p.numel() for p in model.parameters())} parameters, "
          f"{args.steps} steps of batch {args.batch_size} on {args.device}")
    print(f"pixel accuracy before training: "
          f"{pixel_accuracy(model, test_images, test_masks, args.device):.3f} "
          f"(all background: {1 - test_masks.mean():.3f})")
    start, running = time.perf_counter(), []
    for step in range(1, args.steps + 1):
        images, masks = make_batch(data_rng, args.batch_size)
        scores = model(Tensor(images).to(args.device))
        loss = F.cross_entropy(scores, Tensor(masks).to(args.device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        running.append(loss.item())
        if step % args.print_every == 0 or step == 1:
            print(f"step {step:4d}  loss {np.mean(running):.4f}  lr {scheduler.get_last_lr()[0]:.4f}"
                  f"  {time.perf_counter() - start:5.1f} s", flush=True)
            running = []
    accuracy = pixel_accuracy(model, test_images, test_masks, args.device)
    print(f"pixel accuracy after training: {accuracy:.4f} "
          f"({time.perf_counter() - start:.1f} s of training)")
    if args.save:
        checkpoint.save_checkpoint(args.save, model, optimizer, scheduler,
                                   meta={"steps": args.steps, "seed": args.seed,
                                         "pixel_accuracy": accuracy})
        print(f"checkpoint written to {args.save}")
    return accuracy


if __name__ == "__main__":
    main()
