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

torch.set_printoptions(precision=10)
OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "foundation.json")


class SimpleNet(nn.Module):
    def __init__(self, input_size, hidden_size, output_size):
        super().__init__()
        self.fc1 = nn.Linear(input_size, hidden_size)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden_size, output_size)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.fc(x))


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()
        self.proj = nn.Linear(8, 4)

    def forward(self, x):
        return self.proj(self.block(x))


class Net(nn.Module):
    """Two levels of derived modules inside the model."""

    def __init__(self):
        super().__init__()
        self.encoder = Encoder()
        self.head = nn.Linear(4, 2, bias=False)

    def forward(self, x):
        return self.head(self.encoder(x))


class Empty(nn.Module):
    def forward(self, x):
        return x


def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


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
