"""Reverse-mode automatic differentiation over npseg's op pairs.

A :class:`Tensor` wraps an array (``.data``: NumPy, or CuPy on a GPU) and, when it was computed
from tensors that require gradients, the *node* that made it: its parents and a backward closure.
Every differentiable op records such a node through :func:`record`::

    out, cache = ops.relu_forward(x.data)
    y = record(out, (x,), lambda dout: ops.relu_backward(dout, cache))

``y.backward()`` then walks the recorded graph from ``y`` back to the leaves in reverse
topological order. Each node receives ``dL/d(output)`` (the sum over every use of the output),
calls its closure, and passes ``dL/d(parent)`` on. Leaves that require gradients (parameters,
inputs) accumulate theirs in ``.grad``. After the walk the closures are dropped, so the caches
of a training step are freed as soon as its backward pass ends.

Elementwise arithmetic broadcasts like NumPy; the gradient of a broadcast operand is summed back
to that operand's shape (:func:`unbroadcast`). Devices: ``"cpu"`` holds NumPy arrays, ``"cuda"``
holds CuPy arrays on a GPU, or NumPy arrays under Numba's CUDA simulator, which is why the device
is stored on the tensor rather than read from the array type.
"""

from __future__ import annotations

import contextlib
import numbers

import numpy as np

from npseg._device import array_module, check_device

__all__ = ["Tensor", "record", "no_grad", "enable_grad", "set_grad_enabled",
           "is_grad_enabled", "unbroadcast", "to_device"]

# ----------------------------------------------------------------------------- grad mode
_grad_enabled = True


def is_grad_enabled() -> bool:
    """Whether new operations record graph nodes."""
    return _grad_enabled


