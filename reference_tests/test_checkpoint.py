"""Checkpoints: round trip, atomic writes, no pickle, and bit-exact resume of training."""

import json
import os

import numpy as np
import pytest

import npseg.functional as F
import npseg.nn as nn
import npseg.random
from npseg import checkpoint, optim
from npseg.autograd import Tensor
from npseg.checkpoint import CheckpointError


def test_round_trip(tmp_path):
    path = tmp_path / "ck.npz"
    arrays = {"model/conv.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
              "optim/state/3/momentum_buffer": np.linspace(0, 1, 5),
              "count": np.array(7, dtype=np.int64), "mask": np.array([True, False]),
              "empty": np.zeros((0, 4), dtype=np.float32)}
    meta = {"step": 12, "lr": 0.01, "name": "tiny", "nested": {"list": [1, 2.5, None]}}
    checkpoint.save(path, arrays, meta)
    loaded, loaded_meta = checkpoint.load(path)
    assert loaded_meta == meta
    assert set(loaded) == set(arrays)
    for k, v in arrays.items():
        assert loaded[k].dtype == v.dtype and loaded[k].shape == v.shape
        np.testing.assert_array_equal(loaded[k], v)
    checkpoint.save(str(path), {"a": np.ones(3)}, None, compress=True)  # overwrite, compressed
    loaded, loaded_meta = checkpoint.load(str(path))
    assert list(loaded) == ["a"] and loaded_meta is None
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]  # no temporary file left


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    checkpoint.save(path, {"w": np.ones(4)}, {"version": "old"})

    def broken_savez(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")  # some bytes reach the disk, then a crash
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, {"w": np.zeros(4)}, {"version": "new"})
    monkeypatch.undo()
    arrays, meta = checkpoint.load(path)
    assert meta == {"version": "old"} and np.array_equal(arrays["w"], np.ones(4))
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        checkpoint.load(tmp_path / "missing.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip file at all")
    with pytest.raises(CheckpointError, match="not an npseg checkpoint"):
        checkpoint.load(garbage)
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.ones(2))
    with pytest.raises(CheckpointError, match="not an npseg checkpoint"):
        checkpoint.load(plain)
    single = tmp_path / "single.npy"
    np.save(single, np.ones(2))
    with pytest.raises(CheckpointError, match="not an npseg checkpoint"):
        checkpoint.load(single)


def test_object_arrays_are_refused(tmp_path):
    """A file carrying a pickled object array is refused, even with a valid header."""
    path = tmp_path / "evil.npz"
    header = json.dumps({"format": "npseg-checkpoint", "version": 1, "meta": {}})
    np.savez(path, __npseg_meta__=np.array(header),
             payload=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(CheckpointError, match="pickle"):
        checkpoint.load(path)
    with pytest.raises(CheckpointError, match="object"):
        checkpoint.save(tmp_path / "x.npz", {"bad": np.array([None], dtype=object)})
    with pytest.raises(CheckpointError, match="JSON"):
        checkpoint.save(tmp_path / "x.npz", {}, {"bad": object()})
    with pytest.raises(CheckpointError, match="reserved"):
        checkpoint.save(tmp_path / "x.npz", {"__npseg_meta__": np.ones(1)})
    assert not (tmp_path / "x.npz").exists()


def test_pack_and_unpack_nested_state():
    tree = {"state": {0: {"step": 3, "exp_avg": np.ones(2)}, 5: {"buf": np.zeros((2, 2))}},
            "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0, 5],
                              "name": None, "nesterov": False}],
            "scalar": np.float32(2.5)}
    arrays, skeleton = checkpoint.pack_state(tree, "optim")
    assert set(arrays) == {"optim/state/0/exp_avg", "optim/state/5/buf", "optim/scalar"}
    json.dumps(skeleton)  # the skeleton is plain JSON
    back = checkpoint.unpack_state(arrays, json.loads(json.dumps(skeleton)))
    assert set(back["state"]) == {0, 5} and back["state"][0]["step"] == 3
    assert back["param_groups"][0]["betas"] == (0.9, 0.999)
    assert back["param_groups"][0]["params"] == [0, 5] and back["param_groups"][0]["name"] is None
    np.testing.assert_array_equal(back["state"][5]["buf"], np.zeros((2, 2)))
    assert back["scalar"].dtype == np.float32 and back["scalar"] == 2.5
    with pytest.raises(CheckpointError, match="same name"):
        checkpoint.pack_state({"a/b": np.ones(1), "a": {"b": np.ones(1)}}, "x")


