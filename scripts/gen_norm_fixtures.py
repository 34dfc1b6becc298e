#!/usr/bin/env python3
"""Reference values for LayerNorm and gradient clipping, computed by real
PyTorch.

Writes tests/fixtures/norm.json:
- "model": LnNet (Linear -> LayerNorm -> ReLU -> Linear -> LayerNorm without
  bias) after torch.manual_seed(0): print text, parameter names and shapes,
  initial state, forward output for an input, the gradient of every
  parameter and of the input for L = sum(out * w), and the parameters after
  3 steps of SGD(lr=0.1, momentum=0.9).
- "reprs": print texts of LayerNorm variants.
- "clip": from the gradients above, clip_grad_norm_ (2-norm, max 0.5; inf
  norm, max 0.1; 3-norm, max 100) total norms and clipped gradients, and
  clip_grad_value_(0.05) gradients.

Rerun:  python scripts/gen_norm_fixtures.py   (needs `pip install torch`)
"""
import json
import os

import torch
import torch.nn as nn

from models import flat, grads

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "norm.json")


class LnNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.ln1 = nn.LayerNorm(8)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(8, 4)
        self.ln2 = nn.LayerNorm(4, eps=1e-3, bias=False)

    def forward(self, x):
        return self.ln2(self.fc2(self.relu(self.ln1(self.fc1(x)))))


def main():
    torch.manual_seed(0)
    model = LnNet()
    g = torch.Generator().manual_seed(7)
    x = torch.rand(5, 6, generator=g) * 4 - 2
    w = torch.rand(5, 4, generator=g) * 2 - 1
    # Non-trivial affine parameters, so that their gradients matter.
    with torch.no_grad():
        model.ln1.weight.copy_(torch.rand(8, generator=g) + 0.5)
        model.ln1.bias.copy_(torch.rand(8, generator=g) - 0.5)
        model.ln2.weight.copy_(torch.rand(4, generator=g) + 0.5)
    state = {n: flat(p) for n, p in model.named_parameters()}
    xg = x.clone().requires_grad_(True)
    out = model(xg)
    (out * w).sum().backward()
    model_case = {
        "repr": repr(model),
        "names": [n for n, _ in model.named_parameters()],
        "shapes": [list(p.shape) for _, p in model.named_parameters()],
        "state": state,
        "x": flat(x),
        "w": flat(w),
        "out": flat(out),
        "grads": grads(model),
        "dx": flat(xg.grad),
    }
    base = {n: p.grad.clone() for n, p in model.named_parameters()}

    def reset():
        for n, p in model.named_parameters():
            p.grad = base[n].clone()

    clip = {}
    for name, max_norm, norm_type in [("l2", 0.5, 2.0), ("inf", 0.1, float("inf")), ("l3_no_clip", 100.0, 3.0)]:
        reset()
        total = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm, norm_type=norm_type)
        clip[name] = {"max_norm": max_norm, "norm_type": norm_type if norm_type != float("inf") else "inf",
                      "total": float(total), "grads": grads(model)}
    reset()
    torch.nn.utils.clip_grad_value_(model.parameters(), 0.05)
    clip["value"] = {"clip_value": 0.05, "grads": grads(model)}

    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        (model(x) * w).sum().backward()
        opt.step()
    model_case["sgd"] = {n: flat(p) for n, p in model.named_parameters()}

    reprs = [repr(m) for m in [nn.LayerNorm(64), nn.LayerNorm(8, eps=1e-3, elementwise_affine=False),
                               nn.LayerNorm(5, bias=False), nn.LayerNorm(3, eps=0.1)]]
    with open(OUT, "w") as f:
        json.dump({"torch": torch.__version__, "model": model_case, "reprs": reprs, "clip": clip}, f, indent=1)
        f.write("\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
