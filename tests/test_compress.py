"""charlstm compress / decompress: lossless on any bytes, every refusal one line, nothing written
on failure, the same probabilities on both sides (threads, kernels)."""

import json
import os
import random
import struct
import zlib
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("constriction")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from charlstm.errors import CharlstmError, CompressedFileError  # noqa: E402
from tests.conftest import run_cli  # noqa: E402

DATA = Path(__file__).parent / "data"
MIXED = "Some text, ünïcödé ▁ and 💡\r\n".encode() + b"\xff\xfe\x00 invalid \xc3 bytes\n" * 3


@pytest.fixture(scope="module")
def lm(tiny_run):
    import charlstm

    return charlstm.load(tiny_run, device="cpu")


def test_api_round_trip_static_adapt_cache_and_context(lm, small_text):
    data = small_text[:600].encode() + MIXED
    context = small_text[5000:5500].encode()
    for options in ({}, {"streams": 3}, {"adapt": True, "adapt_bptt": 16}, {"cache_size": 200},
                    {"adapt": True, "adapt_bptt": 32, "cache_size": 100, "context": context, "streams": 4}):
        blob = lm.compress(data, threads=1, **options)
        assert lm.decompress(blob, context=options.get("context")) == data, options


def test_the_adapting_depth_is_recorded_and_changes_the_file(lm, small_text):
    from charlstm.compression import format as fmt

    data = small_text[:1500].encode()
    blobs = {depth: lm.compress(data, threads=1, adapt=True, adapt_bptt=32, adapt_depth=depth) for depth in (0, 4, 64)}
    for depth, blob in blobs.items():
        assert fmt.read(blob, "f")[0].adapt["adapt_depth"] == depth
        assert lm.decompress(blob) == data
    assert len({blob for blob in blobs.values()}) == 3  # other gradients, other probabilities


def _as_coded(lm, data, monkeypatch, **options):
    """(header, side, words) as ``compress`` hands them to ``format.write`` (the digests whole), coded
    as formats 1 and 2 coded: the first adapting window as long as the others."""
    from charlstm.compression import coder
    from charlstm.compression import format as fmt

    seen = {}
    real = fmt.write

    def keep(header, side, words):
        seen.update(header=header, side=side, words=words)
        return real(header, side, words)

    with monkeypatch.context() as patch:
        patch.setattr(coder, "_aligned", lambda version: False)
        patch.setattr(fmt, "write", keep)
        lm.compress(data, threads=1, **options)
    return seen["header"], seen["side"], seen["words"]


def _old_file(header, side, words, version: int, drop=()) -> bytes:
    """A file of format 1 or 2 (as charlstm wrote them then) from what ``_as_coded`` saw."""
    from dataclasses import asdict

    from charlstm.compression import format as fmt

    record = asdict(header)
    del record["version"]
    record.update(tokenizer="char", vocab_size=1, **{key: record[key][:16] for key in ("model", "probe", "sha256")})
    for key in drop:
        del record["adapt"][key]
    if version == 1:
        packer = zlib.compressobj(9, zdict=fmt._ZDICT)
        meta = packer.compress(json.dumps(record, sort_keys=True).encode()) + packer.flush()
        prefix = struct.pack("<HI", 1, len(meta))
    else:
        digests = b"".join(bytes.fromhex(record.pop(key)) for key in ("model", "probe", "sha256"))
        del record["part"], record["words"]
        packer = zlib.compressobj(9, zlib.DEFLATED, -15, zdict=fmt._ZDICT2)
        meta = digests + packer.compress(json.dumps(record, sort_keys=True).encode()) + packer.flush()
        prefix = struct.pack("<HH", 2, len(meta))
    body = fmt.MAGIC + prefix + meta + zlib.compress(side) * bool(side) + words.astype("<u4").tobytes()
    return body + struct.pack("<I", zlib.crc32(body))


def test_a_file_from_before_tune_and_depth_were_recorded_decodes_as_it_was_coded(lm, small_text, monkeypatch):
    """Files written before ``--adapt-tune`` and ``--adapt-depth`` existed (format 1) have neither
    in their header: they were coded with lr and decay fixed and the whole window, and decode so."""
    data = small_text[:1500].encode()
    whole = 1 << 30  # the whole window
    coded = _as_coded(lm, data, monkeypatch, adapt=True, adapt_bptt=16, adapt_tune=0.0, adapt_depth=whole)
    assert coded[2].tolist() != _as_coded(lm, data, monkeypatch, adapt=True, adapt_bptt=16)[2].tolist()
    assert lm.decompress(_old_file(*coded, version=1, drop=("adapt_tune", "adapt_depth"))) == data


