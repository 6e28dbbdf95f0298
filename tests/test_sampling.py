import math
import random

import pytest
import torch

from charlstm.runs.checkpoint import load_checkpoint, model_from_checkpoint
from charlstm.config import SampleConfig
from charlstm.generation.sampling import (
    NgramBlocker,
    TextStream,
    encode_prime,
    generate,
    min_p_filter,
    next_tokens,
    no_repeat_ngram_filter,
    repetition_penalty,
    top_k_filter,
    top_p_filter,
)

INF = float("inf")


def continuation_logprob(model, prime_ids: list[int], ids: list[int]) -> float:
    """Sum of log-softmax of each of ``ids`` after ``prime_ids``, from one pass of the fused model."""
    model.eval()
    with torch.no_grad():
        seq = torch.tensor(prime_ids + ids).unsqueeze(1)  # (T, 1)
        logits, _ = model(seq[:-1])  # (T-1, 1, V)
        logprobs = logits[:, 0].double().log_softmax(-1)  # (T-1, V)
        picked = logprobs[len(prime_ids) - 1 :].gather(1, torch.tensor(ids).unsqueeze(1))  # (len(ids), 1)
    return float(picked.sum())


def final_state(model, ids: list[int]):
    """The fused model's state after reading ``ids`` from zeros."""
    with torch.no_grad():
        return model(torch.tensor(ids).unsqueeze(1))[1]


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


def test_prime_is_read_once_then_state_is_carried(tiny_run, small_text):
    """Each token is read once: a short prime and every new token by the stepper, a long prime
    by the fused layer in one call; the prefix is never fed again. Both paths agree."""
    from charlstm.stepper import TokenStepper
    from charlstm.generation.engine import STEPPED_PRIME

    payload = load_checkpoint(tiny_run)
    model, tok = model_from_checkpoint(payload)
    model.eval()
    fused, stepped = [], []
    original = model.forward

    def spy(ids, hidden=None):
        fused.append(tuple(ids.shape))
        return original(ids, hidden)

    class Counting(TokenStepper):
        def step_(self, ids, state, out=None, token=None):
            stepped.append(tuple(ids.shape))
            return super().step_(ids, state, out, token)

    model.forward = spy
    greedy = SampleConfig(prime="The cat", length=10, temperature=0)
    short = "".join(p[0] for p in generate(model, tok, greedy, "cpu", stepper=Counting(model)))
    assert fused == [] and len(stepped) == 7 + 10  # the prime's 7 tokens, then one per new token
    long_prime = small_text[: STEPPED_PRIME + 44]
    fused.clear(), stepped.clear()
    config = SampleConfig(prime=long_prime, length=10, temperature=0)
    long_text = "".join(p[0] for p in generate(model, tok, config, "cpu", stepper=Counting(model)))
    assert fused == [(STEPPED_PRIME + 44, 1)] and len(stepped) == 10
    model.forward = original  # the same continuation when the long prime is read token by token
    from charlstm.generation import request

    sampling_limit, request.STEPPED_PRIME = request.STEPPED_PRIME, 10**6
    try:
        assert "".join(p[0] for p in generate(model, tok, config, "cpu")) == long_text
    finally:
        request.STEPPED_PRIME = sampling_limit
    assert len(short) == 10


