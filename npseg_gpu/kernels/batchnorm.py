"""Batch-norm kernels (mirror :mod:`npseg.ops.normalization`) on x viewed as (N, C, L).

Per-channel statistics are reductions over the M = N*L values of a channel: one *block* per
channel (block-stride over channels), each thread summing a strided share of the channel into a
float64 partial sum, then a tree reduction of the partial sums in shared memory
(:func:`block_sum`). The mean and the variance take two passes, as in the NumPy op
(mean(x), then mean((x - mean)^2)), which keeps the variance accurate for large means.

The elementwise kernels run one thread per element, thread t handling
``(n, c, l) = np.unravel_index(t, (N, C, L))``.
"""

from __future__ import annotations

from numba import cuda

from npseg_gpu.kernels._launch import REDUCE_SHARED, float_signatures, kernel

_F64 = cuda.float64  # resolved at import: inside a simulated kernel `cuda` is a stand-in


@cuda.jit(device=True)
def block_sum(partial, value):
    """The sum of ``value`` over the threads of the block (every thread gets it).

    ``partial`` is the block's shared buffer (at least blockDim.x long, blockDim.x a power of
    2); it is free again when this returns.
    """
    tid = cuda.threadIdx.x
    partial[tid] = value
    cuda.syncthreads()
    step = cuda.blockDim.x // 2
    while step > 0:
        if tid < step:
            partial[tid] += partial[tid + step]
        cuda.syncthreads()
        step //= 2
    total = partial[0]
    cuda.syncthreads()  # everyone has read partial[0] before the buffer is reused
    return total


@kernel(float_signatures(lambda f: (f[:, :, ::1], f[::1], f[::1])))
def channel_mean_var_kernel(x, mean, var):
    """mean[c] = mean of x[:, c, :]; var[c] = mean of (x[:, c, :] - mean[c])^2 (biased)."""
    n_batch, channels, length = x.shape
    count = n_batch * length
    partial = cuda.shared.array(REDUCE_SHARED, _F64)
    tid = cuda.threadIdx.x
    for c in range(cuda.blockIdx.x, channels, cuda.gridDim.x):
        acc = 0.0
        for k in range(tid, count, cuda.blockDim.x):
            acc += x[k // length, c, k % length]
        # the mean in x's dtype, as the NumPy op centres x with it
        mu = mean.dtype.type(block_sum(partial, acc) / count)
        acc = 0.0
        for k in range(tid, count, cuda.blockDim.x):
            d = x[k // length, c, k % length] - mu
            acc += d * d
        total = block_sum(partial, acc)
        if tid == 0:
            mean[c] = mu
            var[c] = total / count


@kernel(float_signatures(lambda f: (f[:, :, ::1], f[:, :, ::1], f[::1], f[::1])))
def channel_grad_sums_kernel(dy, x_hat, dbeta, dgamma):
    """dbeta[c] = sum of dy[:, c, :]; dgamma[c] = sum of dy[:, c, :] * x_hat[:, c, :]."""
    n_batch, channels, length = dy.shape
    count = n_batch * length
    partial = cuda.shared.array(REDUCE_SHARED, _F64)
    tid = cuda.threadIdx.x
    for c in range(cuda.blockIdx.x, channels, cuda.gridDim.x):
        acc_dy = 0.0
        acc_dyx = 0.0
        for k in range(tid, count, cuda.blockDim.x):
            g = dy[k // length, c, k % length]
            acc_dy += g
            acc_dyx += g * x_hat[k // length, c, k % length]
        total_dy = block_sum(partial, acc_dy)
        total_dyx = block_sum(partial, acc_dyx)
        if tid == 0:
            dbeta[c] = total_dy
            dgamma[c] = total_dyx


@kernel(float_signatures(lambda f: (f[:, :, ::1], f[::1], f[::1], f[::1], f[::1],
                                    f[:, :, ::1], f[:, :, ::1])))
def normalize_kernel(x, mean, inv_sigma, gamma, beta, x_hat, y):
    """x_hat = (x - mean[c]) * inv_sigma[c];  y = x_hat * gamma[c] + beta[c]."""
    n_batch, channels, length = x.shape
    total = n_batch * channels * length
    for t in range(cuda.grid(1), total, cuda.gridsize(1)):
        l = t % length
        c = (t // length) % channels
        n = t // (length * channels)
        h = (x[n, c, l] - mean[c]) * inv_sigma[c]
        x_hat[n, c, l] = h
        y[n, c, l] = x_hat[n, c, l] * gamma[c] + beta[c]


@kernel(float_signatures(lambda f: (f[:, :, ::1], f[:, :, ::1], f[::1], f[::1], f[::1],
                                    f[:, :, ::1])))
def batch_grad_kernel(dy, x_hat, scale, mean_dy, mean_dy_xhat, dx):
    """dx = scale[c] * (dy - mean_dy[c] - x_hat * mean_dy_xhat[c])   (training statistics)."""
    n_batch, channels, length = dy.shape
    total = n_batch * channels * length
    for t in range(cuda.grid(1), total, cuda.gridsize(1)):
        l = t % length
        c = (t // length) % channels
        n = t // (length * channels)
        dx[n, c, l] = scale[c] * (dy[n, c, l] - mean_dy[c] - x_hat[n, c, l] * mean_dy_xhat[c])