def test_files_of_formats_1_and_2_still_decode(lm, small_text, monkeypatch):
    data = small_text[:1200].encode()
    for options in ({}, {"adapt": True, "adapt_bptt": 16}, {"cache_size": 200, "streams": 2}):
        coded = _as_coded(lm, data, monkeypatch, **options)
        for version in (1, 2):
            assert lm.decompress(_old_file(*coded, version=version)) == data, (version, options)


def test_format_4_frames_a_small_file_in_23_to_25_bytes(lm, small_text):
    """The magic, version, digests, counts, settings and check: every byte of a file that is not
    coded text or side channel (format 2 took 59-92 for the same, format 1 115-160)."""
    from charlstm.compression import format as fmt
    from charlstm.products import int8_available

    static = "int8" if int8_available() else "fp32"
    for options, frame, weights in (({}, 23, static), ({"adapt": True}, 23, "fp32"), ({"cache_size": 200}, 25, static)):
        blob = lm.compress(small_text[:800].encode(), **options)
        header, side, words = fmt.read(blob, "f")
        assert blob[:4] == fmt.MAGIC3 + b"\x04" and header.words == len(words) and header.tokens == 800
        assert header.length == 800 and len(header.model) == 8 and len(header.probe) == 4
        assert header.weights == weights, options
        assert len(blob) - len(side) - 4 * len(words) == frame, options
    blob = lm.compress(small_text[:800].encode(), threads=1, adapt=True, adapt_lr=0.001, cache_size=200)
    header = fmt.read(blob, "f")[0]  # settings not the usual ones: spelt out, and read back
    assert (header.threads, header.adapt["adapt_lr"], header.cache["cache_size"]) == (1, 0.001, 200)
    assert lm.decompress(blob) == small_text[:800].encode()


def test_compress_holds_int8_weights_without_adapt_unless_told(lm, small_text):
    """The recurrent products in int8 by default (faster), fp32 with --adapt; --weights says
    otherwise, and each file decodes with what it records."""
    from charlstm.compression import format as fmt

    from charlstm.products import int8_available

    if not int8_available():
        pytest.skip("this PyTorch has no quantized CPU kernels")
    data = small_text[:900].encode()
    for options, weights in (({}, "int8"), ({"weights": "fp32"}, "fp32"), ({"weights": "bf16"}, "bf16"),
                             ({"adapt": True}, "fp32"), ({"adapt": True, "weights": "int8"}, "int8")):
        blob = lm.compress(data, **options)
        assert fmt.read(blob, "f")[0].weights == weights, options
        assert lm.decompress(blob) == data, options
    assert lm.compress(data) != lm.compress(data, weights="fp32")


def test_without_pytorchs_quantized_kernels_the_default_is_fp32(monkeypatch):
    from charlstm import products
    from charlstm.compression.settings import CompressConfig

    monkeypatch.setattr(products, "int8_available", lambda: False)
    assert CompressConfig().weights == "fp32" and CompressConfig(adapt=True).weights == "fp32"
    monkeypatch.setattr(products, "int8_available", lambda: True)
    assert CompressConfig().weights == "int8" and CompressConfig(adapt=True).weights == "fp32"
    assert CompressConfig(weights="bf16").weights == "bf16"


def test_a_file_of_format_3_still_decodes_and_format_3_knows_no_int8_flag(lm, small_text, monkeypatch):
    from charlstm.compression import format as fmt

    data = small_text[:700].encode()
    with monkeypatch.context() as patch:
        patch.setattr(fmt, "FORMAT_VERSION", 3)
        blob = lm.compress(data, weights="fp32")
    assert blob[3] == 3 and lm.decompress(blob) == data
    # the same bytes with format 3's flags byte given format 4's INT8: refused, as format 3 had it
    flags_at = len(fmt.MAGIC3) + 1 + sum(fmt._DIGEST_BYTES3.values())
    marked = bytearray(blob[:-2])
    marked[flags_at] |= fmt._INT8
    marked += struct.pack("<H", zlib.crc32(bytes(marked)) & 0xFFFF)
    with pytest.raises(CompressedFileError, match="damaged"):
        lm.decompress(bytes(marked))


