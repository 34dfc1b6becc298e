#!/usr/bin/env python3
"""A corpus of malformed and hostile safetensors files (no PyTorch needed).

Writes tests/fixtures/malformed/*.safetensors. Every file must be refused
with an error by nncore's loader: never a panic, an out-of-bounds read or an
allocation sized by the header's claims. tests/weights.rs loads each one.

Rerun:  python3 scripts/gen_malformed_corpus.py
"""
import json
import os
import struct

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "malformed")


def st(header, data=b"", header_len=None):
    """A file from a header (dict or raw str/bytes) and data bytes."""
    if isinstance(header, dict):
        header = json.dumps(header)
    if isinstance(header, str):
        header = header.encode()
    n = len(header) if header_len is None else header_len
    return struct.pack("<Q", n) + header + data


W = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
B = {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]}
DATA = bytes(24)

CASES = {
    "empty": b"",
    "truncated_length": b"\x10\x00\x00",
    "header_length_zero": st(b"", header_len=0),
    "header_longer_than_file": st({"w": W}, DATA, header_len=10_000),
    "header_length_huge": struct.pack("<Q", 2**63) + b"{}",
    "header_not_json": st("this is not json", DATA),
    "header_not_utf8": st(b"\xff\xfe{\x00}", DATA),
    "header_not_object": st("[1, 2, 3]", DATA),
    "truncated_data": st({"w": W, "b": B}, DATA[:20]),
    "trailing_bytes": st({"w": W, "b": B}, DATA + b"extra"),
    "offsets_overlap": st({"w": W, "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, DATA),
    "offsets_out_of_range": st({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 1 << 40]}}, DATA),
    "offsets_reversed": st({"w": {"dtype": "F32", "shape": [0], "data_offsets": [16, 0]}}, DATA),
    "shape_overflow": st({"w": {"dtype": "F32", "shape": [1 << 62, 1 << 62], "data_offsets": [0, 16]}}, bytes(16)),
    "shape_mismatch_with_bytes": st({"w": {"dtype": "F32", "shape": [3, 3], "data_offsets": [0, 16]}}, bytes(16)),
    "negative_shape": st({"w": {"dtype": "F32", "shape": [-1, 4], "data_offsets": [0, 16]}}, bytes(16)),
    "unknown_dtype": st({"w": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}, bytes(16)),
    "duplicate_keys": st('{"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}, '
                         '"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}', bytes(16)),
    "metadata_not_strings": st({"__metadata__": {"format": 1}, "w": W}, bytes(16)),
    "missing_fields": st({"w": {"dtype": "F32"}}, bytes(16)),
    "huge_claim_small_file": st({"w": {"dtype": "F32", "shape": [1 << 30], "data_offsets": [0, 1 << 32]}}, bytes(16)),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, blob in CASES.items():
        with open(os.path.join(OUT, name + ".safetensors"), "wb") as f:
            f.write(blob)
    print(f"wrote {len(CASES)} files to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