def test_min_p_keeps_tokens_at_least_p_times_as_likely_as_the_top():
    logits = torch.tensor([[0.5, 0.25, 0.15, 0.1], [0.25, 0.25, 0.25, 0.25]]).log()
    kept = min_p_filter(logits, 0.4)  # row 0: at least 0.2
    assert torch.equal(torch.isinf(kept), torch.tensor([[False, False, True, True], [False] * 4]))
    assert torch.equal(kept[0, :2], logits[0, :2]) and torch.equal(kept[1], logits[1])
    # p = 1 keeps the top token and its equals; any p keeps the top token.
    only_top = min_p_filter(logits, 1.0)
    assert torch.equal(torch.isfinite(only_top), torch.tensor([[True, False, False, False], [True] * 4]))
    assert torch.equal(min_p_filter(logits, 1e-9), logits)
    # Masked entries stay masked; logits 1 and 0 are a probability ratio of 1/e = 0.37.
    masked = torch.tensor([[-INF, 1.0, 0.0]])
    assert torch.equal(min_p_filter(masked, 0.36), torch.tensor([[-INF, 1.0, 0.0]]))
    assert torch.equal(min_p_filter(masked, 0.38), torch.tensor([[-INF, 1.0, -INF]]))


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0, 0.0], [2.0, -1.0, 0.5, 3.0, 0.0]])
    history = torch.tensor([[0, 1, 1, 4], [3, 3, 3, 3]])  # repeats count once
    out = repetition_penalty(logits, history, 2.0)
    assert torch.equal(out, torch.tensor([[1.0, -2.0, 0.5, 3.0, 0.0], [2.0, -1.0, 0.5, 1.5, 0.0]]))
    assert torch.equal(logits[0], torch.tensor([2.0, -1.0, 0.5, 3.0, 0.0]))  # the input is unchanged
    favoured = repetition_penalty(logits[:1], history[:1], 0.5)  # below 1: repeats more likely
    assert torch.equal(favoured, torch.tensor([[4.0, -0.5, 0.5, 3.0, 0.0]]))
    assert repetition_penalty(logits, history, 1.0) is logits
    masked = repetition_penalty(torch.tensor([[-INF, 1.0]]), torch.tensor([[0, 1]]), 1.5)
    assert masked[0, 0] == -INF and math.isclose(masked[0, 1].item(), 1 / 1.5, rel_tol=1e-6)


def test_no_repeat_ngram_bans_what_would_repeat_an_ngram():
    logits = torch.zeros(4, 5)
    histories = [[1, 2, 3, 1, 2], [4, 4, 4], [0], []]
    banned = torch.isinf(no_repeat_ngram_filter(logits, histories, 3))
    assert banned.nonzero().tolist() == [[0, 3], [1, 4]]  # (1, 2) -> 3 seen; (4, 4) -> 4 seen
    # n = 2: whatever followed the last token before; n = 1: nothing seen may come again.
    assert torch.isinf(no_repeat_ngram_filter(logits[:1], [[1, 2, 1, 4, 1]], 2)).nonzero().tolist() == [
        [0, 2],
        [0, 4],
    ]
    assert torch.isinf(no_repeat_ngram_filter(logits[:1], [[3, 1, 3]], 1)).nonzero().tolist() == [
        [0, 1],
        [0, 3],
    ]
    # A (B, T) tensor works the same as lists.
    as_tensor = no_repeat_ngram_filter(logits[:2], torch.tensor([[1, 2, 3, 1, 2], [0, 4, 4, 4, 4]]), 3)
    assert torch.isinf(as_tensor).nonzero().tolist() == [[0, 3], [1, 4]]


def test_ngram_ban_is_lifted_for_a_row_it_would_empty():
    logits = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    out = no_repeat_ngram_filter(logits, [[0, 1, 2], [0]], 1)
    assert torch.equal(out, torch.tensor([[1.0, 2.0, 3.0], [-INF, 2.0, 3.0]]))
    # Tokens already masked (the unknown symbol) count as gone.
    out = no_repeat_ngram_filter(torch.tensor([[1.0, 2.0, -INF]]), [[0, 1]], 1)
    assert torch.equal(out, torch.tensor([[1.0, 2.0, -INF]]))


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_ngram_blocker_step_by_step_matches_a_full_rescan(n):
    rng = random.Random(n)
    rows = [[rng.randrange(4) for _ in range(60)] for _ in range(3)]
    blocker = NgramBlocker(n, 3)
    for t in range(60):
        prefixes = [row[:t] for row in rows]
        expected = [
            {seq[i + n - 1] for i in range(len(seq) - n + 1) if seq[i : i + n - 1] == seq[len(seq) - n + 1 :]}
            if len(seq) >= n - 1
            else set()
            for seq in prefixes
        ]
        assert blocker.banned() == expected
        assert NgramBlocker.from_history(n, prefixes).banned() == expected
        blocker.update(torch.tensor([row[t] for row in rows]))