# ----------------------------------------------------------------------------- resume
class DropNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(self.drop(F.relu(self.bn(self.conv(x)))))


def batch(step):
    rng = np.random.default_rng(1000 + step)
    return (Tensor(rng.standard_normal((4, 1, 6, 6)).astype(np.float32)),
            rng.integers(0, 2, (4, 6, 6)))


def build(seed, kind):
    npseg.random.manual_seed(seed)
    model = DropNet()
    if kind == "sgd":
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                        weight_decay=1e-3)
    else:
        opt = optim.AdamW(model.parameters(), lr=0.01, amsgrad=True)
    sched = optim.lr_scheduler.WarmupMultiStepLR(opt, [4], warmup_iters=3)
    return model, opt, sched


def train(model, opt, sched, steps):
    for step in steps:
        x, target = batch(step)
        loss = F.cross_entropy(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_resume_is_bit_exact(tmp_path, kind):
    n, k = 7, 3
    model, opt, sched = build(0, kind)
    train(model, opt, sched, range(n))
    reference = model.state_dict()

    model, opt, sched = build(0, kind)
    train(model, opt, sched, range(k))
    path = tmp_path / "resume.npz"
    checkpoint.save_checkpoint(path, model, opt, sched, meta={"step": k})
    del model, opt, sched

    model, opt, sched = build(123, kind)   # different init, different random state
    npseg.random.generator().random(10)    # and the stream moved on
    meta = checkpoint.load_checkpoint(path, model, opt, sched)
    assert meta == {"step": k}
    train(model, opt, sched, range(k, n))
    resumed = model.state_dict()
    assert list(resumed) == list(reference)
    for name in reference:
        np.testing.assert_array_equal(resumed[name], reference[name], err_msg=name)


def test_resume_without_the_random_state_differs(tmp_path):
    """The dropout masks after resuming come from the saved random state: without it the run
    diverges (so the resume test above really depends on it)."""
    model, opt, sched = build(0, "sgd")
    train(model, opt, sched, range(5))
    reference = model.state_dict()
    model, opt, sched = build(0, "sgd")
    train(model, opt, sched, range(2))
    path = tmp_path / "r.npz"
    checkpoint.save_checkpoint(path, model, opt, sched, random_state=False)
    model, opt, sched = build(9, "sgd")
    checkpoint.load_checkpoint(path, model, opt, sched)
    train(model, opt, sched, range(2, 5))
    assert not np.array_equal(model.state_dict()["conv.weight"], reference["conv.weight"])


def test_checkpoint_names_and_missing_parts(tmp_path):
    model, opt, sched = build(0, "sgd")
    train(model, opt, sched, range(2))
    path = tmp_path / "c.npz"
    checkpoint.save_checkpoint(path, model, opt)
    arrays, meta = checkpoint.load(path)
    assert "model/conv.weight" in arrays and "model/bn.num_batches_tracked" in arrays
    assert any(k.startswith("optim/state/") and k.endswith("/momentum_buffer") for k in arrays)
    with pytest.raises(CheckpointError, match="scheduler"):
        checkpoint.load_checkpoint(path, model, opt, sched)
    checkpoint.save(path, {"w": np.ones(1)})
    with pytest.raises(CheckpointError, match="training state"):
        checkpoint.load_checkpoint(path, model)
    assert os.listdir(tmp_path) == ["c.npz"]


def test_random_state_is_json_and_restores_streams():
    npseg.random.manual_seed(42)
    state = json.loads(json.dumps(npseg.random.get_state()))
    a = npseg.random.generator().random(5)
    npseg.random.manual_seed(1)
    npseg.random.set_state(state)
    np.testing.assert_array_equal(npseg.random.generator().random(5), a)
    assert npseg.random.initial_seed() == 42
    with pytest.raises(TypeError, match="seed"):
        npseg.random.manual_seed(1.5)
