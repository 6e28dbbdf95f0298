import pytest
import torch

from charlstm.errors import ConfigError
from charlstm.hardware import select_device


def test_select_device_cpu_and_missing_gpu():
    assert select_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--device cuda: no CUDA GPU is available here"):
            select_device("cuda")
        assert select_device("auto").type in ("cpu", "mps")


def test_precision_auto_follows_the_cpu(monkeypatch):
    import charlstm.hardware as m

    cpu = torch.device("cpu")
    monkeypatch.setattr(m, "cpu_has_fast_bf16", lambda: False)
    assert m.resolve_precision("auto", cpu).amp_dtype is None
    assert m.resolve_precision("fp32", cpu).amp_dtype is None
    with pytest.raises(ConfigError, match="--precision bf16: this CPU has no bf16 hardware"):
        m.resolve_precision("bf16", cpu)
    with pytest.raises(ConfigError, match="--precision fp16 is for CUDA GPUs"):
        m.resolve_precision("fp16", cpu)
    monkeypatch.setattr(m, "cpu_has_fast_bf16", lambda: True)
    assert m.resolve_precision("auto", cpu).amp_dtype == torch.bfloat16
    assert m.resolve_precision("bf16", cpu).amp_dtype == torch.bfloat16
    monkeypatch.setattr(m, "cpu_has_fast_bf16", lambda: False)
    assert "no bf16 hardware" in m.resolve_precision("auto", cpu).description
    assert not m.resolve_precision("auto", cpu).scales_loss
