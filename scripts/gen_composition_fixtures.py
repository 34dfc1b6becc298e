#!/usr/bin/env python3
"""Reference values for the composition tests, computed by real PyTorch.

Writes tests/fixtures/composition.json:
- "prints": repr() and named_parameters() names/shapes of models built from
  ModuleList (repeats collapsed, empty), Sequential (standalone, as a field,
  holding a custom module), modules named 0, 1, 2 (what a Rust tuple struct
  gives), optional submodules set to None, every standard layer, nested two
  levels deep; each built after torch.manual_seed (nncore draws the same
  weights), with an input and the forward output.
- "layers": for Identity, Sigmoid, Tanh, LeakyReLU, GELU (exact, tanh),
  Softmax (dim 1, dim 0): the output for an input and the input gradient of
  sum(output * w) for a fixed w.
- "train": a Sequential/ModuleList model: parameter gradients of an MSE loss.

Rerun:  python scripts/gen_composition_fixtures.py   (needs `pip install torch`)
"""
import json
import os

import torch
import torch.nn as nn

from models import Block, flat
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "composition.json")


class Stack(nn.Module):
    """Vec<Linear> with three identical layers then a different one."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(16, 16) for _ in range(3)] + [nn.Linear(16, 4)])
        self.act = nn.ReLU()

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.act(x)


class EmptyList(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.fc(x)


class Blocks(nn.Module):
    """[Block; 2]: identical derived modules collapse too."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([Block(6), Block(6)])

    def forward(self, x):
        for b in self.layers:
            x = b(x)
        return x


class Mlp(nn.Module):
    """What `struct Mlp(Linear, ReLU, Linear);` is: children 0, 1, 2."""

    def __init__(self):
        super().__init__()
        self.add_module("0", nn.Linear(5, 7))
        self.add_module("1", nn.ReLU())
        self.add_module("2", nn.Linear(7, 3))

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x


class WithSeq(nn.Module):
    """A Sequential field holding a derived module, and an optional child."""

    def __init__(self, with_norm):
        super().__init__()
        self.features = nn.Sequential(nn.Linear(6, 8), nn.GELU(), Block(8), nn.Dropout(0.1))
        self.norm = nn.Tanh() if with_norm else None
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = self.features(x)
        if self.norm is not None:
            x = self.norm(x)
        return self.head(x)


class Layers(nn.Module):
    """Every standard layer, printed."""

    def __init__(self):
        super().__init__()
        self.identity = nn.Identity()
        self.sigmoid = nn.Sigmoid()
        self.tanh = nn.Tanh()
        self.leaky = nn.LeakyReLU(0.2)
        self.leaky_default = nn.LeakyReLU()
        self.gelu = nn.GELU()
        self.gelu_tanh = nn.GELU(approximate="tanh")
        self.softmax = nn.Softmax(dim=1)
        self.softmax_last = nn.Softmax(dim=-1)
        self.dropout = nn.Dropout(0.3)
        self.dropout_default = nn.Dropout()

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x


class Deep(nn.Module):
    """Containers nested two levels deep."""

    def __init__(self):
        super().__init__()
        self.stages = nn.ModuleList([
            nn.Sequential(nn.Linear(4, 4), nn.LeakyReLU(0.1)),
            nn.Sequential(nn.Linear(4, 4), nn.LeakyReLU(0.1)),
        ])
        self.heads = nn.Sequential(nn.Sequential(nn.Linear(4, 2), nn.Sigmoid()), nn.Identity())

    def forward(self, x):
        for s in self.stages:
            x = s(x)
        return self.heads(x)


def print_case(name, seed, make, in_features, batch=3):
    torch.manual_seed(seed)
    model = make()
    model.eval()
    entry = {
        "name": name,
        "seed": seed,
        "repr": repr(model),
        "params": [{"name": n, "shape": list(p.shape)} for n, p in model.named_parameters()],
        "values": {n: flat(p) for n, p in model.named_parameters()},
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    if in_features:
        x = torch.empty(batch, in_features).uniform_(-1.0, 1.0)
        with torch.no_grad():
            y = model(x)
        entry["input_shape"] = list(x.shape)
        entry["input"] = flat(x)
        entry["output_shape"] = list(y.shape)
        entry["output"] = flat(y)
    return entry


def layer_case(name, layer):
    torch.manual_seed(123)
    x = torch.empty(4, 5).uniform_(-3.0, 3.0).requires_grad_(True)
    w = torch.empty(4, 5).uniform_(-1.0, 1.0)
    y = layer(x)
    (y * w).sum().backward()
    return {"name": name, "input": flat(x), "w": flat(w), "output": flat(y), "grad_input": flat(x.grad)}


def main():
    prints = [
        print_case("stack", 0, Stack, 16),
        print_case("empty_list", 1, EmptyList, 3),
        print_case("blocks", 2, Blocks, 6),
        print_case("mlp_tuple", 3, Mlp, 5),
        print_case("with_seq_none", 4, lambda: WithSeq(False), 6),
        print_case("with_seq_some", 5, lambda: WithSeq(True), 6),
        print_case("layers", 6, Layers, 0),
        print_case("deep", 7, Deep, 4),
        print_case("sequential", 8, lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), 4),
        print_case("sequential_empty", 9, nn.Sequential, 0),
        print_case("module_list_top", 10, lambda: nn.ModuleList([nn.ReLU(), nn.ReLU(), nn.Linear(2, 2), nn.ReLU()]), 0),
    ]
    layers = [
        layer_case("identity", nn.Identity()),
        layer_case("sigmoid", nn.Sigmoid()),
        layer_case("tanh", nn.Tanh()),
        layer_case("leaky_relu", nn.LeakyReLU(0.2)),
        layer_case("gelu", nn.GELU()),
        layer_case("gelu_tanh", nn.GELU(approximate="tanh")),
        layer_case("softmax_1", nn.Softmax(dim=1)),
        layer_case("softmax_0", nn.Softmax(dim=0)),
        layer_case("relu", nn.ReLU()),
    ]
    torch.manual_seed(11)
    model = WithSeq(True)
    model.eval()  # dropout off: the gradients are deterministic
    x = torch.empty(5, 6).uniform_(-1.0, 1.0)
    target = torch.empty(5, 3).uniform_(-1.0, 1.0)
    F.mse_loss(model(x), target).backward()
    train = {
        "seed": 11,
        "input": flat(x),
        "target": flat(target),
        "grads": {n: flat(p.grad) for n, p in model.named_parameters()},
    }
    with open(OUT, "w") as f:
        json.dump({"torch_version": torch.__version__, "cases": prints, "layers": layers, "train": train}, f)
        f.write("\n")
    print(f"wrote {os.path.normpath(OUT)} (torch {torch.__version__})")
    for c in prints:
        print(c["repr"])


if __name__ == "__main__":
    main()
