"""One place for randomness: the generators that initialisation and dropout draw from.

``manual_seed(seed)`` makes a run repeatable; ``get_state()`` / ``set_state(state)`` save and
restore every generator as plain JSON-serialisable data, so a checkpoint resumes bit-exactly.

* ``generator()`` / ``generator("cpu")``: a ``numpy.random.Generator`` (PCG64). Weight
  initialisation always draws here (on the host), whatever device the model later moves to.
* ``generator("cuda")``: the generator dropout uses for tensors on "cuda". It is made on first
  use by the single hook :func:`_new_cuda_generator`: ``npseg_gpu.random.default_rng(seed)`` when
  the GPU package provides it, else a NumPy generator (right for Numba's CUDA simulator, whose
  "device" arrays are NumPy arrays).
"""

from __future__ import annotations

import secrets

import numpy as np

__all__ = ["manual_seed", "seed", "initial_seed", "generator", "get_state", "set_state"]

_initial_seed = secrets.randbits(63)  # unseeded runs differ, as in PyTorch
_generators: dict = {"cpu": np.random.Generator(np.random.PCG64(_initial_seed))}


def _new_cuda_generator(seed_value: int):
    """The hook that builds the "cuda" generator (see the module docstring)."""
    try:
        import npseg_gpu.random as gpu_random
    except ImportError:
        gpu_random = None
    make = getattr(gpu_random, "default_rng", None)
    if make is not None:
        return make(seed_value)
    return np.random.Generator(np.random.PCG64(seed_value))


def _cuda_seed(seed_value: int) -> int:
    # a different stream from the CPU generator's, derived from the same seed
    return int(np.random.SeedSequence([seed_value, 1]).generate_state(1, np.uint64)[0] >> 1)


def manual_seed(seed_value: int) -> None:
    """Seed every generator (CPU now; "cuda" now or when it is first made)."""
    global _initial_seed
    if isinstance(seed_value, bool) or not isinstance(seed_value, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed_value).__name__} {seed_value!r}")
    if seed_value < 0:
        raise ValueError(f"seed must be >= 0, got {seed_value}")
    _initial_seed = int(seed_value)
    # keep the same Generator object (callers may hold it) and reset its bit generator
    _generators["cpu"].bit_generator.state = np.random.PCG64(_initial_seed).state
    if "cuda" in _generators:
        _generators["cuda"] = _new_cuda_generator(_cuda_seed(_initial_seed))


seed = manual_seed


def initial_seed() -> int:
    """The last seed given to :func:`manual_seed` (or the random one chosen at import)."""
    return _initial_seed


def generator(device: str = "cpu"):
    """The global generator of ``device`` ("cpu" or "cuda")."""
    if device == "cpu":
        return _generators["cpu"]
    if device != "cuda":
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if "cuda" not in _generators:
        _generators["cuda"] = _new_cuda_generator(_cuda_seed(_initial_seed))
    return _generators["cuda"]


def _state_of(gen):
    bit_generator = getattr(gen, "bit_generator", None)
    state = getattr(bit_generator, "state", None)
    return state if isinstance(state, dict) else None


def get_state() -> dict:
    """Every generator's state as JSON-serialisable data (``bit_generator.state`` dicts).

    A "cuda" generator whose state is not such a dict (a CuPy generator) is left out: resuming
    then restarts it from the seed rather than continuing its stream.
    """
    state = {"initial_seed": _initial_seed, "cpu": _state_of(_generators["cpu"])}
    if "cuda" in _generators and _state_of(_generators["cuda"]) is not None:
        state["cuda"] = _state_of(_generators["cuda"])
    return state


def set_state(state: dict) -> None:
    """Restore the generators from :func:`get_state`'s result."""
    global _initial_seed
    if not isinstance(state, dict) or "cpu" not in state:
        raise ValueError("state must be a dict from npseg.random.get_state()")
    _initial_seed = int(state.get("initial_seed", _initial_seed))
    _generators["cpu"].bit_generator.state = state["cpu"]
    if "cuda" in state:
        gen = generator("cuda")
        if _state_of(gen) is None:
            raise ValueError("the saved 'cuda' generator state does not fit this generator")
        gen.bit_generator.state = state["cuda"]
    elif "cuda" in _generators:
        _generators["cuda"] = _new_cuda_generator(_cuda_seed(_initial_seed))
