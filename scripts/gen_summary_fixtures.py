#!/usr/bin/env python3
"""Reference texts for nncore::summary, printed by real torchinfo.

Writes tests/fixtures/summary.json: for models of the other fixtures
(SimpleNet, Net, the composition models with Sequential and ModuleList,
containers nested three levels, LayerNorm and BatchNorm1d models, a frozen
head, the large MLP at a batch that reaches giga-mult-adds, the residual
model of the written-forward workloads, the two CNNs of the image fixtures
and LeNet-5 at batch 512), the text of
`str(torchinfo.summary(model, input_size=shape, verbose=0))`
with torchinfo's defaults (depth 3, columns output size and parameter
count, rows with depth-idx).

The text is what this torchinfo prints under this Python: the units of the
mult-adds line read "(Units.MEGABYTES)" under Python 3.11+ (an enum
formatting change torchinfo has not followed).

Rerun:  python scripts/gen_summary_fixtures.py
        (needs `pip install torch torchinfo`)
"""
import json
import os
import platform

import torch
import torch.nn as nn
import torchinfo

from models import Net, SimpleNet
from gen_composition_fixtures import Blocks, Deep, Stack, WithSeq
from gen_norm_fixtures import LnNet
from gen_batchnorm_fixtures import BnNet
from bench_pytorch import ResMlp
from gen_conv_fixtures import Cnn, Same

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "summary.json")


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 1024)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(1024, 1024)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(1024, 10)

    def forward(self, x):
        return self.fc3(self.relu2(self.fc2(self.relu1(self.fc1(x)))))


class LeNet(nn.Module):
    """LeNet-5 for 28x28 images (src/workloads.rs)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flat = nn.Flatten()
        self.fc1 = nn.Linear(256, 120)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(120, 84)
        self.relu4 = nn.ReLU()
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.flat(self.pool2(self.relu2(self.conv2(x))))
        return self.fc3(self.relu4(self.fc2(self.relu3(self.fc1(x)))))


def frozen_head():
    m = WithSeq(True)
    m.head.requires_grad_(False)
    return m


CASES = [
    ("simple_net", lambda: SimpleNet(100, 50, 10), (32, 100)),
    ("net", Net, (5, 8)),
    ("stack", Stack, (2, 16)),
    ("blocks", Blocks, (3, 6)),
    ("with_seq", lambda: WithSeq(True), (32, 6)),
    ("with_seq_none", lambda: WithSeq(False), (1, 6)),
    ("frozen_head", frozen_head, (1, 6)),
    ("deep", Deep, (7, 4)),
    ("ln_net", LnNet, (5, 6)),
    ("bn_net", BnNet, (5, 6)),
    ("mlp_b4096", Mlp, (4096, 784)),
    ("res_mlp", lambda: ResMlp(100, 64, 2, 10), (1, 100)),
    ("cnn", Cnn, (3, 2, 9, 8)),
    ("same", Same, (2, 1, 7, 9)),
    ("lenet_b512", lambda: LeNet(), (512, 1, 28, 28)),
]


def main():
    out = {"torch": torch.__version__, "torchinfo": torchinfo.__version__, "python": platform.python_version(), "cases": []}
    for name, make, shape in CASES:
        torch.manual_seed(0)
        model = make()
        text = str(torchinfo.summary(model, input_size=shape, verbose=0))
        out["cases"].append({"name": name, "input": list(shape), "text": text})
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