def test_ngram_blocker_select_reorders_and_copies_rows():
    blocker = NgramBlocker.from_history(2, [[1, 2, 1], [3, 0, 3]])
    assert blocker.banned() == [{2}, {0}]
    blocker.select([1, 1, 0])
    assert blocker.banned() == [{0}, {0}, {2}]
    blocker.update([4, 1, 2])  # the two copies of row 1 now differ
    assert blocker.banned() == [set(), set(), {1}]
    blocker.update([3, 3, 1])
    assert blocker.banned() == [{0, 4}, {0, 1}, {2}]  # each copy saw only its own tokens


def test_next_tokens_filter_order():
    # The penalty and the ban come before greedy decoding.
    logits = torch.tensor([[3.0, 2.0, 0.0]])
    assert next_tokens(logits, 0.0, repetition_penalty=2.0, history=torch.tensor([[0]])).tolist() == [1]
    assert next_tokens(logits, 0.0, ngram_blocker=NgramBlocker.from_history(1, [[0]])).tolist() == [1]
    # ... and before top-k, which then keeps the best token that is still allowed.
    g = torch.Generator().manual_seed(0)
    blocker, history = NgramBlocker.from_history(1, [[0]]), torch.tensor([[0]])
    for _ in range(20):
        assert next_tokens(logits, 1.0, top_k=1, generator=g, ngram_blocker=blocker).tolist() == [1]
        picked = next_tokens(logits, 1.0, top_k=1, generator=g, repetition_penalty=2.0, history=history)
        assert picked.tolist() == [1]
    # Min-p cuts after temperature: at temperature 2, p = (0.6, 0.3, 0.1) flattens to ratios
    # (1, 0.71, 0.41) of the top, so min-p 0.4 keeps all three (before it, 0.1 / 0.6 < 0.4).
    logits = torch.tensor([[0.6, 0.3, 0.1]]).log()
    drawn = {next_tokens(logits, 2.0, generator=g, min_p=0.4).item() for _ in range(200)}
    assert drawn == {0, 1, 2}
    drawn = {next_tokens(logits, 1.0, generator=g, min_p=0.4).item() for _ in range(200)}
    assert drawn == {0, 1}
    assert {next_tokens(logits, 1.0, generator=g, min_p=1.0).item() for _ in range(50)} == {0}
    with pytest.raises(ValueError, match="^a repetition penalty needs the history of recent tokens$"):
        next_tokens(logits, 1.0, repetition_penalty=1.2)


def _texts(generation) -> list[str]:
    pieces = list(generation)
    return ["".join(p[i] for p in pieces) for i in range(len(pieces[0]))]


def test_generate_records_the_models_logprob_of_each_sample(tiny_run):
    model, tok = model_from_checkpoint(load_checkpoint(tiny_run))
    prime_ids = encode_prime(tok, "The ")
    run = generate(model, tok, SampleConfig(prime="The ", length=30, temperature=0), "cpu")
    assert run.tokens == [0] and run.logprob == [0.0]
    head = next(run)  # an iterator, as the generator it replaces was
    assert len(head) == 1 and run.tokens == [1]
    (rest,) = _texts(run)
    text = head[0] + rest
    assert run.tokens == [30] and len(text) == 30
    expected = continuation_logprob(model, prime_ids, tok.encode(text).tolist())
    assert math.isclose(run.logprob[0], expected, rel_tol=1e-5)
    assert run.mean_logprob == [run.logprob[0] / 30]
    # Sampled with filters, each sample is still scored under the model's own softmax.
    config = SampleConfig(prime="The ", length=25, temperature=1.3, top_k=5, num_samples=3, seed=4)
    run = generate(model, tok, config, "cpu")
    texts = _texts(run)
    assert run.tokens == [25, 25, 25]
    for text, logprob in zip(texts, run.logprob):
        expected = continuation_logprob(model, prime_ids, tok.encode(text).tolist())
        assert math.isclose(logprob, expected, rel_tol=1e-5)


