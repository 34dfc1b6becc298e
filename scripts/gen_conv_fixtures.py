#!/usr/bin/env python3
"""Reference values for the image layers, computed by real PyTorch.

Writes tests/fixtures/conv.json and tests/fixtures/cnn_trained.safetensors:
- "models": three CNNs built right after torch.manual_seed(0) (so the
  convolution and Linear weights are PyTorch's initial ones), mixing stride,
  padding (numbers, "same"), dilation, groups, no bias, MaxPool2d (with
  padding and ceil_mode), AvgPool2d (with padding), AdaptiveAvgPool2d,
  BatchNorm2d and Flatten; the third a ResNet written with its own
  forwards (skip connections, a ReLU used twice, channels concatenated,
  chunked, narrowed, scaled and gated). For each: print text, parameter and buffer
  names, state_dict shapes, the initial state; in training mode the output
  for an input, the gradient of every parameter and of the input for
  L = sum(out * w), the buffers after; then 3 steps of SGD(lr=0.1,
  momentum=0.9) (parameters and buffers after); then in eval mode the
  output for a second input.
- "reprs": print texts of layer variants.
- "errors": PyTorch's messages for bad inputs.
- cnn_trained.safetensors: the "cnn" model's state_dict after its steps.

Rerun:  python scripts/gen_conv_fixtures.py
        (needs `pip install torch safetensors`)
"""
import json
import os

import torch
import torch.nn as nn
from safetensors.torch import save_file

from models import error, flat, grads, state

HERE = os.path.dirname(__file__)
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures")


class Cnn(nn.Module):
    """Input (N, 2, 9, 8)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 4, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2, bias=False)
        self.avg = nn.AvgPool2d(2, stride=1, padding=1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(36, 5)

    def forward(self, x):
        x = self.pool(self.relu(self.bn(self.conv1(x))))
        return self.fc(self.flat(self.avg(self.conv2(x))))


class Same(nn.Module):
    """Input (N, 1, 7, 9)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, (4, 3), padding="same", dilation=(1, 2))
        self.act = nn.Tanh()
        self.pool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.conv2 = nn.Conv2d(3, 3, 2, stride=2, padding="valid", groups=3)
        self.adapt = nn.AdaptiveAvgPool2d((2, 3))
        self.flat = nn.Flatten()
        self.fc = nn.Linear(18, 2)

    def forward(self, x):
        x = self.pool(self.act(self.conv(x)))
        return self.fc(self.flat(self.adapt(self.conv2(x))))


class BasicBlock(nn.Module):
    """ResNet's basic block: one ReLU used twice, a skip connection."""

    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class Mix(nn.Module):
    """Channels concatenated, chunked, narrowed, scaled and gated."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(4, 2, 1)
        self.b = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x):
        y = torch.cat([self.a(x), self.b(x)], dim=1)
        p, q = y.chunk(2, dim=1)
        return torch.cat([q * 2.0, torch.sigmoid(p).narrow(1, 0, 2)], 1)


class ResNet(nn.Module):
    """Input (N, 1, 6, 5): a stem, two basic blocks in a loop, the mix, pooling."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.blocks = nn.ModuleList([BasicBlock(4), BasicBlock(4)])
        self.mix = Mix()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        for block in self.blocks:
            x = block(x)
        x = self.mix(x)
        return self.fc(self.flat(self.pool(x)))


def run(cls, shape, seed):
    torch.manual_seed(0)
    model = cls()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(*shape, generator=g) * 4 - 2
    # Ties in max pooling: the first maximum takes the gradient.
    x.view(-1)[:4] = 1.0
    out_features = model.fc.out_features
    w = torch.rand(shape[0], out_features, generator=g) * 2 - 1
    x2 = torch.rand(2, *shape[1:], generator=g) * 4 - 2
    case = {
        "repr": repr(model),
        "names": [n for n, _ in model.named_parameters()],
        "buffers": [n for n, _ in model.named_buffers()],
        "keys": list(model.state_dict().keys()),
        "shapes": [list(t.shape) for t in model.state_dict().values()],
        "initial": state(model),
        "x_shape": list(x.shape),
        "x": flat(x),
        "w": flat(w),
    }
    model.train()
    xg = x.clone().requires_grad_(True)
    out = model(xg)
    (out * w).sum().backward()
    case["train"] = {"out": flat(out), "grads": grads(model), "dx": flat(xg.grad), "state": state(model)}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        (model(x) * w).sum().backward()
        opt.step()
    case["sgd"] = state(model)
    model.eval()
    with torch.no_grad():
        case["eval"] = {"x_shape": list(x2.shape), "x": flat(x2), "out": flat(model(x2))}
    return model, case


