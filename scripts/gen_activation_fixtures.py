#!/usr/bin/env python3
"""Reference values for the activations over their whole range, computed by
real PyTorch (CPU, float32).

Writes tests/fixtures/activations.json: for Sigmoid, Tanh, GELU (exact and
tanh) and Softmax, one input row of values
from -100 to 100 (dense in [-12, 12], plus the points where nncore's
formulas switch branches or saturate: tanh's 0.625, exp's -87.3 / 88.72,
subnormal and tiny inputs), the output and the input gradient of
sum(output * w) for a fixed w.

Rerun:  python scripts/gen_activation_fixtures.py   (needs `pip install torch`)
"""
import json
import os

import torch
import torch.nn as nn

from models import flat

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "activations.json")


def sweep():
    dense = torch.linspace(-12.0, 12.0, 193)
    edges = [
        -100.0, -89.0, -88.8, -88.7, -87.4, -87.3, -50.0, -20.0, -15.0, -9.1, -9.0, -6.7, -5.0,
        -0.6251, -0.625, -0.6249, -1e-3, -1e-20, -1e-40, 0.0, 1e-40, 1e-20, 1e-3,
        0.6249, 0.625, 0.6251, 5.0, 9.0, 9.1, 15.0, 20.0, 50.0, 87.3, 88.7, 88.8, 89.0, 100.0,
    ]
    return torch.cat([dense, torch.tensor(edges)]).reshape(1, -1)


def case(name, layer, x):
    x = x.clone().requires_grad_(True)
    torch.manual_seed(7)
    w = torch.empty_like(x).uniform_(-1.0, 1.0)
    y = layer(x)
    (y * w).sum().backward()
    return {"name": name, "input": flat(x), "w": flat(w), "output": flat(y), "grad_input": flat(x.grad)}


def main():
    x = sweep()
    cases = [
        case("sigmoid", nn.Sigmoid(), x),
        case("tanh", nn.Tanh(), x),
        case("gelu", nn.GELU(), x),
        case("gelu_tanh", nn.GELU(approximate="tanh"), x),
        # Softmax over a row of moderate logits (the sweep's tails would
        # put all the mass on one value).
        case("softmax_1", nn.Softmax(dim=1), x[:, :193] / 3.0),
    ]
    with open(OUT, "w") as f:
        json.dump({"torch_version": torch.__version__, "cases": cases}, f)
        f.write("\n")
    print(f"wrote {os.path.normpath(OUT)} (torch {torch.__version__}, {x.shape[1]} values)")


if __name__ == "__main__":
    main()
