#!/usr/bin/env python3
"""Reference values for written forwards (#[nncore::forward]), computed by
real PyTorch autograd.

Writes tests/fixtures/written.json with, for each model below (built after
torch.manual_seed(seed), so nncore draws the same initial weights):
- "repr": print(model); "names"/"shapes": named_parameters();
- "state": the initial parameters, row-major;
- "x", "w": an input and a weight for the loss L = sum(model(x) * w);
- "out": model(x); "grads": every parameter's dL/dp and "dx": dL/dx;
- "adam": the parameters after 3 steps of Adam(lr=0.01) on L, with the
  input fixed.

Each PyTorch forward below is the twin of a Rust `#[nncore::forward]` in
tests/written.rs.

Rerun:  python scripts/gen_written_fixtures.py   (needs `pip install torch`)
"""
import json
import os

import torch
import torch.nn as nn

from models import ResBlock, flat

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "written.json")


class SimpleNet(nn.Module):
    """The seed's model, its forward written line by line."""

    def __init__(self, i, h, o):
        super().__init__()
        self.fc1 = nn.Linear(i, h)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(h, o)

    def forward(self, x):
        out = self.fc1(x)
        out = self.relu(out)
        out = self.fc2(out)
        return out


class ResMlp(nn.Module):
    """Residual blocks in a ModuleList, applied in a loop."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(6, 12)
        self.blocks = nn.ModuleList([ResBlock(12) for _ in range(3)])
        self.head = nn.Linear(12, 4)

    def forward(self, x):
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


class Gated(nn.Module):
    """A gated unit: sigmoid(a(x)) * b(x)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(5, 7)
        self.b = nn.Linear(5, 7)
        self.out = nn.Linear(7, 3)

    def forward(self, x):
        return self.out(torch.sigmoid(self.a(x)) * self.b(x))


class TwoBranch(nn.Module):
    """Two branches concatenated along features."""

    def __init__(self):
        super().__init__()
        self.left = nn.Linear(5, 4)
        self.right = nn.Linear(5, 6)
        self.act = nn.Tanh()
        self.head = nn.Linear(10, 3)

    def forward(self, x):
        l = self.act(self.left(x))
        r = torch.nn.functional.gelu(self.right(x))
        return self.head(torch.cat([l, r], dim=1))


class Reuse(nn.Module):
    """One ReLU applied three times, one Linear applied twice (tied)."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(5, 8)
        self.shared = nn.Linear(8, 8)
        self.relu = nn.ReLU()
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.relu(self.inp(x))
        h = self.relu(self.shared(h))
        h = self.relu(self.shared(h))
        return self.head(h)


class Dense(nn.Module):
    """A DenseNet-style skip: the input concatenated with later outputs,
    with scaling, subtraction, chunk, narrow and log_softmax."""

    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(4, 6)
        self.l2 = nn.Linear(10, 6)
        self.head = nn.Linear(16, 6)

    def forward(self, x):
        h1 = torch.relu(self.l1(x))
        h2 = torch.tanh(self.l2(torch.cat([x, h1], dim=1)))
        y = self.head(torch.cat([x, h1, h2], dim=1)) * 0.5 - x.narrow(1, 0, 1)
        a, b = y.chunk(2, dim=1)
        z = a / (1.0 + b * b) - 2.0 * b
        return torch.log_softmax(z, dim=1) + torch.softmax(-z, dim=1) / 3.0


MODELS = [
    ("simple_net", lambda: SimpleNet(12, 16, 5), 12, 0),
    ("res_mlp", ResMlp, 6, 1),
    ("gated", Gated, 5, 2),
    ("two_branch", TwoBranch, 5, 3),
    ("reuse", Reuse, 5, 4),
    ("dense", Dense, 4, 5),
]


def case(name, make, inputs, seed):
    torch.manual_seed(seed)
    model = make()
    g = torch.Generator().manual_seed(100 + seed)
    x = torch.rand(3, inputs, generator=g) * 2 - 1
    out = model(x)
    w = torch.rand(out.shape, generator=g) * 2 - 1
    state = {n: flat(p) for n, p in model.named_parameters()}

    xg = x.clone().requires_grad_(True)
    out = model(xg)
    (out * w).sum().backward()
    grads = {n: flat(p.grad) for n, p in model.named_parameters()}

    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        (model(x) * w).sum().backward()
        opt.step()
    return {
        "name": name,
        "seed": seed,
        "repr": repr(model),
        "names": [n for n, _ in model.named_parameters()],
        "shapes": [list(p.shape) for _, p in model.named_parameters()],
        "state": state,
        "x_shape": list(x.shape),
        "x": flat(x),
        "w": flat(w),
        "out_shape": list(out.shape),
        "out": flat(out),
        "grads": grads,
        "dx": flat(xg.grad),
        "adam": {n: flat(p) for n, p in model.named_parameters()},
    }


def main():
    cases = [case(*m) for m in MODELS]
    with open(OUT, "w") as f:
        json.dump({"torch": torch.__version__, "cases": cases}, f, indent=1)
        f.write("\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
