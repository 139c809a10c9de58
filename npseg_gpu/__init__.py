"""npseg_gpu: the same ops as npseg.ops on the GPU (CuPy arrays, Numba CUDA kernels)."""
