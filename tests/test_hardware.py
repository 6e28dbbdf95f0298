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


@pytest.mark.parametrize(
    "capability, bf16, dtype, words",
    [
        ((9, 0), True, torch.bfloat16, "bf16 autocast (auto: the GPU runs bf16, compute capability 9.0)"),
        ((7, 5), False, torch.float16, "fp16 autocast with gradient scaling (auto: the GPU has fp16 tensor cores"),
        ((6, 1), False, None, "fp32 (auto: the GPU has no fast fp16 or bf16, compute capability 6.1)"),
    ],
)
def test_precision_auto_follows_the_gpu(monkeypatch, capability, bf16, dtype, words):
    """auto on CUDA: native bf16 (8.0 on), else fp16 with a grad scaler (7.x), else fp32; a GPU
    that only emulates bf16 (torch.cuda.is_bf16_supported() says yes on 7.x) gets fp16."""
    import charlstm.hardware as m

    monkeypatch.setattr(m, "cuda_capability", lambda device: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16 or including_emulation)
    chosen = m.resolve_precision("auto", torch.device("cuda"))
    assert chosen.amp_dtype == dtype and chosen.description.startswith(words)
    assert chosen.scales_loss == (dtype == torch.float16)
