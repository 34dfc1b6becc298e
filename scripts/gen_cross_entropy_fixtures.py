#!/usr/bin/env python3
"""Reference values for CrossEntropyLoss with every option, computed by real
PyTorch (CPU, float32).

Writes tests/fixtures/cross_entropy.json: 19 rows of 7 logits (spread from
-30 to 30, one logit of -200), labels with some rows
ignored, and for each case (class weights, ignore_index, label smoothing,
each reduction, and their combinations) the loss and the gradient of
sum(loss * w) (`reduction='none'`) or of the loss with respect to the
logits.

Rerun:  python scripts/gen_cross_entropy_fixtures.py   (needs `pip install torch`)
"""
import json
import os

import torch
import torch.nn as nn

from models import flat

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "cross_entropy.json")

N, C = 19, 7


def data():
    g = torch.Generator().manual_seed(11)
    x = (torch.rand(N, C, generator=g) * 2.0 - 1.0) * 8.0
    x[3] *= 4.0  # logits up to about 30
    x[5, 4] = -200.0  # e^-200 is 0 in f32
    labels = torch.randint(0, C, (N,), generator=g)
    labels[[4, 9, 15]] = -100
    weight = torch.rand(C, generator=g) * 2.0 + 0.1
    w = torch.rand(N, generator=g) * 2.0 - 1.0
    return x, labels, weight, w


def case(name, x, labels, w, **kw):
    x = x.clone().requires_grad_(True)
    loss = nn.CrossEntropyLoss(**kw)(x, labels)
    if loss.dim() == 1:
        (loss * w).sum().backward()
    else:
        loss.backward()
    out = {"name": name, "loss": flat(loss), "grad": flat(x.grad)}
    out.update({k: (flat(v) if torch.is_tensor(v) else v) for k, v in kw.items()})
    return out


def main():
    x, labels, weight, w = data()
    cases = []
    for reduction in ["mean", "sum", "none"]:
        cases.append(case(f"plain_{reduction}", x, labels, w, reduction=reduction))
        cases.append(case(f"weight_{reduction}", x, labels, w, reduction=reduction, weight=weight))
        cases.append(case(f"smooth_{reduction}", x, labels, w, reduction=reduction, label_smoothing=0.2))
        cases.append(
            case(f"all_{reduction}", x, labels, w, reduction=reduction, weight=weight, label_smoothing=0.3)
        )
    cases.append(case("ignore_3", x, labels.clamp(min=0), w, ignore_index=3))
    fx = {
        "torch_version": torch.__version__,
        "rows": N,
        "classes": C,
        "logits": flat(x),
        "labels": [int(v) for v in labels.tolist()],
        "labels_clamped": [int(v) for v in labels.clamp(min=0).tolist()],
        "w": flat(w),
        "cases": cases,
    }
    with open(OUT, "w") as f:
        json.dump(fx, f)
        f.write("\n")
    print(f"wrote {os.path.normpath(OUT)} (torch {torch.__version__}, {len(cases)} cases)")


if __name__ == "__main__":
    main()