def main():
    cnn, cnn_case = run(Cnn, (3, 2, 9, 8), 5)
    _, same_case = run(Same, (2, 1, 7, 9), 6)
    _, resnet_case = run(ResNet, (3, 1, 6, 5), 8)
    sd = {k: v.contiguous() for k, v in cnn.state_dict().items()}
    save_file(sd, os.path.join(FIXTURES, "cnn_trained.safetensors"), metadata={"format": "pt"})

    reprs = [repr(m) for m in [
        nn.Conv2d(1, 8, 3),
        nn.Conv2d(2, 8, (3, 5), stride=2, padding=1, dilation=2, groups=2, bias=False),
        nn.Conv2d(1, 8, 3, padding="same"),
        nn.Conv2d(1, 8, 3, padding="valid"),
        nn.Conv2d(1, 8, 3, padding=(1, 2)),
        nn.MaxPool2d(2),
        nn.MaxPool2d((2, 3), stride=1, padding=1),
        nn.MaxPool2d(3, stride=2, padding=1, dilation=2, ceil_mode=True),
        nn.AvgPool2d(2),
        nn.AvgPool2d(3, 2, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.AdaptiveAvgPool2d((2, 3)),
        nn.Flatten(),
        nn.Flatten(2, 3),
        nn.BatchNorm2d(4),
        nn.BatchNorm2d(4, eps=1e-3, momentum=None, affine=False),
        nn.Dropout2d(0.25),
    ]]
    # Single pooling layers on inputs full of ties (small integers): the
    # gradient goes to the first maximum of each window.
    g = torch.Generator().manual_seed(7)
    pools = []
    for name, layer in [
        ("max3_pad1", nn.MaxPool2d(3, stride=1, padding=1)),
        ("max_dilated", nn.MaxPool2d((2, 3), stride=(1, 2), padding=(1, 1), dilation=(1, 2))),
        ("max_ceil", nn.MaxPool2d(2, stride=2, ceil_mode=True)),
        ("avg_ceil_nopad", nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
        ("avg_ceil_pad", nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True)),
        ("adaptive_up", nn.AdaptiveAvgPool2d((6, 4))),
        ("adaptive_down", nn.AdaptiveAvgPool2d((2, 3))),
    ]:
        x = torch.randint(-2, 3, (2, 3, 5, 7), generator=g).float().requires_grad_(True)
        y = layer(x)
        w = torch.rand(*y.shape, generator=g) * 2 - 1
        (y * w).sum().backward()
        pools.append({"name": name, "x": flat(x), "out_shape": list(y.shape), "out": flat(y), "w": flat(w), "dx": flat(x.grad)})

    conv = nn.Conv2d(1, 8, 3)
    errors = {
        "channels": error(lambda: conv(torch.zeros(4, 3, 8, 8))),
        "too_small": error(lambda: conv(torch.zeros(4, 1, 2, 2))),
        "dilated_too_small": error(lambda: nn.Conv2d(1, 8, 3, dilation=2)(torch.zeros(1, 1, 4, 4))),
        "pool_too_small": error(lambda: nn.MaxPool2d(2)(torch.zeros(1, 1, 1, 1))),
        "same_strided": error(lambda: nn.Conv2d(1, 8, 3, stride=2, padding="same")),
        "groups": error(lambda: nn.Conv2d(3, 8, 3, groups=2)),
        "bn_channels": error(lambda: nn.BatchNorm2d(3)(torch.zeros(2, 4, 3, 3))),
        # Inputs that are not 4-d: a (batch, features) matrix, a 5-d tensor.
        "conv_2d": error(lambda: conv(torch.zeros(2, 64))),
        "conv_5d": error(lambda: conv(torch.zeros(2, 1, 2, 4, 4))),
        "maxpool_5d": error(lambda: nn.MaxPool2d(2)(torch.zeros(2, 1, 2, 4, 4))),
        "avgpool_5d": error(lambda: nn.AvgPool2d(2)(torch.zeros(2, 1, 2, 4, 4))),
        "bn_2d": error(lambda: nn.BatchNorm2d(3)(torch.zeros(2, 64))),
        "bn_5d": error(lambda: nn.BatchNorm2d(3)(torch.zeros(2, 1, 2, 4, 4))),
    }
    out_path = os.path.join(FIXTURES, "conv.json")
    with open(out_path, "w") as f:
        json.dump({"torch": torch.__version__, "models": {"cnn": cnn_case, "same": same_case, "resnet": resnet_case},
                   "pools": pools, "reprs": reprs, "errors": errors}, f, indent=1)
        f.write("\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
