"""npseg's CPU threads: the pool itself, and ops giving the same results on 1 and on N threads.

The ops' own tests use small arrays, which run on the calling thread; the arrays here are large
enough to be cut into pieces (``MIN_ELEMENTS_PER_PIECE``) or a batch into several image blocks.
"""

import threading

import numpy as np
import pytest

import npseg
from npseg import ops
from npseg.ops import _threads

BIG = 2 * _threads.MIN_ELEMENTS_PER_PIECE + 12340      # cut into pieces on >= 2 threads


@pytest.fixture
def threads():
    """Set the thread count for one test and restore it afterwards."""
    before = _threads.get_num_threads()
    yield _threads.set_num_threads
    _threads.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2", None])
def test_set_num_threads_rejects_non_positive_ints(bad):
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        npseg.set_num_threads(bad)


def test_get_and_set_num_threads_are_public(threads):
    npseg.set_num_threads(3)
    assert npseg.get_num_threads() == 3 == _threads.get_num_threads()


def test_split_covers_the_range_in_order():
    for n in (0, 1, 5, 16, 17):
        for parts in (1, 2, 3, 40):
            ranges = _threads.split(n, parts)
            assert len(ranges) == max(1, min(parts, n))
            assert [i for a, b in ranges for i in range(a, b)] == list(range(n))
            sizes = [b - a for a, b in ranges]
            assert max(sizes) - min(sizes) <= 1            # even shares for the threads


def test_map_pieces_runs_pieces_at_once_and_keeps_order(threads):
    threads(3)
    barrier = threading.Barrier(3, timeout=10)        # only passes if 3 pieces run at once

    def piece(k):
        barrier.wait()
        return k, threading.get_ident()

    results = _threads.map_pieces(piece, range(3))
    assert [k for k, _ in results] == [0, 1, 2]
    idents = {ident for _, ident in results}
    assert len(idents) == 3 and threading.get_ident() in idents   # the caller and 2 pool threads


def test_map_pieces_one_thread_runs_inline(threads):
    threads(1)
    assert _threads.map_pieces(lambda k: threading.get_ident(), range(4)) == \
        [threading.get_ident()] * 4


def test_map_pieces_propagates_errors(threads):
    threads(2)

    def piece(k):
        if k == 1:
            raise ValueError("piece 1 failed")
        return k

    for pieces in (range(2), range(5)):      # a helper's error, and the caller's own
        with pytest.raises(ValueError, match="piece 1 failed"):
            _threads.map_pieces(piece, pieces)
    assert _threads.map_pieces(lambda k: k * k, range(5)) == [0, 1, 4, 9, 16]  # still usable


def test_nested_map_pieces_runs_inline_in_a_worker(threads):
    threads(2)

    def outer(k):
        inner = _threads.map_pieces(lambda j: threading.get_ident(), range(2))
        return set(inner) == {threading.get_ident()}

    assert _threads.map_pieces(outer, range(4)) == [True] * 4


def test_map_pieces_from_two_user_threads_at_once(threads):
    # One caller has the pool; a second one meanwhile runs its pieces on its own thread.
    threads(2)
    inside = threading.Barrier(2, timeout=10)
    results = {}

    def user(name):
        def piece(k):
            if k == 0:
                inside.wait()           # both callers are inside map_pieces at once
            return name, k * k
        results[name] = _threads.map_pieces(piece, range(6))

    users = [threading.Thread(target=user, args=(name,)) for name in "ab"]
    for t in users:
        t.start()
    for t in users:
        t.join(timeout=20)
    assert results == {name: [(name, k * k) for k in range(6)] for name in "ab"}


def test_a_new_thread_count_ends_the_old_pool_threads(threads):
    def pool_threads():
        for _ in range(200):            # the stopped threads end within a few milliseconds
            alive = [t for t in threading.enumerate() if t.name.startswith("npseg-")]
            if len(alive) <= npseg.get_num_threads() - 1:
                break
            threading.Event().wait(0.01)
        return alive

    for n in (3, 2, 4, 2):
        threads(n)
        _threads.map_pieces(lambda k: k, range(n))
        assert len(pool_threads()) == n - 1


def test_a_pool_replaced_before_use_runs_the_pieces_inline(threads, monkeypatch):
    # A caller got the pool just before another thread replaced it (a new thread count): its
    # helpers have ended, so the pieces run on the caller rather than wait for them forever.
    threads(2)
    stale = _threads._get_pool(1)
    threads(3)
    _threads._get_pool(2)
    assert stale.stopped
    monkeypatch.setattr(_threads, "_get_pool", lambda size: stale)
    result = []
    caller = threading.Thread(target=lambda: result.append(
        _threads.map_pieces(lambda k: (k, threading.get_ident()), range(3))), daemon=True)
    caller.start()
    caller.join(timeout=20)
    assert not caller.is_alive()
    assert result == [[(k, caller.ident) for k in range(3)]]


def _run(n_threads, fn, threads):
    threads(n_threads)
    return fn()


