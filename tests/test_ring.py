import pytest
import torch

from charlstm.evaluation.ring import LowRing, _has_int8_product, fast_kind

needs_int8 = pytest.mark.skipif(not _has_int8_product(), reason="this torch has no oneDNN quantised product")


def _states(seed: int, n: int, hidden: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, hidden, generator=g).tanh()


@pytest.mark.parametrize("kind", ["int8", "bf16", "fp32"])
def test_each_kind_writes_q_dot_h_minus_the_shift_within_its_rounding(kind):
    """``bits`` against the float64 product of the same rows: int8 rounds each h to 1/254 and each
    query element to 1/254 of its row's largest (and writes bf16), bf16 rounds its inputs and
    output, fp32 only sums in another order. The shift is the one the product applied."""
    if kind == "int8" and not _has_int8_product():
        pytest.skip("this torch has no oneDNN quantised product")
    ring = LowRing(300, 64, torch.device("cpu"), kind)
    states = _states(0, 300)
    ring.write(torch.arange(300).flip(0), states.flip(0))  # any slots: here slot i holds state i
    rows = 1.44 * _states(1, 40)  # theta / ln 2 folded in
    shift = (rows @ states.T).amax(dim=-1) + 23.0  # as the cache sets it: the best near -23 bits
    query = ring.query(rows, shift)
    got = ring.bits(query, 100, 300).double()  # (200, 40): slots 100 to 299
    expected = (states[100:].double() @ rows.T.double()) - query.shift.double()
    assert got.shape == (200, 40) and got.dtype == torch.float64
    tolerance = {"int8": 0.35, "bf16": 0.35, "fp32": 1e-4}[kind]  # bits; int8 0.18, bf16 0.15 seen
    assert (got - expected).abs().max() < tolerance
    assert (query.shift - shift).abs().max() <= (0.125 if kind == "bf16" else 0.0)  # bf16 rounds it: half its ulp at 32-64


@needs_int8
def test_an_int8_ring_is_the_same_bit_for_bit_on_one_thread_and_two():
    """Its sums are integers: the product, and so a compressor's probabilities, do not depend on
    how the work is split between threads."""
    ring = LowRing(5000, 128, torch.device("cpu"), "int8")
    ring.write(torch.arange(5000), _states(2, 5000, 128))
    query = ring.query(2.0 * _states(3, 8, 128), torch.full((8,), 30.0))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ring.bits(query, 0, 5000)
        torch.set_num_threads(2)
        two = ring.bits(query, 0, 5000)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


@needs_int8
def test_the_cpu_holds_the_ring_as_int8_and_a_gpu_as_bf16():
    assert fast_kind(torch.device("cpu")) == "int8"
    assert fast_kind(torch.device("cuda")) == "bf16"
    assert fast_kind(torch.device("mps")) == "fp32"
    ring = LowRing(10, 64, torch.device("cpu"), "int8")
    assert ring.data.dtype == torch.uint8 and ring.data.shape == (10, 64) and ring.dtype == torch.bfloat16