def test_generate_hidden_continues_where_it_left_off(tiny_run):
    model, tok = model_from_checkpoint(load_checkpoint(tiny_run))
    first = generate(model, tok, SampleConfig(prime="The ", length=20, temperature=0), "cpu")
    (a,) = _texts(first)
    # The state has read the prime and every generated token, the last one included.
    for got, want in zip(first.hidden, final_state(model, encode_prime(tok, "The " + a))):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    config = SampleConfig(prime="x", length=15, temperature=0)
    (b,) = _texts(generate(model, tok, config, "cpu", first.hidden))
    config = SampleConfig(prime="The " + a + "x", length=15, temperature=0)
    (whole,) = _texts(generate(model, tok, config, "cpu"))
    assert b == whole
    # One start row serves several samples.
    config = SampleConfig(prime="x", length=15, temperature=0, num_samples=2)
    assert _texts(generate(model, tok, config, "cpu", first.hidden)) == [whole, whole]


def test_generate_freezes_the_state_of_a_finished_sample(tiny_run):
    model, tok = model_from_checkpoint(load_checkpoint(tiny_run))
    config = SampleConfig(prime="The ", length=200, temperature=1.0, num_samples=3, seed=2, stop="e")
    run = generate(model, tok, config, "cpu")
    texts = _texts(run)
    assert len(set(run.tokens)) > 1  # the samples stop at different steps, so some wait
    for row, text in enumerate(texts):
        drawn = tok.encode(text + "e").tolist()  # the stop string was drawn and read, not written
        assert run.tokens[row] == len(drawn)
        expected = continuation_logprob(model, encode_prime(tok, "The "), drawn)
        assert math.isclose(run.logprob[row], expected, rel_tol=1e-5)
        for got, want in zip(run.hidden, final_state(model, encode_prime(tok, "The " + text + "e"))):
            torch.testing.assert_close(got[:, row], want[:, 0], rtol=1e-5, atol=1e-6)


def test_generate_applies_penalty_window_and_ngram_ban(tiny_run):
    model, tok = model_from_checkpoint(load_checkpoint(tiny_run))
    model.eval()

    def greedy(prime, length, penalty=1.0, window=64, ngram=None):
        """A slow reference: reread everything each step, rescan the whole history."""
        ids = encode_prime(tok, prime)
        start = len(ids)
        for _ in range(length):
            with torch.no_grad():
                logits = model(torch.tensor(ids).unsqueeze(1))[0][-1]  # (1, V)
            logits[:, tok.unk_id] = -INF
            logits = repetition_penalty(logits, torch.tensor([ids[-window:]]), penalty)
            if ngram is not None:
                logits = no_repeat_ngram_filter(logits, [ids], ngram)
            ids.append(int(logits.argmax()))
        return tok.decode(ids[start:])

    def run(**kwargs):
        (text,) = _texts(generate(model, tok, SampleConfig(temperature=0, **kwargs), "cpu"))
        return text

    plain = run(prime="The ", length=80)
    assert plain == greedy("The ", 80)
    penalised = run(prime="The ", length=80, repetition_penalty=1.5, repetition_window=6)
    assert penalised == greedy("The ", 80, penalty=1.5, window=6) != plain
    # A window longer than the prime, filled as it goes.
    assert run(prime="a", length=60, repetition_penalty=3.0, repetition_window=20) == greedy(
        "a", 60, penalty=3.0, window=20
    )
    banned = run(prime="The ", length=80, no_repeat_ngram=3)
    assert banned == greedy("The ", 80, ngram=3) != plain
    ids = encode_prime(tok, "The " + banned)
    trigrams = [tuple(ids[i : i + 3]) for i in range(len(ids) - 2)]
    assert len(trigrams) == len(set(trigrams))
    # min-p 1 leaves only the most likely token: sampling becomes greedy.
    assert run(prime="The ", length=40) == _texts(
        generate(model, tok, SampleConfig(prime="The ", length=40, temperature=1.0, min_p=1.0, seed=9), "cpu")
    )[0]


