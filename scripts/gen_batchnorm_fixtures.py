#!/usr/bin/env python3
"""Reference values for BatchNorm1d and buffers, computed by real PyTorch.

Writes tests/fixtures/batchnorm.json and two safetensors files:
- "model": BnNet (Linear -> BatchNorm1d -> ReLU -> Linear -> BatchNorm1d
  with momentum=None and bias=False) after torch.manual_seed(0), with
  non-trivial affine parameters: print text, parameter and buffer names,
  state_dict keys and shapes, the initial state; in training mode the
  output for an input, the gradient of every parameter and of the input
  for L = sum(out * w), and the buffers after that forward; then 3 steps of
  SGD(lr=0.1, momentum=0.9) in training mode (parameters and buffers after);
  then in eval mode the output and gradients for a second input.
- "untracked": BatchNorm1d(3, track_running_stats=False) in eval mode
  (batch statistics, no buffers): output and input gradient.
- "reprs": print texts of BatchNorm1d variants.
- tests/fixtures/batchnorm_trained.safetensors: the model's state_dict after
  the steps above, saved by safetensors.torch.save_file (float32 tensors and
  the int64 num_batches_tracked scalars).
- tests/fixtures/batchnorm_no_counter.safetensors: the same without the
  num_batches_tracked entries (old PyTorch files), which PyTorch loads
  strictly.

Rerun:  python scripts/gen_batchnorm_fixtures.py
        (needs `pip install torch safetensors`)
"""
import json
import os

import torch
import torch.nn as nn
from safetensors.torch import save_file

from models import flat, grads, state

HERE = os.path.dirname(__file__)
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures")


class BnNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.bn1 = nn.BatchNorm1d(8)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(8, 4)
        self.bn2 = nn.BatchNorm1d(4, eps=1e-3, momentum=None, bias=False)

    def forward(self, x):
        return self.bn2(self.fc2(self.relu(self.bn1(self.fc1(x)))))


def main():
    torch.manual_seed(0)
    model = BnNet()
    g = torch.Generator().manual_seed(11)
    x = torch.rand(5, 6, generator=g) * 4 - 2
    w = torch.rand(5, 4, generator=g) * 2 - 1
    x2 = torch.rand(3, 6, generator=g) * 4 - 2
    w2 = torch.rand(3, 4, generator=g) * 2 - 1
    with torch.no_grad():
        model.bn1.weight.copy_(torch.rand(8, generator=g) + 0.5)
        model.bn1.bias.copy_(torch.rand(8, generator=g) - 0.5)
        model.bn2.weight.copy_(torch.rand(4, generator=g) + 0.5)
    case = {
        "repr": repr(model),
        "names": [n for n, _ in model.named_parameters()],
        "buffers": [n for n, _ in model.named_buffers()],
        "keys": list(model.state_dict().keys()),
        "shapes": [list(t.shape) for t in model.state_dict().values()],
        "initial": state(model),
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
    opt.zero_grad()
    x2g = x2.clone().requires_grad_(True)
    out2 = model(x2g)
    (out2 * w2).sum().backward()
    case["eval"] = {"x": flat(x2), "w": flat(w2), "out": flat(out2), "grads": grads(model), "dx": flat(x2g.grad)}

    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(FIXTURES, "batchnorm_trained.safetensors"), metadata={"format": "pt"})
    old = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    save_file(old, os.path.join(FIXTURES, "batchnorm_no_counter.safetensors"), metadata={"format": "pt"})
    check = BnNet()
    check.load_state_dict(old, strict=True)  # PyTorch fills the counters in

    bn = nn.BatchNorm1d(3, track_running_stats=False)
    bn.eval()
    xu = (torch.rand(4, 3, generator=g) * 2 - 1).requires_grad_(True)
    wu = torch.rand(4, 3, generator=g)
    yu = bn(xu)
    (yu * wu).sum().backward()
    untracked = {"x": flat(xu), "w": flat(wu), "out": flat(yu), "dx": flat(xu.grad), "keys": list(bn.state_dict().keys())}

    reprs = [repr(m) for m in [
        nn.BatchNorm1d(64),
        nn.BatchNorm1d(8, eps=1e-3, momentum=None),
        nn.BatchNorm1d(5, affine=False),
        nn.BatchNorm1d(5, bias=False),
        nn.BatchNorm1d(3, momentum=0.01, track_running_stats=False),
        nn.BatchNorm1d(2, eps=0.1, momentum=1.0, affine=False, track_running_stats=False),
    ]]
    out_path = os.path.join(FIXTURES, "batchnorm.json")
    with open(out_path, "w") as f:
        json.dump({"torch": torch.__version__, "model": case, "untracked": untracked, "reprs": reprs}, f, indent=1)
        f.write("\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
