"""Checkpoints: one ``.npz`` file of arrays plus JSON metadata, written atomically, read without
pickle.

File format: every array under its name, plus ``__npseg_meta__``, a 0-d unicode array holding
``{"format": "npseg-checkpoint", "version": 1, "meta": ...}`` as JSON. No object arrays, so
``numpy.load(..., allow_pickle=False)`` reads it and a checkpoint cannot run code when loaded.

Atomic: :func:`save` writes a temporary file in the target's directory and renames it over the
target with ``os.replace`` (atomic on POSIX and Windows): a crash mid-write leaves the previous
checkpoint intact, never a truncated one.

Training state (model, optimizer, scheduler, random generators) is nested dicts of arrays and
plain values; :func:`pack_state` flattens such a tree into arrays named by their path
(``optim/state/3/momentum_buffer``) and a JSON *skeleton* that records where each array was,
keeping int keys and tuples; :func:`unpack_state` rebuilds the tree. :func:`save_checkpoint` /
:func:`load_checkpoint` do it all for a model, an optimizer and a scheduler.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile

import numpy as np

from npseg import random as _random
from npseg.autograd import Tensor, to_device

__all__ = ["save", "load", "pack_state", "unpack_state", "pack_training_state",
           "unpack_training_state", "save_checkpoint", "load_checkpoint", "CheckpointError"]

META_KEY = "__npseg_meta__"
FORMAT = "npseg-checkpoint"
VERSION = 1
_RESERVED = {META_KEY, "file", "allow_pickle"}  # the last two are numpy.savez's own arguments


class CheckpointError(ValueError):
    """A file that is not a readable npseg checkpoint, or a state that cannot be saved."""


def _host_array(value, name: str) -> np.ndarray:
    if isinstance(value, Tensor):
        value = value.data
    if isinstance(value, np.generic):
        value = np.asarray(value)
    if not (hasattr(value, "dtype") and hasattr(value, "shape")):
        raise CheckpointError(f"array {name!r} must be an array, got {type(value).__name__}")
    value = np.asarray(to_device(value, "cpu"))
    if value.dtype.hasobject:
        raise CheckpointError(f"array {name!r} has dtype object: checkpoints hold no pickles")
    return value


# ----------------------------------------------------------------------------- files
def save(path, arrays: dict, meta=None, compress: bool = False) -> None:
    """Write ``arrays`` (name -> array) and ``meta`` (JSON-serialisable) to ``path`` atomically."""
    path = os.fspath(path)
    payload = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise CheckpointError(f"array names must be non-empty strings, got {name!r}")
        if name in _RESERVED:
            raise CheckpointError(f"array name {name!r} is reserved")
        payload[name] = _host_array(value, name)
    try:
        header = json.dumps({"format": FORMAT, "version": VERSION, "meta": meta})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"meta must be JSON-serialisable: {e}") from None
    payload[META_KEY] = np.array(header)

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            writer = np.savez_compressed if compress else np.savez
            writer(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 -> the usual permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def load(path):
    """``(arrays, meta)`` from a checkpoint written by :func:`save`."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}")
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path!r} is not an npseg checkpoint (not a readable .npz "
                              f"file: {e})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise CheckpointError(f"{path!r} is not an npseg checkpoint (a single .npy array, "
                              f"not an .npz archive)")
    with npz:
        if META_KEY not in npz.files:
            raise CheckpointError(f"{path!r} is not an npseg checkpoint (no {META_KEY} entry)")
        try:
            header = json.loads(str(npz[META_KEY][()]))
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"{path!r}: unreadable checkpoint header: {e}") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise CheckpointError(f"{path!r} is not an npseg checkpoint (wrong header)")
        if header.get("version", 0) > VERSION:
            raise CheckpointError(f"{path!r} has checkpoint version {header['version']}; this "
                                  f"npseg reads up to {VERSION}")
        arrays = {}
        for name in npz.files:
            if name == META_KEY:
                continue
            try:
                arrays[name] = npz[name]
            except ValueError as e:
                raise CheckpointError(f"{path!r}: array {name!r} cannot be loaded without "
                                      f"pickle ({e}); npseg checkpoints hold no object "
                                      f"arrays") from None
    return arrays, header.get("meta")


