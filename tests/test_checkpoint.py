import os
import shutil

import pytest
import torch

from charlstm.runs.checkpoint import (
    FORMAT_VERSION,
    load_checkpoint,
    upgrade_state_dict,
    model_from_checkpoint,
    find_checkpoint,
    save_checkpoint,
)
from charlstm.errors import CheckpointError


class _RunsCode:
    """Unpickling this object would create a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_round_trip_is_self_contained(tiny_run, small_text):
    payload = load_checkpoint(tiny_run)
    assert payload["format_version"] == FORMAT_VERSION
    model, tok = model_from_checkpoint(payload)
    assert tok.decode(tok.encode(small_text[:100])) == small_text[:100]
    assert set(payload["train_state"]) >= {"step", "epoch", "torch_rng", "best_val_loss"}
    assert len(payload["metrics"]) >= 1


def test_stop_reason_reads_the_old_key_too():
    from charlstm.runs.checkpoint import stop_reason

    assert stop_reason({"run": {"stop_reason": "max_steps", "command": None}}) == "max_steps"
    assert stop_reason({"run": {"stopped_by": "SIGINT", "command": None}}) == "SIGINT"  # before the rename
    assert stop_reason({}) is None


def test_directory_resolves_to_best(tiny_run):
    assert find_checkpoint(tiny_run).name == "best.pt"
    assert find_checkpoint(tiny_run, prefer=("last.pt",)).name == "last.pt"


def test_save_is_atomic_and_leaves_no_temp_files(tiny_run, tmp_path):
    payload = load_checkpoint(tiny_run)
    target = tmp_path / "ckpt.pt"
    target.write_bytes(b"previous")
    save_checkpoint(target, payload)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]
    load_checkpoint(target)


def test_failed_save_keeps_previous_checkpoint(tiny_run, tmp_path):
    payload = load_checkpoint(tiny_run)
    target = tmp_path / "ckpt.pt"
    save_checkpoint(target, payload)
    before = target.read_bytes()
    broken = dict(payload, metrics=[lambda: None])  # cannot be pickled
    from charlstm.runs.digest import UnsupportedData

    with pytest.raises(UnsupportedData, match=r"payload/metrics\[0\] holds a function, which a checkpoint never holds"):
        save_checkpoint(target, broken)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_missing_and_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="no best.pt or last.pt"):
        load_checkpoint(tmp_path)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a charlstm checkpoint"):
        load_checkpoint(text)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not a charlstm checkpoint"):
        load_checkpoint(other)


def test_truncated_checkpoint(tiny_run, tmp_path):
    data = (tiny_run / "best.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(cut)


def test_flipped_weight_bytes_fail_the_checksum(tiny_run, tmp_path):
    payload = load_checkpoint(tiny_run)
    payload["model"]["head.bias"][0] += 1.0
    path = tmp_path / "flipped.pt"
    torch.save(payload, path)  # keeps the old checksum
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(path)


def test_newer_format_version_is_refused_naming_both(tiny_run, tmp_path):
    payload = load_checkpoint(tiny_run)
    payload["format_version"] = FORMAT_VERSION + 1
    path = tmp_path / "future.pt"
    torch.save(payload, path)
    with pytest.raises(
        CheckpointError, match=f"version {FORMAT_VERSION + 1} is newer.*version {FORMAT_VERSION}"
    ):
        load_checkpoint(path)


def test_non_finite_weights_are_refused(tiny_run, tmp_path):
    payload = load_checkpoint(tiny_run)
    payload["model"]["head.bias"][0] = float("nan")
    path = save_checkpoint(tmp_path / "nan.pt", payload)
    with pytest.raises(CheckpointError, match="non-finite weights"):
        model_from_checkpoint(load_checkpoint(path))


def test_wrong_shapes_and_missing_tensors_are_listed(tiny_run, tmp_path):
    payload = load_checkpoint(tiny_run)
    payload["model"]["head.bias"] = torch.zeros(3)
    del payload["model"]["embedding.weight"]
    path = save_checkpoint(tmp_path / "shapes.pt", payload)
    with pytest.raises(CheckpointError) as e:
        model_from_checkpoint(load_checkpoint(path))
    assert "missing embedding.weight" in str(e.value) and "head.bias has shape (3,)" in str(e.value)


@pytest.mark.parametrize("force_unsafe_env", [False, True])
def test_pickle_that_runs_code_is_never_executed(tmp_path, monkeypatch, force_unsafe_env):
    if force_unsafe_env:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "charlstm", "format_version": 1, "model": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_disk_full_during_a_save_keeps_the_previous_checkpoint(tiny_run, tmp_path):
    """A file-size limit makes the write fail the way a full disk does (EFBIG instead of ENOSPC)."""
    import subprocess
    import sys

    target = tmp_path / "last.pt"
    shutil.copy(tiny_run / "last.pt", target)
    before = target.read_bytes()
    code = f"""
