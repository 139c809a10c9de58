"""Training configuration: one dataclass, and per-model presets small enough for a laptop CPU.

``TrainConfig.for_model(name, **overrides)`` starts from the model's preset and applies the
command line's options; a checkpoint stores the resulting config (``to_dict``), so a resumed,
evaluated or predicting run rebuilds exactly the same model and data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

__all__ = ["TrainConfig", "PRESETS"]


_FCN_SMALL = dict(width=0.25, batch_norm=True, head_channels=128, dropout=0.1)

#: model name -> defaults (the model's keyword arguments under "model_config")
PRESETS = {
    "unet": dict(model_config=dict(width=0.125, batch_norm=True), epochs=8, lr=3e-3),
    "unet-valid": dict(model_config=dict(width=0.125, batch_norm=True, depth=3), epochs=12, lr=3e-3),
    "fcn32s": dict(model_config=_FCN_SMALL, epochs=16, lr=3e-3),
    "fcn16s": dict(model_config=_FCN_SMALL, epochs=16, lr=3e-3),
    "fcn8s": dict(model_config=_FCN_SMALL, epochs=16, lr=3e-3),
    "segnet": dict(model_config=dict(width=0.125, depth=4), epochs=12, lr=3e-3),
    # Mask R-CNN: MaskRCNNConfig.shapes() (a small ResNet-FPN for 128x128 images)
    "maskrcnn": dict(model_config=dict(config="shapes"), epochs=8, batch_size=4, image_size=128,
                     lr=1e-3, train_size=1000, val_size=100),
}


@dataclass
class TrainConfig:
    """Everything a training run depends on (the command line's options).

    ``data`` is ``"shapes"`` (the built-in synthetic set) or the path of an image/label folder
    (see :class:`npseg.data.folder.FolderDataset`); ``num_classes`` (background included) is
    needed for a folder that is not in the VOC layout.
    """

    model: str
    data: str = "shapes"
    epochs: int = 12
    batch_size: int = 16
    image_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "cpu"
    train_size: int = 2000
    val_size: int = 200
    num_predictions: int = 8
    num_classes: int | None = None
    model_config: dict = field(default_factory=dict)

    @classmethod
    def for_model(cls, model: str, **overrides) -> "TrainConfig":
        """The preset of ``model`` with ``overrides`` (None values are ignored) applied."""
        if model not in PRESETS:
            raise ValueError(f"unknown model {model!r}; choose one of {', '.join(PRESETS)}")
        values = {k: (dict(v) if isinstance(v, dict) else v) for k, v in PRESETS[model].items()}
        model_config = dict(values.pop("model_config", {}))
        model_config.update(overrides.pop("model_config", None) or {})
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(model=model, model_config=model_config, **values)

    def __post_init__(self):
        for name in ("epochs", "batch_size", "image_size", "train_size", "val_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown training options in checkpoint: {sorted(unknown)}")
        return cls(**values)
