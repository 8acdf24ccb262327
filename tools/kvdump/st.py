"""Minimal safetensors writer and reader in plain Python + NumPy.

Format (https://github.com/huggingface/safetensors): an 8-byte little-endian header length N,
N bytes of UTF-8 JSON, then the tensor bytes. The JSON maps each tensor name to
{"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the data section) and
may hold "__metadata__", a map of strings to strings. This writer is deterministic: tensors are
laid out in the order given, back to back, and the header is padded with spaces to 8 bytes.
"""

from __future__ import annotations

import json
import struct

import numpy as np

_NP_TO_ST = {np.dtype("float16"): "F16", np.dtype("float32"): "F32", np.dtype("int32"): "I32"}
_ST_TO_NP = {"F16": np.float16, "F32": np.float32, "I32": np.int32, "BF16": np.uint16}


class BF16:
    """Marks a uint16 array holding bfloat16 bit patterns (NumPy has no bfloat16)."""

    def __init__(self, bits: np.ndarray):
        assert bits.dtype == np.uint16
        self.bits = bits


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Rounds float32 values to bfloat16 (round to nearest even) and returns the bit patterns."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def write(path: str, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Writes `tensors` (name -> ndarray or BF16) in insertion order."""
    header: dict = {}
    blobs = []
    offset = 0
    for name, value in tensors.items():
        # np.require keeps 0-d arrays 0-d (np.ascontiguousarray would make them 1-d)
        if isinstance(value, BF16):
            arr, dtype = np.require(value.bits, requirements="C"), "BF16"
        else:
            arr = np.require(value, requirements="C")
            dtype = _NP_TO_ST[arr.dtype]
        raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


def read(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Reads a file written by `write` (BF16 tensors come back as uint16 bit patterns)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    metadata = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        arr = np.frombuffer(data[base + begin:base + end], dtype=_ST_TO_NP[info["dtype"]])
        out[name] = arr.reshape(info["shape"])
    return out, metadata