def test_one_streams_adapting_windows_end_where_evals_do(lm):
    """eval --adapt scores from a text's second token, its windows the bptt tokens after each
    multiple of bptt; the compressor codes the first token, then its windows are eval's."""
    import numpy as np

    from charlstm.compression.streams import Predictor
    from charlstm.config import AdaptConfig
    from charlstm.evaluation.adaptation import text_windows

    steps = []
    predictor = Predictor(__import__("copy").deepcopy(lm.module), 1, adapt=AdaptConfig(adapt_bptt=8))
    real = predictor.step
    predictor.step = lambda grads: (steps.append(len(predictor.window) - 1), real(grads))
    ends = []
    for t in range(40):
        predictor.probabilities()
        predictor.advance(np.array([t % 7]), 1)
        if len(steps) > len(ends):
            ends.append(t + 1)  # tokens coded when the weights stepped
    windows = text_windows(40, 8, 0)
    assert ends == [w.start + w.length + 1 for w in windows][:4] == [9, 17, 25, 33]
    assert steps == [8, 8, 8, 8]


def test_from_the_second_token_on_compress_adapt_computes_evals_probabilities(lm, small_text):
    """One stream's --adapt: the probabilities the file codes tokens 1.. with are eval --adapt's
    (to float rounding), so its size is eval's
    figure plus the first token and the frame."""
    import copy
    import math

    import numpy as np
    import torch

    from charlstm.compression.streams import Predictor
    from charlstm.config import AdaptConfig
    from charlstm.data.tokenizers import default_start_id
    from charlstm.evaluation.adaptation import adapt

    ids = np.asarray(lm.tokenizer.encode(small_text[:700]), dtype=np.int64)
    config = AdaptConfig(adapt_bptt=16)
    total, count = adapt(copy.deepcopy(lm.module), ids, config, "cpu")[:2]
    predictor = Predictor(copy.deepcopy(lm.module).eval(), 1, adapt=config, start=default_start_id(lm.tokenizer))
    coded = []
    with torch.no_grad():
        for token in ids:
            coded.append(-math.log(float(predictor.probabilities()[0, token])))
            predictor.advance(np.array([token]), 1)
    assert count == len(ids) - 1
    assert sum(coded[1:]) == pytest.approx(total, rel=1e-6)  # not aligned (formats 1 and 2): 2e-4 off


def test_the_adapting_prior_is_recorded_as_used_and_refused_without_the_trainings_moments(tiny_run, small_text):
    """--adapt starts from the training's mean squares (--adapt-prior) where the model has them: a
    file records the prior it used; a model without them (an exported one) records 0 and decodes
    either way, and refuses in one line a file that needs them."""
    import charlstm
    from charlstm.compression import format as fmt

    data = small_text[:900].encode()
    primed, bare = charlstm.load(tiny_run, device="cpu"), charlstm.load(tiny_run, device="cpu")
    bare.module.second_moments = None
    with_prior, without = primed.compress(data, adapt=True), bare.compress(data, adapt=True)
    assert fmt.read(with_prior)[0].adapt["adapt_prior"] == 300 and fmt.read(without)[0].adapt["adapt_prior"] == 0
    assert with_prior != without
    assert primed.decompress(with_prior) == data and primed.decompress(without) == data == bare.decompress(without)
    with pytest.raises(CompressedFileError) as e:
        bare.decompress(with_prior)
    assert "--adapt-prior 300" in str(e.value) and "run directory" in str(e.value) and "\n" not in str(e.value)


def test_tokens_round_trip_for_every_tokenizer(small_text):
    from charlstm.compression.tokens import from_tokens, to_tokens
    from charlstm.data.tokenizers import ByteTokenizer, CharTokenizer, tokenizer_from_dict

    sp = tokenizer_from_dict({"kind": "bpe", "model_proto": (DATA / "pinned_sp.model").read_bytes()})
    for tokenizer in (CharTokenizer.train(small_text[:2000]), ByteTokenizer(), sp):
        for data in (b"", MIXED, "a \u2581 b\n\u2581\u2581x".encode(), small_text[:500].encode()):
            ids, side = to_tokens(data, tokenizer)
            assert from_tokens(ids, side, tokenizer.token_bytes(), tokenizer.unk_id) == data