def test_generate_refuses_beam_width_and_a_state_of_the_wrong_batch(tiny_run):
    model, tok = model_from_checkpoint(load_checkpoint(tiny_run))
    with pytest.raises(ValueError) as e:
        generate(model, tok, SampleConfig(beam_width=2), "cpu")
    assert str(e.value) == "generate() samples; beam search is charlstm.generation.beam.beam_search"
    hidden = tuple(torch.zeros(1, 2, 32) for _ in range(2))
    with pytest.raises(ValueError) as e:
        generate(model, tok, SampleConfig(num_samples=3), "cpu", hidden)
    assert str(e.value) == "the start state has 2 rows; it needs 1 or one per sample (3)"


# The text PyTorch 2.13 wrote before the stepper and the sampler were rebuilt for speed (#22), for
# these seeds and weights: the fast path draws exactly what ``torch.multinomial`` drew.
PINNED_VOCAB = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.,;:!?'\n-é"


def _pinned_model(embedding_dim=64, hidden_size=512, num_layers=1):
    """The default shape (1 x 512, embedding 64) with weights drawn from a seeded generator, so
    the test depends on neither training nor the model's initialisation."""
    from charlstm.config import ModelConfig
    from charlstm.data.tokenizers import CharTokenizer
    from charlstm.model import LanguageModel

    tok = CharTokenizer.train(PINNED_VOCAB)
    config = ModelConfig(
        vocab_size=tok.vocab_size, embedding_dim=embedding_dim, hidden_size=hidden_size, num_layers=num_layers, dropout=0.0
    )
    model = LanguageModel(config).eval()
    g = torch.Generator().manual_seed(22)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if "embedding" in name else 2.0 / p.shape[-1] ** 0.5))
    return model, tok


def test_fp32_text_for_a_seed_is_unchanged():
    model, tok = _pinned_model()
    run = generate(model, tok, SampleConfig(prime="The ", length=120, seed=22), "cpu")
    assert "".join(p[0] for p in run) == (
        "v:cG!WhK?CKqkdB,TX-bLAQ:jargqh!IénAHvOkPvyby.YgHerl-XTlfhR\noieeéG\nFoiH\nilévPJG,YnHrntOv'xo"
        "é;léoGGNJUBWeAYéfyA:!CKqpéTtKm"
    )
    assert run.mean_logprob[0] == pytest.approx(-3.9866642395655316, abs=1e-6)
    model, tok = _pinned_model(16, 48, 2)
    run = generate(model, tok, SampleConfig(prime="To be", length=60, seed=5, num_samples=3, temperature=1.0), "cpu")
    assert _texts(run) == [
        "lHezQ.;QWZIk-dwc\nLc,EIrfmeVE.KR?baD,CK?fhpvqrkE.:nD-h. WsQlV",
        "E,;fQ IhAYKMjhJhmhfBpzy;jhkmSAnéVbV.BZwFAsZDCFmlw-RTAVTytySY",
        "gvAKsff,vF\nTPdLIGbnA.YQaBvwKLgUxpKUALxMoéSjbQ'CZATiw-bXmBW-U",
    ]
    assert run.mean_logprob == pytest.approx([-4.105048064390818, -4.069047252337138, -4.033153982957204], abs=1e-6)


