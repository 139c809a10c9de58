"""A training step (forward, backward, Adam step) of the CPU presets of U-Net, FCN-8s and SegNet,
npseg against the same network written in PyTorch, in one process with the same thread count.

    python benchmarks/bench_train.py [--threads 2] [--repeat 5] [--batch-size 16] [--image-size 64]

The PyTorch twins are built layer for layer like npseg's models (same widths, batch norm,
ceil-mode pools, crops); the script checks that both have the same number of parameters.
"""

from __future__ import annotations

import argparse
import os
import sys


def _args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--only", default="")
    return parser.parse_args()


ARGS = _args()
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NPSEG_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import npseg  # noqa: E402
from npseg import functional as F  # noqa: E402
from npseg import optim  # noqa: E402
from npseg.models import build_model  # noqa: E402
from npseg.train.config import PRESETS  # noqa: E402

from _timing import median_ms  # noqa: E402
from _torch_twins import torch_twin  # noqa: E402

try:
    import torch

    torch.set_num_threads(ARGS.threads)
except ImportError:  # the table shows "-" for torch
    torch = None


def main():
    classes, size, batch = 4, ARGS.image_size, ARGS.batch_size
    rng = np.random.default_rng(0)
    images = rng.random((batch, 3, size, size), dtype=np.float32)
    labels = rng.integers(0, classes, (batch, size, size))
    print(f"training step (forward + backward + Adam), batch {batch} of {size}x{size}, "
          f"float32, {ARGS.threads} threads")
    print(f"{'model':<8} {'params':>9} {'npseg ms':>9} {'torch ms':>9} {'ratio':>6}")
    for name in ("unet", "fcn8s", "segnet"):
        if ARGS.only and ARGS.only not in name:
            continue
        cfg = PRESETS[name]["model_config"]
        npseg.manual_seed(0)
        model = build_model(name, classes, **cfg)
        opt = optim.Adam(model.parameters(), lr=1e-3)
        x = npseg.Tensor(images)

        def step():
            loss = F.cross_entropy(model(x), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()

        ours = median_ms(step, ARGS.repeat, warmup=True)
        n_params = sum(p.data.size for p in model.parameters())
        net = torch_twin(torch, name, classes, cfg) if torch is not None else None
        theirs = None
        if net is not None:
            if sum(p.numel() for p in net.parameters()) != n_params:
                raise SystemExit(f"{name}: the torch twin has a different number of parameters")
            topt = torch.optim.Adam(net.parameters(), lr=1e-3)
            tx, ty = torch.from_numpy(images), torch.from_numpy(labels)

            def tstep():
                loss = torch.nn.functional.cross_entropy(net(tx), ty)
                topt.zero_grad()
                loss.backward()
                topt.step()

            theirs = median_ms(tstep, ARGS.repeat, warmup=True)
        t_ms = f"{theirs:9.1f}" if theirs else f"{'-':>9}"
        ratio = f"{ours / theirs:6.2f}" if theirs else f"{'-':>6}"
        print(f"{name:<8} {n_params:>9} {ours:9.1f} {t_ms} {ratio}")


if __name__ == "__main__":
    main()