ELEMENTWISE = {
    "relu": lambda x, d: ops.relu_backward(d, ops.relu_forward(x)[1])[0],
    "relu_out": lambda x, d: ops.relu_forward(x)[0],
    "leaky_relu": lambda x, d: ops.leaky_relu_backward(d, ops.leaky_relu_forward(x, 0.2)[1])[0],
    "leaky_relu_out": lambda x, d: ops.leaky_relu_forward(x, 0.2)[0],
    "sigmoid": lambda x, d: ops.sigmoid_backward(d, ops.sigmoid_forward(x)[1])[0],
    "tanh": lambda x, d: ops.tanh_backward(d, ops.tanh_forward(x)[1])[0],
    "bce": lambda x, d: ops.binary_cross_entropy_with_logits_forward(
        x, 1 / (1 + np.exp(-d)), reduction="none")[0],
    "bce_grad": lambda x, d: ops.binary_cross_entropy_with_logits_backward(
        d, ops.binary_cross_entropy_with_logits_forward(x, 1 / (1 + np.exp(-d)),
                                                        reduction="none")[1])[0],
    "smooth_l1": lambda x, d: ops.smooth_l1_loss_forward(x, d, beta=0.5, reduction="none")[0],
    "smooth_l1_grad": lambda x, d: ops.smooth_l1_loss_backward(
        d, ops.smooth_l1_loss_forward(x, d, beta=0.5, reduction="none")[1])[0],
}


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elementwise_ops_are_bit_identical_on_several_threads(name, dtype, threads):
    rng = np.random.default_rng(0)
    x = (3 * rng.standard_normal(BIG)).astype(dtype).reshape(-1, 4)
    d = rng.standard_normal(x.shape).astype(dtype)
    one = _run(1, lambda: ELEMENTWISE[name](x, d), threads)
    three = _run(3, lambda: ELEMENTWISE[name](x, d), threads)
    assert one.dtype == dtype
    np.testing.assert_array_equal(one, three)


def test_batch_norm_on_several_threads_matches_one_thread(threads):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((12, 3, 200, 200)) * 2 + 1
    dout = rng.standard_normal(x.shape)
    gamma, beta = rng.random(3) + 0.5, rng.standard_normal(3)

    def run():
        stats = [np.zeros(3), np.ones(3)]
        y, cache = ops.batch_norm_forward(x, gamma, beta, *stats, training=True)
        return (y,) + ops.batch_norm_backward(dout, cache) + tuple(stats)

    for a, b in zip(_run(1, run, threads), _run(3, run, threads)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("transposed", [False, True])
def test_convolutions_on_several_threads_match_one_thread(transposed, threads):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((7, 4, 9, 11))
    w = rng.standard_normal((4, 6, 3, 3) if transposed else (6, 4, 3, 3))
    b = rng.standard_normal(6)
    forward = ops.conv_transpose2d_forward if transposed else ops.conv2d_forward
    backward = ops.conv_transpose2d_backward if transposed else ops.conv2d_backward

    def run():
        out, cache = forward(x, w, b, stride=2, padding=1)
        return (out,) + backward(np.cos(out), cache)

    for a, b_ in zip(_run(1, run, threads), _run(3, run, threads)):  # 7 images: 3 blocks
        np.testing.assert_allclose(a, b_, rtol=1e-12, atol=1e-12)


def test_blas_thread_count_is_restored_after_the_pool(threads):
    controls = _threads._blas_controls()
    if controls is None:
        pytest.skip("NumPy does not use OpenBLAS here")
    get, _ = controls
    before = get()
    threads(2)
    seen = _threads.map_pieces(lambda k: get(), range(2), uses_blas=True)
    assert seen == [1, 1]                     # one BLAS thread per piece while the pool runs
    assert get() == before                    # and the caller's count afterwards


def test_a_bad_npseg_num_threads_variable_is_named(monkeypatch):
    monkeypatch.setenv("NPSEG_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="NPSEG_NUM_THREADS must be an integer >= 1, got 'many'"):
        _threads._default_threads()
    monkeypatch.setenv("NPSEG_NUM_THREADS", "3")
    assert _threads._default_threads() == 3


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_image_blocks_give_every_thread_the_same_work(n_threads, threads):
    from npseg.ops import conv as conv_module
    threads(n_threads)
    budget = conv_module._BLOCK_BYTES
    pitch = conv_module._Pitch((1, 1), (1, 1), (1, 1), (1, 1), (0, 0), (1, 1))  # L = 1 column
    for N in (1, 2, 5, 16, 17):
        for per_image in (1, budget // 3, budget // 2 + 1, 3 * budget):   # bytes of uint8 rows
            blocks = conv_module._image_blocks(N, per_image, pitch, np.uint8)
            assert [i for a, b in blocks for i in range(a, b)] == list(range(N))
            sizes = [b - a for a, b in blocks]
            assert max(sizes) - min(sizes) <= 1
            assert len(blocks) == N or len(blocks) % n_threads == 0
            # within the budget, but for rounding up to a multiple of the thread count
            assert min(sizes) * per_image <= budget or min(sizes) == 1
