import torch

from charlstm.checkpoint import load_checkpoint, model_from_checkpoint
from charlstm.config import SampleConfig
from charlstm.sampling import (
    TextStream,
    generate,
    next_tokens,
    top_k_filter,
    top_p_filter,
)


def test_top_k_is_clamped_to_the_vocabulary():
    logits = torch.tensor([[1.0, 3.0, 2.0]])
    assert torch.isfinite(top_k_filter(logits, 100)).all()
    kept = top_k_filter(logits, 2)
    assert torch.isinf(kept[0, 0]) and torch.isfinite(kept[0, 1:]).all()


def test_top_p_keeps_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = top_p_filter(probs.log(), 0.75)
    assert torch.isfinite(kept[0, :2]).all() and torch.isinf(kept[0, 2:]).all()
    # The most likely token always stays, however small p is.
    assert torch.isfinite(top_p_filter(probs.log(), 0.01)[0, 0])
    assert torch.isfinite(top_p_filter(probs.log(), 1.0)).all()


def test_greedy_and_filters_pick_the_right_tokens():
    logits = torch.tensor([[0.0, 5.0, 1.0], [2.0, 0.0, 9.0]])
    assert next_tokens(logits, 0.0).tolist() == [1, 2]
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        assert next_tokens(logits, 1.0, top_k=1, generator=g).tolist() == [1, 2]


def test_text_stream_stop_string_and_length():
    stream = TextStream(length=100, stop="END")
    out = "".join(stream.feed(c.encode()) for c in "abcENxyzENDmore")
    assert out == "abcENxyz" and stream.done
    stream = TextStream(length=5, stop=None)
    out = "".join(stream.feed(c.encode()) for c in "abcdefgh")
    assert out == "abcde"
    stream = TextStream(length=10, stop="\n\n")
    out = "".join(stream.feed(c.encode()) for c in "ab\n") + stream.finish()
    assert out == "ab\n"


def test_text_stream_joins_split_utf8():
    stream = TextStream(length=10, stop=None)
    data = "é日".encode()
    out = "".join(stream.feed(data[i : i + 1]) for i in range(len(data)))
    assert out == "é日"


def test_generate_length_seed_and_batch(tiny_run):
    payload = load_checkpoint(tiny_run)
    model, tok = model_from_checkpoint(payload)

    def run(**kwargs):
        pieces = list(generate(model, tok, SampleConfig(**kwargs), "cpu"))
        return ["".join(p[i] for p in pieces) for i in range(len(pieces[0]))]

    a = run(length=40, seed=3, prime="The ")
    assert len(a) == 1 and len(a[0]) == 40
    assert run(length=40, seed=3, prime="The ") == a
    many = run(length=25, seed=3, num_samples=4, temperature=1.0)
    assert len(many) == 4 and all(len(s) == 25 for s in many)
    assert len(set(many)) > 1
    greedy = run(length=30, temperature=0, num_samples=2)
    assert greedy[0] == greedy[1]


def test_prime_is_read_once_then_state_is_carried(tiny_run):
    payload = load_checkpoint(tiny_run)
    model, tok = model_from_checkpoint(payload)
    model.eval()
    calls = []
    original = model.forward

    def spy(ids, state=None):
        calls.append(tuple(ids.shape))
        return original(ids, state)

    model.forward = spy
    list(generate(model, tok, SampleConfig(prime="The cat", length=10, temperature=0), "cpu"))
    assert calls == [(7, 1)]  # the prime, once; each new token then goes through TokenStepper