import resource, signal, sys
from charlstm.runs.checkpoint import load_checkpoint, save_checkpoint
from charlstm.errors import CheckpointError
payload = load_checkpoint({str(target)!r})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get an error from write(), not a signal
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
try:
    save_checkpoint({str(target)!r}, payload)
except CheckpointError as e:
    print(e)
    sys.exit(3)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    assert (
        "cannot write the checkpoint (File too large); the previous checkpoint there is kept" in result.stdout
    )
    assert target.read_bytes() == before  # intact, and no zero-byte or temporary file beside it
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    load_checkpoint(target)


@pytest.mark.slow
def test_kill_trials_never_lose_a_checkpoint(tmp_path):
    """A few trials of the SIGKILL script (the README reports a 50-trial run of it)."""
    from tests.kill_trials import run_trials

    counts = run_trials(trials=4, seed=5, max_delay=3.0, workdir=tmp_path)
    assert counts["killed"] == 3 and counts["failed_starts"] == 0
    assert counts["checkpoints_bad"] == 0 and counts["checkpoints_checked"] >= 2
    assert counts["final_step"] == counts["final_target"]
    assert not list((tmp_path / "run").glob(".tmp-*"))  # the last run cleaned up what kills left


def _tiny_model():
    from charlstm.config import ModelConfig
    from charlstm.model import LanguageModel

    torch.manual_seed(0)
    return LanguageModel(ModelConfig(vocab_size=11, embedding_dim=8, hidden_size=12, num_layers=2))


def test_weights_saved_under_the_old_layer_name_still_load():
    model = _tiny_model()
    old = {k.replace("rnn.", "lstm.", 1): v for k, v in model.state_dict().items()}
    assert any(k.startswith("lstm.") for k in old)
    _tiny_model().load_state_dict(upgrade_state_dict(old))


# ------------------------------------------------------------- the checksum covers everything


def _damaged(tiny_run, tmp_path, change, name="damaged.pt"):
    """The tiny run's best checkpoint with ``change`` applied after its checksum was computed."""
    payload = load_checkpoint(tiny_run)
    change(payload)
    path = tmp_path / name
    torch.save(payload, path)  # keeps the old payload_sha256
    return path


@pytest.mark.parametrize(
    "part, change",
    [
        ("tokenizer", lambda p: p["tokenizer"].update(chars=p["tokenizer"]["chars"][:-1] + "~")),
        ("train_config", lambda p: p["train_config"].update(lr=p["train_config"]["lr"] * 2)),
        ("metrics", lambda p: p["metrics"][-1].update(val_loss=p["metrics"][-1]["val_loss"] + 1e-9)),
        ("optimizer", lambda p: p["optimizer"]["param_groups"][0].update(eps=1e-7)),
        ("train_state", lambda p: p["train_state"].update(step=p["train_state"]["step"] + 1)),
        ("corpus", lambda p: p["corpus"].update(sha256="0" * 64)),
        ("model_config", lambda p: p["model_config"].update(dropout=0.5)),
        ("rng state", lambda p: p["train_state"]["torch_rng"].__setitem__(0, 255 - p["train_state"]["torch_rng"][0])),
    ],
)
def test_a_change_anywhere_in_the_payload_fails_the_checksum(tiny_run, tmp_path, part, change):
    path = _damaged(tiny_run, tmp_path, change)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(e.value) == f"{path}: checksum mismatch: the file is corrupt; use another checkpoint"


