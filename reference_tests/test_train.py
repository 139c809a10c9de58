"""The training loop and the `npseg` command: a tiny run's outputs, evaluate/predict from a
checkpoint, clear errors, and bit-exact resume (also after a Ctrl-C in the middle of an epoch)."""

import json
import os
import signal

import numpy as np
import pytest
from PIL import Image

from npseg import checkpoint
from npseg.cli import main
from npseg.train import TrainConfig, train

TINY = dict(width=1 / 16, depth=2, batch_norm=True)


def _config(**overrides):
    values = dict(epochs=2, batch_size=4, image_size=24, train_size=12, val_size=4,
                  num_predictions=2, model_config=TINY)
    values.update(overrides)
    return TrainConfig.for_model("unet", **values)


def _params(path):
    arrays, _ = checkpoint.load(path)
    return {k: v for k, v in arrays.items() if k.startswith(("model/", "optim/"))}


def test_cli_train_evaluate_predict(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "segnet", "--epochs", "1", "--train-size", "8", "--val-size", "4",
                 "--image-size", "24", "--batch-size", "4", "--out", str(out), "--no-progress"])
    assert code == 0
    for name in ("last.npz", "best.npz", "metrics.json"):
        assert (out / name).is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("miou", "pixel_accuracy", "per_class_iou", "loss", "seconds"):
        assert key in metrics and key in metrics["epochs"][0] and key in metrics["final"]
    assert len(metrics["per_class_iou"]) == 4
    pictures = sorted(os.listdir(out / "predictions"))
    assert pictures and Image.open(out / "predictions" / pictures[0]).size[0] == 3 * 24 + 2 * 4
    capsys.readouterr()

    assert main(["evaluate", str(out / "best.npz"), "--data", "shapes", "--split", "val"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["miou"] == pytest.approx(metrics["epochs"][0]["miou"])

    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 26, 3), dtype=np.uint8)).save(image)
    assert main(["predict", str(out / "best.npz"), str(image), "--out", str(tmp_path / "pred")]) == 0
    assert (tmp_path / "pred" / "img_pred.png").is_file()


@pytest.mark.parametrize("argv, message", [
    (["train", "fcn4s"], "unknown model 'fcn4s'"),
    (["train", "unet", "--data", "/no/such/folder"], "existing folder"),
    (["evaluate", "/no/such/checkpoint.npz"], "checkpoint.npz"),
    (["predict", "/no/such/checkpoint.npz", "x.png"], "checkpoint.npz"),
])
def test_cli_errors_are_clear(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_label_outside_the_classes_is_a_clear_error(tmp_path, capsys):
    root = tmp_path / "data"
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(root / split / "images" / "a.png")
        label = np.zeros((24, 24), np.uint8)
        label[3, 3] = 7
        Image.fromarray(label).save(root / split / "labels" / "a.png")
    code = main(["train", "unet", "--data", str(root), "--num-classes", "4", "--epochs", "1", "--image-size", "16",
                 "--batch-size", "1", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "7" in err and "a.png" in err


def test_resume_with_more_epochs_extends_a_finished_run(tmp_path):
    run = tmp_path / "run"
    train(_config(epochs=1), str(run), progress=False)
    metrics = train(out_dir=str(run), resume=str(run / "last.npz"), epochs=2, progress=False)
    assert [h["epoch"] for h in metrics["epochs"]] == [1, 2]
    _, meta = checkpoint.load(run / "last.npz")
    assert (meta["user"]["epoch"], meta["user"]["config"]["epochs"]) == (2, 2)


@pytest.mark.parametrize("stop_at", [(0, 2), (1, 0)])  # the last step of epoch 0; epoch 1's first
def test_ctrl_c_then_resume_equals_an_uninterrupted_run(tmp_path, stop_at):
    whole = tmp_path / "whole"
    train(_config(), str(whole), progress=False)

    def interrupt(epoch, step, logs):
        if (epoch, step) == stop_at:
            os.kill(os.getpid(), signal.SIGINT)

    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt, match="resume"):
        train(_config(), str(cut), progress=False, on_step=interrupt)
    _, meta = checkpoint.load(cut / "last.npz")
    assert (meta["user"]["epoch"], meta["user"]["step"]) == (stop_at[0], stop_at[1] + 1)
    train(out_dir=str(cut), resume=str(cut / "last.npz"), progress=False)
    a, b = _params(whole / "last.npz"), _params(cut / "last.npz")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    hist_a = json.loads((whole / "metrics.json").read_text())["epochs"]
    hist_b = json.loads((cut / "metrics.json").read_text())["epochs"]
    assert [h["miou"] for h in hist_a] == [h["miou"] for h in hist_b]
    assert [h["loss"] for h in hist_a] == [h["loss"] for h in hist_b]


def _maskrcnn_config(**overrides):
    values = dict(epochs=1, batch_size=2, image_size=64, train_size=4, val_size=2,
                  num_predictions=1, model_config={"config": "tiny"})
    values.update(overrides)
    return TrainConfig.for_model("maskrcnn", **values)


def test_maskrcnn_train_evaluate_predict(tmp_path, capsys):
    out = tmp_path / "mrcnn"
    metrics = train(_maskrcnn_config(), str(out), progress=False)
    for key in ("bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50", "loss_rpn_objectness",
                "loss_rpn_box", "loss_cls", "loss_box", "loss_mask", "loss", "seconds"):
        assert key in metrics and key in metrics["epochs"][0], key
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["segm_AP50"] == metrics["segm_AP50"]
    _, meta = checkpoint.load(out / "last.npz")
    assert isinstance(meta["user"]["config"]["model_config"]["config"], dict)  # full config stored
    capsys.readouterr()
    assert main(["evaluate", str(out / "last.npz")]) == 0
    assert json.loads(capsys.readouterr().out)["segm_AP50"] == pytest.approx(metrics["segm_AP50"])
    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(image)
    assert main(["predict", str(out / "last.npz"), str(image), "--out", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "img_pred.png").is_file()


def test_maskrcnn_resume_is_bit_exact(tmp_path):
    config = lambda: _maskrcnn_config(epochs=2, train_size=4)  # noqa: E731
    whole = tmp_path / "whole"
    train(config(), str(whole), progress=False)

    def interrupt(epoch, step, logs):
        if (epoch, step) == (0, 0):
            os.kill(os.getpid(), signal.SIGINT)

    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train(config(), str(cut), progress=False, on_step=interrupt)
    train(out_dir=str(cut), resume=str(cut / "last.npz"), progress=False)
    a, b = _params(whole / "last.npz"), _params(cut / "last.npz")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