@contextlib.contextmanager
def set_grad_enabled(mode: bool):
    """Context manager (also usable as a decorator) that turns recording on or off."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, bool(mode)
    try:
        yield
    finally:
        _grad_enabled = previous


def no_grad():
    """``with no_grad(): ...`` computes without recording anything (evaluation, updates)."""
    return set_grad_enabled(False)


def enable_grad():
    return set_grad_enabled(True)


# ----------------------------------------------------------------------------- devices
def to_device(array, device: str):
    """``array`` on ``device``: ``npseg_gpu.asarray`` for "cuda", ``npseg_gpu.asnumpy`` back."""
    check_device(device)
    if device == "cuda":
        import npseg_gpu

        return npseg_gpu.asarray(array)
    if array_module(array) is np:
        return np.asarray(array)
    import npseg_gpu

    return npseg_gpu.asnumpy(array)


def _infer_device(array) -> str:
    return "cpu" if array_module(array) is np else "cuda"


# ----------------------------------------------------------------------------- graph nodes
class _Node:
    """How a tensor was made: its parent tensors and ``backward(dout) -> grads per parent``."""

    __slots__ = ("parents", "backward")

    def __init__(self, parents, backward):
        self.parents = parents
        self.backward = backward


_FREED = _Node((), None)  # stands in for a node whose closure backward() has already dropped


def record(data, parents, backward, device: str | None = None) -> "Tensor":
    """Wrap ``data`` in a Tensor and, if gradients are wanted, remember how it was made.

    ``parents`` is a sequence of Tensors (``None`` or plain arrays allowed: they get no gradient);
    ``backward(dout)`` returns one gradient per parent (``None`` where there is none), each of the
    parent's shape. Recording happens only in grad mode and when some parent requires a grad.
    """
    tensors = [p for p in parents if isinstance(p, Tensor)]
    if device is None:
        device = tensors[0].device if tensors else _infer_device(data)
    needs_grad = _grad_enabled and any(p.requires_grad for p in tensors)
    out = Tensor(data, device=device)
    if needs_grad:
        out.requires_grad = True
        out._node = _Node(tuple(p if isinstance(p, Tensor) else None for p in parents), backward)
    return out


def unbroadcast(grad, shape):
    """Sum ``grad`` over the axes along which an operand of ``shape`` was broadcast."""
    shape = tuple(shape)
    if tuple(grad.shape) == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


def _scatter_add(xp, target, index, values):
    """``target[index] += values`` with repeated indices adding up (``np.add.at``)."""
    if xp is np:
        np.add.at(target, index, values)
    else:
        import cupyx

        cupyx.scatter_add(target, index, values)


def _is_basic_index(index) -> bool:
    """Only ints, slices, None and Ellipsis: every element is selected at most once."""
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (numbers.Integral, slice, type(None), type(Ellipsis)))
               and not isinstance(i, bool) for i in items)


def _normalize_axis(axis, dim):
    return dim if axis is None else axis


# ----------------------------------------------------------------------------- Tensor
class Tensor:
    """An array with an optional gradient and the graph node that produced it.

    ``Tensor(data, requires_grad=False, device=None, dtype=None)``: ``data`` is an array (kept
    without a copy) or anything ``numpy.asarray`` accepts; ``device`` defaults to ``"cuda"`` for
    a CuPy array and ``"cpu"`` otherwise.
    """

    __array_ufunc__ = None  # ``ndarray + Tensor`` defers to Tensor.__radd__ instead of looping

    def __init__(self, data, requires_grad: bool = False, device: str | None = None,
                 dtype=None):
        if isinstance(data, Tensor):
            device = device or data.device
            data = data.data
        if not (hasattr(data, "dtype") and hasattr(data, "shape") and hasattr(data, "ndim")):
            data = np.asarray(data)
        elif isinstance(data, np.generic):
            data = np.asarray(data)
        if dtype is not None and data.dtype != np.dtype(dtype):
            data = data.astype(dtype)
        if device is None:
            device = _infer_device(data)
        check_device(device)
        if device == "cpu" and array_module(data) is not np:
            raise ValueError("device='cpu' needs a NumPy array; move the data with "
                             "npseg_gpu.asnumpy or Tensor.to('cpu')")
        self.data = data
        self.device = device
        self.grad = None
        self._node = None  # None for a leaf
        self._retain = False
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # --- basic attributes --------------------------------------------------------------
    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    @property
    def xp(self):
        """The array module of the data (numpy or cupy)."""
        return array_module(self.data)

    def size(self, dim: int | None = None):
        """The shape (PyTorch's ``size()``), or its length along ``dim``."""
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return int(self.data.size)

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, got {self.dtype}")
        if not requires_grad and not self.is_leaf:
            raise RuntimeError("requires_grad can only be switched off on a leaf; use detach()")
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self) -> "Tensor":
        """Keep ``.grad`` on this non-leaf tensor after backward (leaves always keep theirs)."""
        self._retain = True
        return self

    def detach(self) -> "Tensor":
        """The same data, cut off from the graph."""
        return Tensor(self.data, device=self.device)

    def numpy(self) -> np.ndarray:
        """The data as a host NumPy array (copied from the GPU where needed)."""
        return to_device(self.data, "cpu")

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.numpy().reshape(()).item()

    def __float__(self):
        return float(self.item())

    def __repr__(self) -> str:
        body = np.array2string(self.numpy(), separator=", ", prefix="Tensor(")
        extras = [f"dtype={self.dtype}"]
        if self.device != "cpu":
            extras.append(f"device={self.device!r}")
        if self.requires_grad:
            extras.append("requires_grad=True")
        return f"Tensor({body}, {', '.join(extras)})"

    def to(self, device: str) -> "Tensor":
        """A copy on ``device``; differentiable (the gradient travels back)."""
        check_device(device)
        if device == self.device:
            return self
        source = self.device
        return record(to_device(self.data, device), (self,),
                      lambda d: (to_device(d, source),), device=device)

    def astype(self, dtype) -> "Tensor":
        """Cast (differentiable: the gradient is cast back)."""
        dtype = np.dtype(dtype)
        if dtype == self.dtype:
            return self
        source = self.dtype
        return record(self.data.astype(dtype), (self,), lambda d: (d.astype(source),))

    def float(self) -> "Tensor":
        return self.astype(np.float32)

    def double(self) -> "Tensor":
        return self.astype(np.float64)

    # --- backward -------------------------------------------------------------------------
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate ``d(self)/d(leaf) . grad`` into the ``.grad`` of every leaf that needs it.

        ``grad`` is the upstream gradient, of this tensor's shape; a one-element output (a
        loss) defaults to 1. The graph's closures are freed afterwards unless ``retain_graph``.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad (was it "
                               "computed under no_grad(), or from tensors without requires_grad?)")
        xp = self.xp
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a one-element output, "
                                   f"got shape {self.shape}")
            grad = xp.ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else grad
            grad = xp.asarray(grad, dtype=self.dtype)
            if tuple(grad.shape) != self.shape:
                raise ValueError(f"grad must have the shape of the tensor {self.shape}, "
                                 f"got {tuple(grad.shape)}")

        grads = {id(self): grad}
        for tensor in _topological_order(self):
            g = grads.pop(id(tensor), None)
            if g is None:
                continue
            node = tensor._node
            if node is None or tensor._retain:
                tensor._accumulate(g)
            if node is None:
                continue
            if node is _FREED:
                raise RuntimeError("backward through a graph that has already been freed: "
                                   "pass retain_graph=True to the first backward()")
            parent_grads = node.backward(g)
            for parent, pg in zip(node.parents, parent_grads):
                if parent is None or pg is None or not parent.requires_grad:
                    continue
                if tuple(pg.shape) != parent.shape:
                    raise RuntimeError(f"a backward returned a gradient of shape "
                                       f"{tuple(pg.shape)} for a tensor of shape {parent.shape}")
                key = id(parent)
                grads[key] = pg if key not in grads else grads[key] + pg
            if not retain_graph:
                tensor._node = _FREED

    def _accumulate(self, g) -> None:
        g = g.astype(self.dtype, copy=False)
        self.grad = g.copy() if self.grad is None else self.grad + g

    # --- arithmetic -------------------------------------------------------------------------
    def _operand(self, other) -> "Tensor":
        """``other`` as a Tensor on this tensor's device; Python and NumPy scalars take its dtype."""
        if isinstance(other, Tensor):
            if other.device != self.device:
                raise ValueError(f"operands are on different devices: {self.device} and "
                                 f"{other.device}")
            return other
        xp = self.xp
        if isinstance(other, (numbers.Number, np.generic)) or np.ndim(other) == 0:
            return Tensor(xp.asarray(other, dtype=self.dtype), device=self.device)
        other = xp.asarray(other)
        if self.dtype.kind == "f" and other.dtype.kind in "biu":
            other = other.astype(self.dtype)  # an int/bool mask must not promote float32
        return Tensor(other, device=self.device)

    def __add__(self, other):
        b = self._operand(other)
        a_shape, b_shape = self.shape, b.shape
        return record(self.data + b.data, (self, b),
                      lambda d: (unbroadcast(d, a_shape), unbroadcast(d, b_shape)))

    def __radd__(self, other):
        return self._operand(other) + self

    def __sub__(self, other):
        b = self._operand(other)
        a_shape, b_shape = self.shape, b.shape
        return record(self.data - b.data, (self, b),
                      lambda d: (unbroadcast(d, a_shape), unbroadcast(-d, b_shape)))

    def __rsub__(self, other):
        return self._operand(other) - self

    def __mul__(self, other):
        b = self._operand(other)
        a_data, b_data = self.data, b.data
        return record(a_data * b_data, (self, b),
                      lambda d: (unbroadcast(d * b_data, a_data.shape),
                                 unbroadcast(d * a_data, b_data.shape)))

    def __rmul__(self, other):
        return self._operand(other) * self

    def __truediv__(self, other):
        b = self._operand(other)
        a_data, b_data = self.data, b.data
        return record(a_data / b_data, (self, b),
                      lambda d: (unbroadcast(d / b_data, a_data.shape),
                                 unbroadcast(-d * a_data / (b_data * b_data), b_data.shape)))

    def __rtruediv__(self, other):
        return self._operand(other) / self

    def __neg__(self):
        return record(-self.data, (self,), lambda d: (-d,))

    def __pow__(self, exponent):
        """``x ** p`` for a number ``p``: d/dx = p x^(p-1)."""
        if isinstance(exponent, Tensor) or not isinstance(exponent, numbers.Real):
            raise TypeError("only a number can be an exponent")
        x = self.data
        return record(x ** exponent, (self,), lambda d: (d * exponent * x ** (exponent - 1),))

    def __matmul__(self, other):
        """Matrix product of tensors with >= 2 dims (batched, broadcast like ``numpy.matmul``)."""
        b = self._operand(other)
        if self.ndim < 2 or b.ndim < 2:
            raise ValueError("@ needs operands with at least 2 dimensions")
        a_data, b_data = self.data, b.data
        xp = self.xp
        return record(a_data @ b_data, (self, b),
                      lambda d: (unbroadcast(d @ xp.swapaxes(b_data, -1, -2), a_data.shape),
                                 unbroadcast(xp.swapaxes(a_data, -1, -2) @ d, b_data.shape)))

    def __rmatmul__(self, other):
        return self._operand(other) @ self

    def exp(self):
        y = self.xp.exp(self.data)
        return record(y, (self,), lambda d: (d * y,))

    def log(self):
        x = self.data
        return record(self.xp.log(x), (self,), lambda d: (d / x,))

    def clone(self):
        return record(self.data.copy(), (self,), lambda d: (d,))

    # --- shape ------------------------------------------------------------------------------
    def __getitem__(self, index):
        """Basic and advanced indexing; repeated integer indices add up their gradients."""
        if isinstance(index, Tensor):
            index = index.data
        elif isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
        elif isinstance(index, list):
            index = self.xp.asarray(index)
        shape, dtype, xp = self.shape, self.dtype, self.xp
        basic = _is_basic_index(index)

        def backward(d):
            g = xp.zeros(shape, dtype=dtype)
            if basic or (getattr(index, "dtype", None) is not None and index.dtype == bool):
                g[index] = d  # every element selected at most once
            else:
                _scatter_add(xp, g, index, d)
            return (g,)

        return record(self.data[index], (self,), backward)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        original = self.shape
        return record(self.data.reshape(shape), (self,), lambda d: (d.reshape(original),))

    def view(self, *shape):
        return self.reshape(*shape)

    def flatten(self, start_dim: int = 0, end_dim: int = -1):
        n = max(self.ndim, 1)
        start, end = start_dim % n, end_dim % n
        if start > end:
            raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
        shape = self.shape
        merged = int(np.prod(shape[start:end + 1], dtype=np.int64))
        return self.reshape(shape[:start] + (merged,) + shape[end + 1:])

    def permute(self, *dims):
        """Reorder the axes: ``y.shape[i] == x.shape[dims[i]]``."""
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        if sorted(d % self.ndim for d in dims) != list(range(self.ndim)):
            raise ValueError(f"permute: dims {dims} is not a permutation of {self.ndim} axes")
        inverse = tuple(int(i) for i in np.argsort([d % self.ndim for d in dims]))
        xp = self.xp
        return record(xp.transpose(self.data, dims), (self,),
                      lambda d: (xp.transpose(d, inverse),))

    def transpose(self, dim0: int, dim1: int):
        """Swap two axes (PyTorch's ``transpose``; use :meth:`permute` for a full order)."""
        dims = list(range(self.ndim))
        dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
        return self.permute(dims)

    # --- reductions -------------------------------------------------------------------------
    def sum(self, dim=None, keepdim: bool = False, *, axis=None, keepdims=None):
        """Sum over ``dim`` (int, tuple or None = all); ``axis``/``keepdims`` are aliases."""
        axis = _normalize_axis(axis, dim)
        keep = keepdim if keepdims is None else keepdims
        if isinstance(axis, list):
            axis = tuple(axis)
        shape, xp = self.shape, self.xp

        def backward(d):
            if not keep and axis is not None:
                axes = (axis,) if isinstance(axis, numbers.Integral) else axis
                d = xp.expand_dims(d, tuple(a % len(shape) for a in axes))
            return (xp.broadcast_to(d, shape),)

        return record(self.data.sum(axis=axis, keepdims=keep), (self,), backward)

    def mean(self, dim=None, keepdim: bool = False, *, axis=None, keepdims=None):
        """Mean over ``dim`` (the sum divided by the number of elements summed)."""
        axis = _normalize_axis(axis, dim)
        keep = keepdim if keepdims is None else keepdims
        if axis is None:
            count = self.numel()
        else:
            axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
            count = int(np.prod([self.shape[a] for a in axes], dtype=np.int64))
        return self.sum(axis, keep) * (1.0 / count if count else float("nan"))


def _topological_order(root: Tensor) -> list:
    """Tensors reachable from ``root`` through recorded nodes, every tensor before its parents."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        tensor, expanded = stack.pop()
        if expanded:
            order.append(tensor)
            continue
        if id(tensor) in visited:
            continue
        visited.add(id(tensor))
        stack.append((tensor, True))
        node = tensor._node
        if node is not None:
            for parent in node.parents:
                if parent is not None and parent.requires_grad and id(parent) not in visited:
                    stack.append((parent, False))
    return order[::-1]
