#!/usr/bin/env python3
"""Reference values for the foundation tests, computed by real PyTorch.

Writes tests/fixtures/foundation.json: for each model, what print(model)
prints, named_parameters() names and shapes, the parameter count, the
weights drawn after torch.manual_seed (nncore draws the same), an input
batch and the forward output.

Rerun:  python scripts/gen_foundation_fixtures.py   (needs `pip install torch`)
"""
import json
import os

import torch
import torch.nn as nn

from models import SimpleNet, Block, Encoder, Net, flat

torch.set_printoptions(precision=10)
OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "foundation.json")


class Empty(nn.Module):
    def forward(self, x):
        return x


def record(name, seed, make, in_features, batch):
    torch.manual_seed(seed)
    model = make()
    # The input comes from the same generator, after the weights.
    x = torch.empty(batch, in_features).uniform_(-1.0, 1.0) if in_features else None
    entry = {
        "name": name,
        "seed": seed,
        "repr": repr(model),
        "params": [
            {"name": n, "shape": list(p.shape), "values": flat(p)}
            for n, p in model.named_parameters()
        ],
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "modules": [n for n, _ in model.named_modules()],
    }
    if x is not None:
        with torch.no_grad():
            y = model(x)
        entry["input_shape"] = list(x.shape)
        entry["input"] = flat(x)
        entry["output_shape"] = list(y.shape)
        entry["output"] = flat(y)
    return entry


def main():
    cases = [
        record("simple_net", 0, lambda: SimpleNet(100, 50, 10), 100, 4),
        record("nested", 1, Net, 8, 5),
        record("linear_no_bias", 2, lambda: nn.Linear(7, 3, bias=False), 7, 3),
        record("linear", 42, lambda: nn.Linear(7, 3), 7, 3),
        record("empty", 3, Empty, 0, 0),
        record("relu", 4, nn.ReLU, 0, 0),
    ]
    with open(OUT, "w") as f:
        json.dump({"torch_version": torch.__version__, "cases": cases}, f)
        f.write("\n")
    print(f"wrote {os.path.normpath(OUT)} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