def test_a_flipped_byte_in_the_file_is_caught(tiny_run, tmp_path):
    """One byte flipped inside the tokenizer's string, as a disk error would: the zip and the
    pickle still read, the checksum does not match."""
    data = bytearray((tiny_run / "best.pt").read_bytes())
    chars = load_checkpoint(tiny_run)["tokenizer"]["chars"]
    at = data.index(chars.encode()) + 5
    data[at] ^= 0x01
    path = tmp_path / "flipped.pt"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch: the file is corrupt"):
        load_checkpoint(path)


def test_the_checksum_is_canonical():
    from charlstm.runs.digest import payload_sha256

    a = {"b": [1, 2.5, "x", b"y", None, True], "a": {"t": torch.arange(3, dtype=torch.float32), 0: 1}}
    b = {"a": {0: 1, "t": torch.arange(3, dtype=torch.float32)}, "b": [1, 2.5, "x", b"y", None, True]}
    assert payload_sha256(a) == payload_sha256(b)
    assert payload_sha256({"x": 1}) != payload_sha256({"x": True}) != payload_sha256({"x": 1.0})
    assert payload_sha256({"t": torch.zeros(2)}) != payload_sha256({"t": torch.zeros(2, dtype=torch.float64)})
    assert payload_sha256({"t": torch.zeros(2, 3)}) != payload_sha256({"t": torch.zeros(3, 2)})
    assert payload_sha256({"s": "ab"}) != payload_sha256({"s": b"ab"})
    assert payload_sha256({"t": torch.tensor(1.5)}) != payload_sha256({"t": torch.tensor([1.5])})


def test_version_1_checkpoints_still_load(tiny_run, tmp_path):
    from charlstm.runs.checkpoint import weights_checksum

    payload = load_checkpoint(tiny_run)
    del payload["payload_sha256"]
    payload.update(format_version=1, weights_sha256=weights_checksum(payload["model"]))
    path = tmp_path / "v1.pt"
    torch.save(payload, path)
    model, tok = model_from_checkpoint(load_checkpoint(path))
    assert tok.vocab_size == model.config.vocab_size
    payload["model"]["head.bias"][0] += 1.0
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(e.value) == f"{path}: checksum mismatch: the weights are corrupt; use another checkpoint"


# ----------------------------------------------------- checkpoints that ask for too much


def _resaved(tiny_run, tmp_path, change, name="crafted.pt"):
    """A crafted checkpoint: the tiny run's, changed, with a valid checksum (anyone can make one)."""
    payload = load_checkpoint(tiny_run)
    change(payload)
    return save_checkpoint(tmp_path / name, payload)


def test_a_config_larger_than_the_file_is_refused_before_building(tiny_run, tmp_path):
    path = _resaved(tiny_run, tmp_path, lambda p: p["model_config"].update(hidden_size=6000, num_layers=4))
    size = path.stat().st_size
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    vocab = load_checkpoint(tiny_run)["model_config"]["vocab_size"]
    from charlstm.model import count_parameters
    from charlstm.config import ModelConfig

    n = count_parameters(ModelConfig(vocab_size=vocab, embedding_dim=16, hidden_size=6000, num_layers=4))
    assert str(e.value) == (
        f"{path}: refused: the checkpoint's model config implies {n:,} parameters (vocab_size {vocab:,}, "
        f"embedding_dim 16, hidden_size 6,000, num_layers 4), more than its {size:,}-byte file can hold"
    )


