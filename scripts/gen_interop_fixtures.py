#!/usr/bin/env python3
"""Safetensors fixtures written by real PyTorch, for the weights tests and
examples/pytorch_interop.rs.

Writes under tests/fixtures/:
- simple_net.safetensors: torch.manual_seed(0); SimpleNet(100, 50, 10)
  state_dict, saved with safetensors.torch.save_file(..., metadata={"format": "pt"}).
- simple_net_io.safetensors: an input batch "input" (8 x 100) and PyTorch's
  output "output" (8 x 10) for it.
- small_{f16,bf16,f64}.safetensors: SimpleNet(4, 3, 2) (seed 1) in those
  dtypes; small_{f16,bf16}_as_f32.safetensors: the same values rounded to
  half precision and back, the values a loader must produce.
- small_int.safetensors: a state dict whose fc1.weight is int64.
- interop.json: PyTorch's exact error message for a strict load with missing,
  unexpected and mis-sized keys, and the non-strict result.

It then checks that tests/fixtures/rust_written.safetensors (written by
nncore: `cargo run --example pytorch_interop -- --write-fixture`) loads into
PyTorch strictly and gives the same outputs.

Rerun:  python scripts/gen_interop_fixtures.py   (needs `pip install torch safetensors`)
"""
import json
import os

import torch
import torch.nn as nn

from models import SimpleNet, flat
from safetensors.torch import load_file, save_file

FIX = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")


def path(name):
    return os.path.join(FIX, name)


def main():
    meta = {"format": "pt"}
    torch.manual_seed(0)
    model = SimpleNet(100, 50, 10)
    x = torch.empty(8, 100).uniform_(-1.0, 1.0)
    with torch.no_grad():
        y = model(x)
    save_file(model.state_dict(), path("simple_net.safetensors"), metadata=meta)
    save_file({"input": x, "output": y}, path("simple_net_io.safetensors"), metadata=meta)

    torch.manual_seed(1)
    small = SimpleNet(4, 3, 2)
    sd = small.state_dict()
    save_file({k: v.half() for k, v in sd.items()}, path("small_f16.safetensors"), metadata=meta)
    save_file({k: v.half().float() for k, v in sd.items()}, path("small_f16_as_f32.safetensors"), metadata=meta)
    save_file({k: v.bfloat16() for k, v in sd.items()}, path("small_bf16.safetensors"), metadata=meta)
    save_file({k: v.bfloat16().float() for k, v in sd.items()}, path("small_bf16_as_f32.safetensors"), metadata=meta)
    save_file({k: v.double() for k, v in sd.items()}, path("small_f64.safetensors"), metadata=meta)
    save_file({k: v.contiguous() for k, v in sd.items()}, path("small_f32.safetensors"), metadata=meta)
    bad = dict(sd)
    bad["fc1.weight"] = torch.arange(12, dtype=torch.int64).reshape(3, 4)
    save_file(bad, path("small_int.safetensors"), metadata=meta)

    # PyTorch's own report for a broken state dict.
    broken = {k: v.clone() for k, v in model.state_dict().items()}
    broken["fc1.weight"] = torch.zeros(50, 99)
    del broken["fc2.bias"]
    broken["fc3.weight"] = torch.zeros(2, 2)
    target = SimpleNet(100, 50, 10)
    try:
        target.load_state_dict(broken, strict=True)
        raise SystemExit("expected an error")
    except RuntimeError as e:
        strict_msg = str(e)
    only_keys = {k: v for k, v in broken.items() if k != "fc1.weight"}
    only_keys["fc1.weight"] = model.state_dict()["fc1.weight"]
    res = target.load_state_dict(only_keys, strict=False)
    try:
        target.load_state_dict(broken, strict=False)
        raise SystemExit("expected an error")
    except RuntimeError as e:
        non_strict_msg = str(e)
    with open(path("interop.json"), "w") as f:
        json.dump(
            {
                "torch_version": torch.__version__,
                "strict_error": strict_msg,
                "non_strict_error": non_strict_msg,
                "non_strict_missing": list(res.missing_keys),
                "non_strict_unexpected": list(res.unexpected_keys),
            },
            f,
            indent=1,
        )
        f.write("\n")
    print("wrote fixtures under", os.path.normpath(FIX))

    # The other direction: a file nncore wrote loads into PyTorch.
    rust = path("rust_written.safetensors")
    if os.path.exists(rust):
        m = SimpleNet(100, 50, 10)
        m.load_state_dict(load_file(rust), strict=True)
        with torch.no_grad():
            diff = (m(x) - y).abs().max().item()
        print(f"rust_written.safetensors loads into PyTorch; max |diff| vs PyTorch's model: {diff:.3g}")
        assert diff <= 1e-6, diff
        with open(rust, "rb") as f:
            rust_bytes = f.read()
        with open(path("simple_net.safetensors"), "rb") as f:
            torch_bytes = f.read()
        print("byte-identical to PyTorch's own file:", rust_bytes == torch_bytes)
    else:
        print("no rust_written.safetensors yet: run the interop example with --write-fixture, then rerun")


if __name__ == "__main__":
    main()