def test_every_text_under_tests_data_round_trips(lm):
    for path in sorted(DATA.iterdir()):
        data = path.read_bytes()
        assert lm.decompress(lm.compress(data, streams=64, threads=1)) == data, path.name
    for text in json.loads((DATA / "pinned_texts.json").read_text())["cases"][:20]:
        data = json.dumps(text).encode()
        assert lm.decompress(lm.compress(data, threads=1)) == data


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=40))
def test_random_bytes_round_trip(lm, data):
    assert lm.decompress(lm.compress(data, streams=2, threads=1)) == data


def test_one_thread_and_two_threads_each_round_trip_and_are_recorded(lm, small_text):
    data = small_text[:1000].encode()
    for threads in (1, 2):
        blob = lm.compress(data, threads=threads, streams=4)
        assert lm.decompress(blob) == data
        from charlstm.compression.format import read

        assert read(blob)[0].threads == threads


_KERNEL_SCRIPT = """
import sys, charlstm
lm = charlstm.load(sys.argv[1], device="cpu")
mode, path = sys.argv[2], sys.argv[3]
data = open(sys.argv[4], "rb").read()
if mode == "compress":
    open(path, "wb").write(lm.compress(data, streams=4, threads=1, adapt=True, adapt_bptt=8, cache_size=64))
else:
    try:
        ok = lm.decompress(open(path, "rb").read()) == data
        print("same" if ok else "DIFFERENT")
    except charlstm.CharlstmError as e:
        print("refused:", e)
"""