def test_parameter_count_is_computed_without_building(tiny_run):
    from charlstm.model import count_parameters, weight_shapes
    from charlstm.config import ModelConfig
    from charlstm.model import LanguageModel

    for cell in ("lstm", "gru", "rnn"):
        for tie in (False, True):
            config = ModelConfig(vocab_size=7, embedding_dim=6 if tie else 5, hidden_size=6, num_layers=3, cell=cell, tie_weights=tie)
            model = LanguageModel(config)
            assert count_parameters(config) == model.num_parameters()
            assert weight_shapes(config) == {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_too_many_parameters_is_refused_whatever_the_file(tiny_run, tmp_path):
    from charlstm.runs.checks import check_model_config

    config = dict(load_checkpoint(tiny_run)["model_config"], hidden_size=65_536, num_layers=256)
    with pytest.raises(CheckpointError, match=r"implies [\d,]+ parameters .*more than the limit of 2,000,000,000"):
        check_model_config(config, "x.pt", file_size=10**13)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("hidden_size", "32", "hidden_size is '32', not a whole number"),
        ("hidden_size", 32.0, "hidden_size is 32.0, not a whole number"),
        ("num_layers", True, "num_layers is True, not a whole number"),
        ("vocab_size", 10**12, "vocab_size 1000000000000 is outside 2..16,777,216"),
        ("embedding_dim", 0, "embedding_dim 0 is outside 1..65,536"),
        ("num_layers", 100_000, "num_layers 100000 is outside 1..256"),
        ("cell", "transformer", "cell 'transformer' is not one of lstm, ln-lstm, gru, rnn"),
        ("dropout", float("nan"), "dropout nan is not a number in [0, 1)"),
        ("tie_weights", 1, "tie_weights is 1, not true or false"),
    ],
)
def test_config_values_of_the_wrong_type_or_size_are_named(tiny_run, tmp_path, field, value, message):
    path = _resaved(tiny_run, tmp_path, lambda p: p["model_config"].update({field: value}))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(e.value) == f"{path}: refused: the checkpoint's model config is invalid: {message}"


def test_weight_dtypes_and_shapes_are_checked_before_the_model_is_built(tiny_run, tmp_path, monkeypatch):
    import charlstm.runs.checkpoint as checkpoint

    def must_not_build(config):
        raise AssertionError("built a model before checking its weights")

    monkeypatch.setattr(checkpoint, "LanguageModel", must_not_build)

    def change(p):
        p["model"]["head.bias"] = p["model"]["head.bias"].to(torch.int64)
        p["model"]["embedding.weight"] = torch.zeros(5, 5)
        p["model"]["extra"] = torch.zeros(1)

    path = _resaved(tiny_run, tmp_path, change)
    with pytest.raises(CheckpointError) as e:
        model_from_checkpoint(load_checkpoint(path), path=str(path))
    vocab = load_checkpoint(tiny_run)["model_config"]["vocab_size"]
    assert str(e.value) == (
        f"{path}: weights do not match the model: unexpected extra; embedding.weight has shape (5, 5), "
        f"expected ({vocab}, 16); head.bias has dtype torch.int64, expected floating-point weights"
    )


def test_a_tensor_claiming_more_than_its_storage_is_refused(tiny_run, tmp_path):
    """A zero stride lets 4 stored bytes pass for 10^12 elements; reading them would allocate 4 TB."""
    huge = torch.zeros(1).as_strided((10**6, 10**6), (0, 0))
    payload = load_checkpoint(tiny_run)
    payload["model"]["head.bias"] = huge
    path = tmp_path / "huge.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(e.value) == (
        f"{path}: refused: payload/model/head.bias claims 1,000,000,000,000 elements of shape "
        "(1000000, 1000000) but stores 4 bytes"
    )


