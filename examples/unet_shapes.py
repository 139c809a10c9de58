"""Train a same-padding U-Net on the synthetic shapes data with the Python API.

    python examples/unet_shapes.py [--epochs 3] [--train-size 500]

The same run from the command line is ``npseg train unet --data shapes``; this file shows the
pieces that command puts together.
"""

import argparse

import numpy as np

import npseg
from npseg import functional as F
from npseg import optim
from npseg.data import DataLoader, ShapesDataset
from npseg.metrics import SegmentationMetric
from npseg.models import UNet

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--train-size", type=int, default=500)
parser.add_argument("--image-size", type=int, default=64)
args = parser.parse_args()

npseg.manual_seed(0)
train_set = ShapesDataset("train", size=args.train_size, image_size=args.image_size)
val_set = ShapesDataset("val", size=100, image_size=args.image_size)
model = UNet(num_classes=train_set.num_classes, width=0.125, batch_norm=True)
optimizer = optim.Adam(model.parameters(), lr=3e-3)

for epoch in range(args.epochs):
    model.train()
    for batch in DataLoader(train_set, batch_size=16, shuffle=True, seed=epoch):
        loss = F.cross_entropy(model(npseg.Tensor(batch["images"])), batch["labels"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    metric = SegmentationMetric(train_set.num_classes)
    with npseg.no_grad():
        for batch in DataLoader(val_set, batch_size=16):
            metric.update(model(npseg.Tensor(batch["images"])).data.argmax(axis=1), batch["labels"])
    scores = metric.compute()
    print(f"epoch {epoch + 1}: last loss {float(loss.data):.4f}  val mIoU {scores['miou']:.3f}  "
          f"per class {np.round(scores['per_class_iou'], 3).tolist()}")