# ----------------------------------------------------------------------------- nested state
def pack_state(tree, prefix: str):
    """Flatten ``tree`` (dicts, lists, tuples, arrays, numbers, strings, None) into
    ``(arrays, skeleton)``: each array named ``prefix/key/key/...``, the skeleton JSON data
    with ``{"__array__": name}`` in place of each array."""
    arrays = {}

    def encode(value, path):
        if isinstance(value, Tensor) or hasattr(value, "__array_interface__") or (
                hasattr(value, "dtype") and hasattr(value, "shape")):
            if path in arrays:
                raise CheckpointError(f"two entries of the state map to the same name {path!r}")
            arrays[path] = _host_array(value, path)
            return {"__array__": path}
        if isinstance(value, dict):
            items = []
            for k, v in value.items():
                if isinstance(k, bool) or not isinstance(k, (str, int)):
                    raise CheckpointError(f"state keys must be str or int, got {k!r} at {path!r}")
                items.append([k, encode(v, f"{path}/{k}")])
            return {"__dict__": items}
        if isinstance(value, (list, tuple)):
            items = [encode(v, f"{path}/{i}") for i, v in enumerate(value)]
            return {"__tuple__": items} if isinstance(value, tuple) else items
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise CheckpointError(f"cannot store {type(value).__name__} at {path!r} in a checkpoint")

    return arrays, encode(tree, prefix)


def unpack_state(arrays: dict, skeleton):
    """Rebuild the tree that :func:`pack_state` flattened."""
    if isinstance(skeleton, list):
        return [unpack_state(arrays, v) for v in skeleton]
    if isinstance(skeleton, dict):
        if "__array__" in skeleton:
            name = skeleton["__array__"]
            if name not in arrays:
                raise CheckpointError(f"the checkpoint lacks array {name!r}")
            return arrays[name]
        if "__tuple__" in skeleton:
            return tuple(unpack_state(arrays, v) for v in skeleton["__tuple__"])
        if "__dict__" in skeleton:
            return {k: unpack_state(arrays, v) for k, v in skeleton["__dict__"]}
        raise CheckpointError(f"malformed state skeleton: {sorted(skeleton)}")
    return skeleton


def pack_training_state(model=None, optimizer=None, scheduler=None, random_state: bool = True,
                        meta=None):
    """``(arrays, meta)`` holding ``model.state_dict()`` (arrays ``model/<name>``), the optimizer's
    (``optim/...``), the scheduler's, ``npseg.random.get_state()`` and the user's ``meta``."""
    arrays, skeleton = {}, {}
    for key, obj in (("model", model), ("optim", optimizer), ("sched", scheduler)):
        if obj is not None:
            part, skeleton[key] = pack_state(dict(obj.state_dict()), key)
            arrays.update(part)
    if random_state:
        skeleton["random"] = _random.get_state()
    return arrays, {"npseg_state": skeleton, "user": meta}


def unpack_training_state(arrays: dict, meta, model=None, optimizer=None, scheduler=None,
                          restore_random: bool = True, strict: bool = True):
    """Load what :func:`pack_training_state` stored into the given objects; returns the user's
    meta. A part asked for but absent from the checkpoint is an error."""
    if not isinstance(meta, dict) or "npseg_state" not in meta:
        raise CheckpointError("this checkpoint holds no training state (save it with "
                              "save_checkpoint)")
    skeleton = meta["npseg_state"]
    for key, obj, what in (("model", model, "model"), ("optim", optimizer, "optimizer"),
                           ("sched", scheduler, "scheduler")):
        if obj is None:
            continue
        if key not in skeleton:
            raise CheckpointError(f"the checkpoint has no {what} state")
        state = unpack_state(arrays, skeleton[key])
        if key == "model":
            obj.load_state_dict(state, strict=strict)
        else:
            obj.load_state_dict(state)
    if restore_random and "random" in skeleton:
        _random.set_state(skeleton["random"])
    return meta.get("user")


def save_checkpoint(path, model=None, optimizer=None, scheduler=None, *,
                    random_state: bool = True, meta=None, compress: bool = False) -> None:
    """Save everything needed to resume training bit-exactly, atomically."""
    arrays, full_meta = pack_training_state(model, optimizer, scheduler, random_state, meta)
    save(path, arrays, full_meta, compress=compress)


def load_checkpoint(path, model=None, optimizer=None, scheduler=None, *,
                    restore_random: bool = True, strict: bool = True):
    """Restore a checkpoint of :func:`save_checkpoint` into the given objects (after building
    them as before, and moving model and optimizer to their device); returns the user's meta."""
    arrays, meta = load(path)
    return unpack_training_state(arrays, meta, model, optimizer, scheduler, restore_random,
                                 strict)