def test_a_compressed_zip_is_refused(tiny_run, tmp_path):
    import zipfile

    path = tmp_path / "deflated.pt"
    with zipfile.ZipFile(tiny_run / "best.pt") as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for info in source.infolist():
            out.writestr(info.filename, source.read(info))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(e.value) == (
        f"{path}: refused: not a charlstm checkpoint (its zip entries are compressed or larger than the file)"
    )


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: p["tokenizer"].update(chars="aab"), "the char vocabulary repeats a character"),
        (lambda p: p["tokenizer"].update(chars=list("abc")), "the char vocabulary is a list, not a string"),
        (lambda p: p["tokenizer"].update(kind="bpe", model_proto="text"), "the SentencePiece model is a str, not bytes"),
        (lambda p: p["tokenizer"].update(kind="bpe", model_proto=b"\x00garbage"), "the SentencePiece model cannot be read"),
        (lambda p: p["tokenizer"].update(kind="wordpiece"), "unknown tokenizer kind 'wordpiece'"),
        (lambda p: p.update(tokenizer=["char"]), "the tokenizer record is a list, not a dict"),
    ],
)
def test_bad_tokenizer_records_are_refused(tiny_run, tmp_path, change, message):
    path = _resaved(tiny_run, tmp_path, change)
    with pytest.raises(CheckpointError) as e:
        model_from_checkpoint(load_checkpoint(path), path=str(path))
    assert str(e.value).startswith(f"{path}: refused: the checkpoint's tokenizer record is invalid: {message}")


def test_vocabulary_and_config_must_agree(tiny_run, tmp_path):
    path = _resaved(tiny_run, tmp_path, lambda p: p["tokenizer"].update(chars=p["tokenizer"]["chars"][:-1]))
    vocab = load_checkpoint(tiny_run)["model_config"]["vocab_size"]
    with pytest.raises(CheckpointError) as e:
        model_from_checkpoint(load_checkpoint(path), path=str(path))
    assert str(e.value) == (
        f"{path}: refused: the checkpoint's tokenizer has {vocab - 1:,} tokens but its model config says "
        f"vocab_size {vocab:,}"
    )


def test_sentencepiece_vocabulary_must_match_the_config(tmp_path, small_text):
    from charlstm.runs.checks import check_model
    from charlstm.data.tokenizers import SentencePieceTokenizer

    tok = SentencePieceTokenizer.train(small_text, "bpe", 400)
    payload = {"model_config": {"vocab_size": 401, "embedding_dim": 4, "hidden_size": 4, "num_layers": 1}}
    payload["tokenizer"] = tok.to_dict()
    with pytest.raises(CheckpointError) as e:
        check_model(payload, "sp.pt")
    assert str(e.value) == (
        "sp.pt: refused: the checkpoint's tokenizer has 400 tokens but its model config says vocab_size 401"
    )


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: p["train_state"].update(step="7"), "step is '7', not a whole number >= 0"),
        (lambda p: p["train_state"].update(torch_rng=torch.zeros(3)), "a random-number state is not a byte tensor"),
        (lambda p: p["train_state"].update(world_size=0), "world_size is 0, not a whole number >= 1"),
        (lambda p: p.update(metrics={"a": 1}), "metrics is not a list of records"),
        (lambda p: p.update(corpus=[]), "the record of its text (corpus) has no sha256"),
        (lambda p: p["corpus"].update(files=[{"path": 3}]), "the record of its files is not a list of paths with their sha256"),
        (lambda p: p.update(train_config=[]), "train_config is not a record"),
        (lambda p: p["train_config"].update(bptt="x"), "train_config is invalid ('>=' not supported between instances of 'str' and 'int')"),
    ],
)
def test_resume_refuses_a_bad_training_state(tiny_run, tmp_path, change, message):
    import shutil as sh

    from charlstm.runs.directory import plan_resume

    run = tmp_path / "run"
    sh.copytree(tiny_run, run)
    path = _resaved(run, tmp_path, change)
    sh.copy(path, run / "last.pt")
    with pytest.raises(CheckpointError) as e:
        plan_resume(run, changes={"max_steps": 100})
    assert str(e.value) == f"{run / 'last.pt'}: refused: its training state is invalid: {message}"