def test_fast_sampler_draws_what_multinomial_draws():
    """Plain sampling skips ``torch.multinomial`` but consumes the generator the same way."""
    from charlstm.generation.choose import Chooser, Noise

    logits = torch.randn(8, 30, generator=torch.Generator().manual_seed(0)) * 3
    config = SampleConfig(temperature=0.7, seed=4)
    g_slow = torch.Generator().manual_seed(4)
    choose = Chooser([(config, 8, Noise(8, 30, 4, "cpu"), None)], 30, 29, "cpu")
    out = torch.empty(8, dtype=torch.long)
    for _ in range(50):
        masked = logits.clone()
        masked[:, 29] = -INF
        assert choose(logits, None, out).tolist() == next_tokens(masked, 0.7, generator=g_slow).tolist()
    assert 29 not in out.tolist()


@pytest.mark.parametrize("seed", [0, 1])
def test_a_row_draws_the_same_token_alone_or_beside_rows_with_other_settings(seed):
    """The batch filters every row by its own settings in one pass: each row's tokens equal what
    ``next_tokens`` (one setting for all rows) draws for it alone from the same generator."""
    from charlstm.generation.choose import Chooser, Histories, Noise

    V = 40
    configs = [
        SampleConfig(temperature=0.9, seed=1),
        SampleConfig(temperature=0, seed=2),
        SampleConfig(temperature=1.2, top_k=5, seed=3),
        SampleConfig(temperature=0.8, top_p=0.7, seed=4),
        SampleConfig(temperature=1.0, min_p=0.2, seed=5),
        SampleConfig(temperature=1.1, repetition_penalty=1.5, repetition_window=3, seed=6),
        SampleConfig(temperature=0.7, top_k=9, top_p=0.9, min_p=0.05, seed=7),
    ]
    prompt = [3, 4, 5, 6, 7, 3]
    parts = [(c, 1, Noise(1, V, c.seed, "cpu") if c.temperature else None, None) for c in configs]
    choose = Chooser(parts, V, None, "cpu")
    rings = [Histories.start(prompt, c.repetition_window if c.repetition_penalty != 1 else 1, 1, "cpu") for c in configs]
    histories = Histories(rings, "cpu")
    alone = [torch.Generator().manual_seed(c.seed) for c in configs]
    recent = [list(prompt) for _ in configs]
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(len(configs), dtype=torch.long)
    for _ in range(30):
        logits = torch.randn(len(configs), V, generator=g) * 3
        tokens = choose(logits, histories.ids, out).tolist()
        histories.add(out)
        for row, c in enumerate(configs):
            history = torch.tensor([recent[row][-c.repetition_window:]])
            expected = next_tokens(
                logits[row : row + 1], c.temperature, c.top_k, c.top_p, alone[row], min_p=c.min_p,
                repetition_penalty=c.repetition_penalty, history=history,
            )
            assert tokens[row] == int(expected), (row, c)
            recent[row].append(tokens[row])


def test_a_temperature_that_overflows_takes_the_most_likely_token():
    from charlstm.generation.choose import Chooser, Noise

    logits = torch.tensor([[1.0, 3.0, 2.0], [30.0, 10.0, 20.0]])
    choose = Chooser([(SampleConfig(temperature=1e-38, seed=1), 2, Noise(2, 3, 1, "cpu"), None)], 3, None, "cpu")
    assert choose(logits, None, torch.empty(2, dtype=torch.long)).tolist() == [1, 0]


def test_weights_int8_generates_and_reports_its_state(tiny_run):
    model, tok = model_from_checkpoint(load_checkpoint(tiny_run))
    run = generate(model, tok, SampleConfig(prime="The ", length=30, seed=1, weights="int8"), "cpu")
    (text,) = _texts(run)
    assert len(text) == 30 and run.tokens == [30] and math.isfinite(run.mean_logprob[0])
    assert run.hidden[0].shape == (1, 1, 32) and run.logits.shape == (1, tok.vocab_size)