def _kernel_run(tiny_run, mode, blob, text, capability):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability:
        env["ATEN_CPU_CAPABILITY"] = capability
    result = subprocess.run([sys.executable, "-c", _KERNEL_SCRIPT, str(tiny_run), mode, str(blob), str(text)],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


def test_kernel_capability_crossed_round_trips_exactly_or_refuses_in_one_line(tiny_run, tmp_path, small_text):
    """Made on the best kernels and read on the default ones (and the reverse): the same setting
    round-trips; crossed, either it decodes exactly or the probe refuses with the line that says
    where it decodes. Never a wrong file."""
    text = tmp_path / "t.txt"
    text.write_bytes(small_text[:600].encode())
    outcomes = {}
    for made in ("", "default"):
        blob = tmp_path / f"made-{made or 'best'}.clstm"
        _kernel_run(tiny_run, "compress", blob, text, made)
        for read in ("", "default"):
            outcome = _kernel_run(tiny_run, "decompress", blob, text, read)
            if made == read:
                assert outcome == "same"
            else:
                assert outcome == "same" or (
                    outcome.startswith("refused:") and "computes other probabilities" in outcome
                    and "ATEN_CPU_CAPABILITY=" in outcome and "\n" not in outcome
                ), outcome
            outcomes[(made, read)] = outcome
    print(outcomes)


def test_refusals_are_one_clear_error_and_nothing_else(lm, tiny_run, tmp_path, small_text):
    data = small_text[:500].encode()
    blob = lm.compress(data, threads=1)
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0x10
    newer = bytearray(blob)
    newer[3] = 99
    cases = {
        "damaged": bytes(flipped), "truncated": blob[:-7], "newer": bytes(newer), "empty": b"",
        "not ours": b"hello world, not a compressed file",
    }
    messages = {}
    for name, bad in cases.items():
        with pytest.raises(CompressedFileError) as e:
            lm.decompress(bad)
        messages[name] = str(e.value)
    assert "damaged or truncated" in messages["damaged"] and "damaged or truncated" in messages["truncated"]
    assert "newer charlstm" in messages["newer"]
    assert "not a file charlstm compress wrote" in messages["not ours"]
    with pytest.raises(CompressedFileError, match="--context"):
        lm.decompress(blob, context=b"some context")
    import charlstm

    other = charlstm.load(tiny_run, device="cpu")
    with __import__("torch").no_grad():
        other.module.head.bias.add_(0.01)
    with pytest.raises(CompressedFileError, match="another model"):
        other.decompress(blob)


def test_a_mutated_file_is_always_one_clear_error(lm, small_text):
    """Many mutations of a valid file (flips, cuts, insertions, header bytes): each decodes exactly
    (a mutation that changes nothing) or raises one CharlstmError; never another exception."""
    data = small_text[:400].encode()
    blob = lm.compress(data, streams=2, threads=1)
    rng = random.Random(7)
    for _ in range(300):
        bad = bytearray(blob)
        kind = rng.randrange(4)
        at = rng.randrange(len(bad))
        if kind == 0:
            bad[at] ^= 1 << rng.randrange(8)
        elif kind == 1:
            del bad[at:]
        elif kind == 2:
            bad[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        else:
            bad[rng.randrange(min(40, len(bad)))] = rng.randrange(256)
        if rng.random() < 0.5 and len(bad) > 2:  # the check made to match again: the checks behind it
            bad[-2:] = struct.pack("<H", zlib.crc32(bytes(bad[:-2])) & 0xFFFF)
        try:
            assert lm.decompress(bytes(bad)) == data
        except CharlstmError as e:
            assert "\n" not in str(e)


def test_compress_and_decompress_through_the_cli(tiny_run, tmp_path):
    original = tmp_path / "notes.txt"
    original.write_bytes(MIXED * 5)
    result = run_cli("compress", tiny_run, original)
    assert result.returncode == 0, result.stderr
    assert "bits per byte" in result.stderr and result.stdout == ""
    packed = tmp_path / "notes.txt.clstm"
    assert packed.is_file()
    original.rename(tmp_path / "kept.txt")
    result = run_cli("decompress", tiny_run, packed)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "notes.txt").read_bytes() == MIXED * 5


def test_info_lists_a_compressed_file_without_the_model(lm, tiny_run, tmp_path, small_text):
    import charlstm

    data = small_text[:700].encode()
    packed = tmp_path / "notes.clstm"
    packed.write_bytes(lm.compress(data, adapt=True, adapt_bptt=16, cache_size=300, context=b"before\n" * 20))
    result = run_cli("info", packed, "--json")
    assert result.returncode == 0, result.stderr
    (listed,) = json.loads(result.stdout)
    assert (listed["format"], listed["length"], listed["size"], listed["tokens"]) == (4, 700, packed.stat().st_size, 700)
    assert listed["adapt"]["adapt_bptt"] == 16 and listed["cache"]["cache_size"] == 300 and listed["streams"] == 1
    assert listed["bits_per_byte"] == pytest.approx(8 * packed.stat().st_size / 700)
    assert listed["context"] == __import__("hashlib").sha256(b"before\n" * 20).hexdigest()[:8]
    assert charlstm.read_compressed(packed.read_bytes()).to_dict() == {**listed, "name": "the file"}
    result = run_cli("info", packed, tiny_run)  # a file and a run: each as it is
    assert result.returncode == 0, result.stderr
    assert "700 bytes ->" in result.stdout and "--adapt (rms, lr 0.002" in result.stdout
    assert "--cache-size 300" in result.stdout and "finished" in result.stdout
    packed.write_bytes(packed.read_bytes()[:-5])
    result = run_cli("info", packed)
    assert result.returncode == 1 and "damaged or truncated" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


def test_stdin_and_stdout_with_a_dash(tiny_run, tmp_path):
    packed = subprocess.run([sys.executable, "-m", "charlstm", "compress", str(tiny_run), "-"], input=MIXED,
                            capture_output=True, timeout=300)
    assert packed.returncode == 0, packed.stderr
    back = subprocess.run([sys.executable, "-m", "charlstm", "decompress", str(tiny_run), "-"], input=packed.stdout,
                          capture_output=True, timeout=300)
    assert back.returncode == 0 and back.stdout == MIXED


def test_an_existing_output_is_refused_and_kept(tiny_run, tmp_path):
    original = tmp_path / "a.txt"
    original.write_bytes(b"hello")
    target = tmp_path / "a.txt.clstm"
    target.write_bytes(b"precious")
    result = run_cli("compress", tiny_run, original)
    assert result.returncode == 1 and "already exists; pass --force" in result.stderr
    assert target.read_bytes() == b"precious" and len(result.stderr.strip().splitlines()) == 1
    assert run_cli("compress", tiny_run, original, "--force").returncode == 0
    result = run_cli("decompress", tiny_run, target)
    assert result.returncode == 1 and "already exists" in result.stderr and original.read_bytes() == b"hello"


def test_a_failed_decompress_writes_nothing(tiny_run, tmp_path):
    original = tmp_path / "b.txt"
    original.write_bytes(b"some bytes to keep safe " * 20)
    assert run_cli("compress", tiny_run, original).returncode == 0
    packed = tmp_path / "b.txt.clstm"
    packed.write_bytes(packed.read_bytes()[:-3])
    original.unlink()
    result = run_cli("decompress", tiny_run, packed)
    assert result.returncode == 1 and "damaged or truncated" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt.clstm"]  # no partial or temporary file


def test_a_wrong_decode_is_never_written(lm, small_text, monkeypatch):
    """The checksum is the last guard: probabilities that differ on the decoding side end in a
    refusal, never in wrong bytes."""
    from charlstm.compression import coder

    data = small_text[:800].encode()
    blob = lm.compress(data, threads=1)
    monkeypatch.setattr(coder, "probe_digest", lambda *a, **k: __import__("charlstm.compression.format", fromlist=["read"]).read(blob)[0].probe)
    real = coder.Predictor.probabilities

    def skewed(self):
        p = real(self)
        p[:, 0] += 0.3
        return p

    monkeypatch.setattr(coder.Predictor, "probabilities", skewed)
    with pytest.raises(CompressedFileError, match="does not match its checksum|damaged"):
        lm.decompress(blob)


def test_without_constriction_one_line_says_how_to_install(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "constriction", None)
    original = tmp_path / "c.txt"
    original.write_bytes(b"abc")
    result = run_cli("compress", tiny_run, original)
    assert result.returncode == 1 and 'pip install "charlstm[compress]"' in result.stderr
    assert not (tmp_path / "c.txt.clstm").exists()


def test_the_cache_mixture_is_the_one_eval_scores_with(lm, small_text):
    import torch

    from charlstm.compression.streams import mix
    from charlstm.config import CacheConfig
    from charlstm.evaluation.cache import NeuralCache

    cache = NeuralCache(CacheConfig(cache_size=50, cache_theta=0.5, cache_lambda=0.3), "cpu")
    torch.manual_seed(0)
    cache.remember(torch.randn(60, 32), torch.randint(0, 10, (60,)))
    features, log_probs = torch.randn(4, 32), torch.log_softmax(torch.randn(4, 10), -1)
    ours = mix(log_probs, cache.copy_distribution(features, 10), cache.lambda_)
    assert torch.equal(ours, cache.distribution(features, log_probs))


def test_a_model_left_in_train_mode_never_drops_out_while_coding(lm, small_text, monkeypatch):
    """The coder puts the model in eval mode (a module in train mode with dropout would draw other
    masks on each side: the context's read had chosen other cache settings and a 20 KB file did
    not decode); every forward while coding runs without dropout, the fast cache's product (here
    from 64 states) decodes what it coded, and the model's mode is put back."""
    import charlstm.evaluation.cache as cache_module

    monkeypatch.setattr(cache_module, "FAST_MIN_STATES", 64)
    module = lm.module
    seen = []
    forward = type(module).forward_features

    def recording(self, *args, **kwargs):  # on the class: the adapting copy (deepcopy) calls it too
        seen.append(self.dropout.training and self.dropout.p > 0)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(module), "forward_features", recording)
    was = module.training, module.dropout.p
    module.train()
    module.dropout.p = 0.5
    try:
        data, context = small_text[:1500].encode(), small_text[3000:5000].encode()
        for options in ({"cache_size": 300, "context": context, "streams": 3},
                        {"adapt": True, "adapt_bptt": 16, "cache_size": 300, "context": context, "streams": 2}):
            assert lm.decompress(lm.compress(data, threads=1, **options), context=context) == data, options
        assert seen and not any(seen)  # no forward with dropout on
        assert module.training  # its mode is put back
    finally:
        module.train(was[0])
        module.dropout.p = was[1]


def test_the_default_streams_are_longer_with_a_cache_and_longest_with_adapt_alone():
    from charlstm.compression.settings import layout

    assert layout(100_000, None) == (24, 4167)
    assert layout(23_732, None) == (15, 1583)  # a short text: up to 16 streams of 1,536 tokens
    assert layout(33_895, None) == (16, 2119)
    assert layout(100_000, None, cache=True) == (6, 16667)
    assert layout(100_000, None, cache=True, adapt=True) == (6, 16667)  # the cache's read sets the pace
    assert layout(100_000, None, adapt=True) == (1, 100_000)
    assert layout(300_000, None, adapt=True) == (4, 75_000)
    assert layout(100_000, 3, adapt=True) == (3, 33_334)  # --streams wins
    assert layout(0, None) == (1, 0)
