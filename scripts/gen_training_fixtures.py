#!/usr/bin/env python3
"""Reference values for the training tests, computed by real PyTorch.

Writes tests/fixtures/training.json. For SimpleNet and a nested model, both
built after torch.manual_seed (nncore's generator draws the same weights):
the forward output; MSE, cross-entropy and BCE-with-logits losses with
their gradients (several reductions, label smoothing); every parameter's
gradient; gradient accumulation over two backward calls; and every
parameter after 5 optimizer steps for SGD (plain, momentum + weight decay,
Nesterov, dampening), Adam (plain, weight decay + AMSGrad), AdamW, and SGD
with a frozen parameter.

Rerun:  python scripts/gen_training_fixtures.py   (needs `pip install torch`)
"""
import json
import os

import torch
import torch.nn as nn

from models import SimpleNet, Block, Encoder, Net, flat
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "training.json")


def grads(model):
    return {n: flat(p.grad) for n, p in model.named_parameters() if p.grad is not None}


def params(model):
    return {n: flat(p) for n, p in model.named_parameters()}


OPTIMIZERS = {
    "sgd": ("mse", lambda p: torch.optim.SGD(p, lr=0.1)),
    "sgd_momentum_wd": ("mse", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01)),
    "sgd_nesterov": ("ce", lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True)),
    "sgd_dampening": ("ce", lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.5, dampening=0.3)),
    "adam": ("ce", lambda p: torch.optim.Adam(p, lr=0.01)),
    "adam_wd_amsgrad": ("mse", lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.01, amsgrad=True)),
    "adamw": ("mse", lambda p: torch.optim.AdamW(p, lr=0.01)),
    "sgd_frozen": ("mse", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
}


def record(name, seed, make, in_features, batch, labels):
    torch.manual_seed(seed)
    model = make()
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = torch.empty(batch, in_features).uniform_(-1.0, 1.0)
    y0 = model(x)
    target = torch.empty(*y0.shape).uniform_(-1.0, 1.0)
    x2 = torch.empty(batch, in_features).uniform_(-1.0, 1.0)
    labels_t = torch.tensor(labels)
    bce_target = (target > 0).float()
    class_weight = torch.linspace(0.5, 2.0, y0.shape[1])
    entry = {
        "name": name,
        "seed": seed,
        "input_shape": list(x.shape),
        "input": flat(x),
        "x2": flat(x2),
        "target_shape": list(target.shape),
        "target": flat(target),
        "labels": labels,
        "class_weight": flat(torch.linspace(0.5, 2.0, y0.shape[1])),
        "output": flat(y0),
    }

    def loss_of(kind, out):
        return F.mse_loss(out, target) if kind == "mse" else F.cross_entropy(out, labels_t)

    # Losses with their gradient with respect to the output.
    losses = {}
    for key, fn in {
        "mse_mean": lambda o: F.mse_loss(o, target),
        "mse_sum": lambda o: F.mse_loss(o, target, reduction="sum"),
        "mse_none": lambda o: F.mse_loss(o, target, reduction="none"),
        "ce_mean": lambda o: F.cross_entropy(o, labels_t),
        "ce_sum": lambda o: F.cross_entropy(o, labels_t, reduction="sum"),
        "ce_none": lambda o: F.cross_entropy(o, labels_t, reduction="none"),
        "ce_smooth": lambda o: F.cross_entropy(o, labels_t, label_smoothing=0.1),
        "ce_weighted": lambda o: F.cross_entropy(o, labels_t, weight=class_weight),
        "ce_weighted_smooth": lambda o: F.cross_entropy(o, labels_t, weight=class_weight, label_smoothing=0.2),
        "ce_weighted_sum": lambda o: F.cross_entropy(o, labels_t, weight=class_weight, reduction="sum"),
        "bce_mean": lambda o: F.binary_cross_entropy_with_logits(o, bce_target),
        "bce_none": lambda o: F.binary_cross_entropy_with_logits(o, bce_target, reduction="none"),
    }.items():
        out = y0.detach().clone().requires_grad_(True)
        loss = fn(out)
        loss.backward(torch.ones_like(loss))
        losses[key] = {"loss": flat(loss), "grad": flat(out.grad)}
    entry["losses"] = losses

    # Parameter gradients and dL/dx for each loss.
    for kind in ("mse", "ce"):
        model.zero_grad()
        xg = x.clone().requires_grad_(True)
        loss_of(kind, model(xg)).backward()
        entry[f"grads_{kind}"] = grads(model)
        entry[f"grad_input_{kind}"] = flat(xg.grad)

    # Accumulation: backward on x, then on x2, no zero_grad between.
    model.zero_grad()
    F.mse_loss(model(x), target).backward()
    F.mse_loss(model(x2), target).backward()
    entry["grads_accumulated_mse"] = grads(model)

    # Optimizer trajectories, each from the initial weights.
    traj = {}
    for key, (kind, make_opt) in OPTIMIZERS.items():
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(init[n])
                p.requires_grad_(True)
        first = next(iter(model.parameters()))
        if key == "sgd_frozen":
            first.requires_grad_(False)
        model.zero_grad(set_to_none=True)
        opt = make_opt(model.parameters())
        for _ in range(5):
            opt.zero_grad()
            loss_of(kind, model(x)).backward()
            opt.step()
        traj[key] = {"loss": kind, "params": params(model)}
        first.requires_grad_(True)
    entry["trajectories"] = traj
    return entry


def main():
    cases = [
        record("simple_net", 10, lambda: SimpleNet(6, 5, 3), 6, 4, [0, 2, 1, 2]),
        record("nested", 11, Net, 8, 5, [0, 1, 1, 0, 1]),
    ]
    with open(OUT, "w") as f:
        json.dump({"torch_version": torch.__version__, "cases": cases}, f)
        f.write("\n")
    print(f"wrote {os.path.normpath(OUT)} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
