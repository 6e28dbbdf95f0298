import os
import shutil

import pytest
import torch

from charlstm.checkpoint import (
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
    with pytest.raises(AttributeError, match="Can't (get|pickle) local object"):
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
from charlstm.checkpoint import load_checkpoint, save_checkpoint
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
