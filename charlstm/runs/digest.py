"""A checksum over plain data: nested dicts, lists and tuples of tensors, strings, bytes, numbers,
booleans and None, as a checkpoint holds them.

The data is walked in a canonical order (dict keys sorted), each value written with its type, so
equal data always gives the same SHA-256 and any changed byte a different one. A tensor counts as
its dtype, shape and bytes. The walk also refuses what a checkpoint never holds and what could
make reading it costly: tensors that are not dense, tensors that claim more elements than their
storage holds (a zero stride would let a few stored bytes pass for terabytes), keys other than
strings and integers, unknown types, and nesting deeper than ``MAX_DEPTH``.
"""

from __future__ import annotations

import hashlib
import math
import struct

import torch

MAX_DEPTH = 32  # a checkpoint nests 5 deep (optimizer state: dict -> dict -> dict -> tensor)


class UnsupportedData(ValueError):
    """Data a checkpoint never holds; the message says where it is (``model/head.bias``, ...)."""


def tensor_bytes(tensor: torch.Tensor, where: str = "tensor") -> bytes:
    """A dense tensor's bytes (after ``check_tensor``)."""
    check_tensor(tensor, where)
    flat = tensor.detach().cpu().resolve_conj().resolve_neg().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def check_tensor(tensor: torch.Tensor, where: str = "tensor") -> None:
    """Refuse a tensor that is not dense or claims more elements than its storage holds."""
    if tensor.layout != torch.strided or tensor.is_quantized or tensor.is_nested:
        raise UnsupportedData(f"{where} is not a dense tensor ({tensor.layout})")
    if tensor.numel() == 0:
        return
    if any(s < 0 for s in tensor.stride()):
        raise UnsupportedData(f"{where} has a negative stride")
    # The last element's position must lie inside the storage, and a dense tensor needs as many
    # stored elements as it has (a zero or overlapping stride would repeat a few bytes forever).
    storage = tensor.untyped_storage().nbytes()
    last = tensor.storage_offset() + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride()))
    if (last + 1) * tensor.element_size() > storage or tensor.numel() * tensor.element_size() > storage:
        raise UnsupportedData(
            f"{where} claims {tensor.numel():,} elements of shape {tuple(tensor.shape)} but stores "
            f"{storage:,} bytes"
        )


def _key_order(key) -> tuple:
    return (type(key).__name__, key)


def payload_sha256(data) -> str:
    """SHA-256 of ``data`` in its canonical form; ``UnsupportedData`` for anything else."""
    digest = hashlib.sha256()
    _feed(digest, data, "payload", 0)
    return digest.hexdigest()


def _feed(digest, value, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise UnsupportedData(f"{where} is nested more than {MAX_DEPTH} deep")
    update = digest.update
    if value is None:
        update(b"N")
    elif isinstance(value, bool):  # before int: a bool is an int
        update(b"T" if value else b"F")
    elif isinstance(value, int):
        text = format(value, "x").encode()  # hex: no limit on the digits, unlike str()
        update(b"i" + struct.pack(">I", len(text)) + text)
    elif isinstance(value, float):
        update(b"f" + struct.pack(">d", value if not math.isnan(value) else math.nan))
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        update(b"s" + struct.pack(">Q", len(data)) + data)
    elif isinstance(value, (bytes, bytearray)):
        update(b"b" + struct.pack(">Q", len(value)) + bytes(value))
    elif isinstance(value, torch.Tensor):
        data = tensor_bytes(value, where)
        header = f"{value.dtype}|{tuple(value.shape)}".encode()
        update(b"t" + struct.pack(">I", len(header)) + header + struct.pack(">Q", len(data)) + data)
    elif isinstance(value, (list, tuple)):
        update(b"l" + struct.pack(">Q", len(value)))
        for i, item in enumerate(value):
            _feed(digest, item, f"{where}[{i}]", depth + 1)
    elif isinstance(value, dict):
        update(b"d" + struct.pack(">Q", len(value)))
        bad = [k for k in value if type(k) not in (str, int)]
        if bad:
            raise UnsupportedData(f"{where} has a key of type {type(bad[0]).__name__}")
        for key in sorted(value, key=_key_order):
            _feed(digest, key, f"{where} key", depth + 1)
            _feed(digest, value[key], f"{where}/{key}", depth + 1)
    else:
        raise UnsupportedData(f"{where} holds a {type(value).__name__}, which a checkpoint never holds")