def test_resume_refuses_optimizer_and_hidden_states_of_the_wrong_shape(tiny_run, tmp_path, small_text):
    import shutil as sh

    from charlstm.distributed import Dist
    from charlstm.training.setup import prepare_resume
    from charlstm.runs.directory import plan_resume
    from charlstm.data.text import TextSource

    run = tmp_path / "run"
    sh.copytree(tiny_run, run)
    source = TextSource.from_text(small_text, "small", "small")
    exp_avg = lambda p: p["optimizer"]["state"][0].update(exp_avg=torch.zeros(3, 3))  # noqa: E731
    hidden = lambda p: p["train_state"].update(hidden=[torch.zeros(1, 4, 7), torch.zeros(1, 4, 7)])  # noqa: E731
    for change, message in [
        (exp_avg, "the optimizer's exp_avg has shape (3, 3), not (128, 16)"),  # rnn.weight_ih_l0's
        (hidden, "the carried hidden state has shapes [(1, 4, 7), (1, 4, 7)]"),
    ]:
        sh.copy(_resaved(run, tmp_path, change), run / "last.pt")
        with pytest.raises(CheckpointError) as e:
            prepare_resume(plan_resume(run, source, changes={"max_steps": 100}), Dist())
        assert str(e.value) == (
            f"{run}: refused: its training state does not fit the model ({message}); it cannot be resumed "
            "(sample and eval can still use it)"
        )


def test_a_damaged_best_pt_names_the_last_pt_that_loads_and_the_command(tiny_run, tmp_path):
    import shutil

    from tests.conftest import run_cli

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    data = bytearray((run / "best.pt").read_bytes())
    at = data.index(load_checkpoint(run)["tokenizer"]["chars"].encode()) + 5
    data[at] ^= 0x01
    (run / "best.pt").write_bytes(bytes(data))
    last = run / "last.pt"
    expected = f"{run / 'best.pt'}: checksum mismatch: the file is corrupt; {last} (step 20) loads: charlstm sample {last}"
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(run)
    assert str(e.value) == expected
    result = run_cli("sample", run, "--length", "5")
    assert result.returncode == 1 and result.stderr == f"Error: {expected}\n"
    assert run_cli("sample", last, "--length", "5").returncode == 0  # the command it names works
    last.write_bytes(last.read_bytes()[:1000])  # both damaged: nothing else to name
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(run)
    assert str(e.value) == f"{run / 'best.pt'}: checksum mismatch: the file is corrupt; use another checkpoint"


def test_the_second_moments_come_with_the_model_or_not_at_all(tiny_run):
    """Dynamic evaluation's prior: each parameter's AdamW second moment, by name, from the
    checkpoint's optimizer state; none from a state that does not fit (hostile until checked)."""
    from charlstm.runs.checkpoint import load_model, second_moments

    model, _, payload = load_model(tiny_run)
    state = payload["optimizer"]["state"]
    moments = model.second_moments
    assert set(moments) == {name for name, _ in model.named_parameters()}
    assert torch.equal(moments["rnn.weight_hh_l0"], state[1]["exp_avg_sq"])  # the decayed group first
    assert torch.equal(moments["embedding.weight"], state[3]["exp_avg_sq"])
    for spoil in ("negative", "nan", "shape", "missing", "not a tensor"):
        broken = {k: dict(v) for k, v in state.items()}
        if spoil == "negative":
            broken[0]["exp_avg_sq"] = -broken[0]["exp_avg_sq"] - 1
        elif spoil == "nan":
            broken[2]["exp_avg_sq"] = broken[2]["exp_avg_sq"] * float("nan")
        elif spoil == "shape":
            broken[1]["exp_avg_sq"] = broken[1]["exp_avg_sq"][:-1]
        elif spoil == "missing":
            del broken[4]
        else:
            broken[5]["exp_avg_sq"] = [1.0]
        assert second_moments({"state": broken}, model) is None, spoil
    assert second_moments(None, model) is None and second_moments({"state": []}, model) is None
