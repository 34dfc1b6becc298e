#!/usr/bin/env python3
"""The five speed workloads in PyTorch, on this machine, beside nncore's.

Runs each workload in PyTorch (CPU, one thread by default) and, unless
--no-rust is given, `cargo bench -p nnrs-bench --bench workloads` for nncore, then prints a
side-by-side table of median times with the ratio PyTorch / nncore.
Not part of CI. Needs `pip install torch`.

    python scripts/bench_pytorch.py [--threads N] [--no-rust] [--rounds N]

With --rounds N the two frameworks alternate N times (the medians and the
median of each round's ratio are printed): this VM's speed drifts by up to
1.4x between minutes, so one round's ratio can be off by that much.

With --latency: the small-batch forwards of `cargo bench -p nnrs-bench --bench latency`
(SimpleNet and the 784-1024-1024-10 MLP at batch 1 to 16, and five other
small chains at batch 1), each framework
in --runs separate processes (PyTorch, nncore's criterion bench, and with
--peers candle and Burn from benches/peers, built beforehand with
`cd benches/peers && cargo build --release`), the median of the runs per
framework, and every ratio against nncore from that one invocation.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from models import ResBlock


def simple_net():
    return nn.Sequential(nn.Linear(100, 50), nn.ReLU(), nn.Linear(50, 10))


def mlp():
    return nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))


class ResMlp(nn.Module):
    """The written-forward workloads' model (src/workloads.rs, benches/written.rs)."""

    def __init__(self, inputs, width, blocks, outputs):
        super().__init__()
        self.stem = nn.Linear(inputs, width)
        self.blocks = nn.ModuleList([ResBlock(width) for _ in range(blocks)])
        self.head = nn.Linear(width, outputs)

    def forward(self, x):
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


def median_time(fn, min_time=2.0, min_iters=20):
    for _ in range(10):
        fn()
    samples = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_time or len(samples) < min_iters:
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def pytorch_times():
    torch.manual_seed(0)
    out = {}
    net = simple_net().eval()
    big = mlp().eval()
    x1 = torch.empty(1, 100).uniform_(-1, 1)
    x64 = torch.empty(64, 100).uniform_(-1, 1)
    x256 = torch.empty(256, 784).uniform_(-1, 1)
    with torch.inference_mode():
        out["simple_b1_fwd"] = median_time(lambda: net(x1))
        out["simple_b64_fwd"] = median_time(lambda: net(x64))
        out["mlp_b256_fwd"] = median_time(lambda: big(x256))

    def train_step(model, x, target, opt):
        def step():
            opt.zero_grad()
            loss = F.mse_loss(model(x), target)
            loss.backward()
            opt.step()
        return step

    net_t = simple_net().train()
    t64 = torch.empty(64, 10).uniform_(-1, 1)
    out["simple_b64_train"] = median_time(train_step(net_t, x64, t64, torch.optim.SGD(net_t.parameters(), lr=0.01)))
    big_t = mlp().train()
    t256 = torch.empty(256, 10).uniform_(-1, 1)
    out["mlp_b256_train"] = median_time(train_step(big_t, x256, t256, torch.optim.SGD(big_t.parameters(), lr=0.01)))
    return out


# The other small chains of benches/latency.rs (`chains`), at batch 1.
CHAINS = {
    "10_50_1_sigmoid": lambda: nn.Sequential(nn.Linear(10, 50), nn.ReLU(), nn.Linear(50, 1), nn.Sigmoid()),
    "17_33_5_nobias_gelu": lambda: nn.Sequential(nn.Linear(17, 33, bias=False), nn.GELU(), nn.Linear(33, 5, bias=False)),
    "64x3_tanh": lambda: nn.Sequential(
        nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64)),
    "784_128_10": lambda: nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10)),
    "1000_100_3": lambda: nn.Sequential(nn.Linear(1000, 100), nn.ReLU(), nn.Linear(100, 3)),
}


def pytorch_latency_times():
    torch.manual_seed(0)
    out = {}
    net = simple_net().eval()
    big = mlp().eval()
    with torch.inference_mode():
        for b in (1, 2, 4, 8, 16):
            x = torch.empty(b, 100).uniform_(-1, 1)
            out[f"simple_b{b}_fwd"] = median_time(lambda: net(x), min_time=1.0)
            x = torch.empty(b, 784).uniform_(-1, 1)
            out[f"mlp_b{b}_fwd"] = median_time(lambda: big(x), min_time=1.0)
        for name, make in CHAINS.items():
            net = make().eval()
            x = torch.empty(1, net[0].in_features).uniform_(-1, 1)
            out[f"chain_{name}_b1_fwd"] = median_time(lambda: net(x), min_time=1.0)
    return out


def pytorch_written_times():
    torch.manual_seed(0)
    out = {}
    small = ResMlp(100, 64, 2, 10).eval()
    with torch.inference_mode():
        for b in (1, 64):
            x = torch.empty(b, 100).uniform_(-1, 1)
            out[f"res_small_b{b}_fwd"] = median_time(lambda: small(x))

    def train_step(model, x, target, opt):
        def step():
            opt.zero_grad()
            loss = F.mse_loss(model(x), target)
            loss.backward()
            opt.step()
        return step

    for name, (inputs, width, blocks, batch) in {
        "res_small_b64_train": (100, 64, 2, 64),
        "res_b256_train": (784, 1024, 4, 256),
    }.items():
        m = ResMlp(inputs, width, blocks, 10).train()
        x = torch.empty(batch, inputs).uniform_(-1, 1)
        t = torch.empty(batch, 10).uniform_(-1, 1)
        out[name] = median_time(train_step(m, x, t, torch.optim.SGD(m.parameters(), lr=0.01)))
    return out


def pytorch_norm_times():
    out = {}
    ln = nn.LayerNorm(1024)
    x = torch.empty(256, 1024).uniform_(-1, 1)
    g = torch.empty(256, 1024).uniform_(-1, 1)
    with torch.inference_mode():
        out["layernorm_b256_fwd"] = median_time(lambda: ln(x))
    xr = x.clone().requires_grad_(True)

    def fwd_bwd():
        ln.zero_grad()
        xr.grad = None
        ln(xr).backward(g)
    out["layernorm_b256_fwd_bwd"] = median_time(fwd_bwd)

    bn = nn.BatchNorm1d(1024)
    bn.train()
    with torch.no_grad():
        bn(x)  # running statistics away from 0 and 1
    bn.eval()
    with torch.inference_mode():
        out["batchnorm_b256_fwd"] = median_time(lambda: bn(x))
    bn.train()

    def bn_fwd_bwd():
        bn.zero_grad()
        xr.grad = None
        bn(xr).backward(g)
    out["batchnorm_b256_fwd_bwd"] = median_time(bn_fwd_bwd)
    return out


def pytorch_conv_times():
    """LeNet-5 on 28x28 images (benches/conv.rs): eval forward at batch 1
    and 64, a training step at batch 64 (cross-entropy, SGD lr 0.01)."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(256, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )
    out = {}
    net.eval()
    with torch.inference_mode():
        for b in [1, 64]:
            x = torch.empty(b, 1, 28, 28).uniform_(-1, 1)
            out[f"lenet_b{b}_fwd"] = median_time(lambda: net(x))
    net.train()
    x = torch.empty(64, 1, 28, 28).uniform_(-1, 1)
    labels = torch.tensor([(i * 7) % 10 for i in range(64)])
    opt = torch.optim.SGD(net.parameters(), lr=0.01)

    def step():
        opt.zero_grad()
        F.cross_entropy(net(x), labels).backward()
        opt.step()
    out["lenet_b64_train"] = median_time(step)
    return out


UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def rust_times(threads, bench="workloads"):
    env = dict(os.environ, NNRS_THREADS=str(threads))
    root = os.path.join(os.path.dirname(__file__), "..")
    # The latency bench's crossover lines (`rows/`, `gemm/`) are not compared.
    only = ["--", "_fwd"] if bench == "latency" else []
    proc = subprocess.run(
        ["cargo", "bench", "-p", "nnrs-bench", "--bench", bench] + only, cwd=root, env=env, capture_output=True, text=True, check=True
    )
    out = {}
    name = None
    for line in proc.stdout.splitlines():
        line = line.strip()
        m = re.match(r"^([\w/]+?)(?:_t\d+)?(?:\s+time:\s+\[\S+ \S+ (\S+) (\S+).*)?$", line)
        if m and m.group(2) is None:
            name = m.group(1)
            continue
        m = re.match(r"^(?:([\w/]+?)(?:_t\d+)?\s+)?time:\s+\[\S+ \S+ (\S+) (\S+)", line)
        if m:
            key = m.group(1) or name
            # Grouped benches: "res_b256_train/written" is nncore's written
            # forward, ".../hand" the hand-written one.
            key = key.replace("/written", "").replace("/hand", "_hand")
            out[key] = float(m.group(2)) * UNITS[m.group(3)]
    return out


def peer_times(threads):
    """candle and Burn (benches/peers, built beforehand), latency workloads."""
    root = os.path.join(os.path.dirname(__file__), "..", "benches", "peers")
    exe = os.path.join(root, "target", "release", "nnrs-peers")
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    proc = subprocess.run([exe, "latency"], env=env, capture_output=True, text=True, check=True)
    out = {}
    for line in proc.stdout.splitlines():
        fw, name, value, unit = line.split()
        out.setdefault(fw, {})[name] = float(value) * UNITS[unit]
    return out


def latency_main(args):
    """Every framework in `args.runs` processes; medians; ratios vs nncore."""
    here = os.path.abspath(__file__)
    runs = {"pytorch": [], "nncore": [], "candle": [], "burn": []}
    for i in range(args.runs):
        print(f"run {i + 1}/{args.runs}", file=sys.stderr)
        proc = subprocess.run(
            [sys.executable, here, "--latency-child", "--threads", str(args.threads)],
            capture_output=True, text=True, check=True,
        )
        runs["pytorch"].append(json.loads(proc.stdout))
        runs["nncore"].append(rust_times(args.threads, "latency"))
        if args.peers:
            for fw, t in peer_times(args.threads).items():
                runs[fw].append(t)
    med = {}
    for fw, rs in runs.items():
        if rs:
            med[fw] = {k: statistics.median(r[k] for r in rs if k in r) for k in rs[0]}
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.runs} process(es) per framework")
    peers = [fw for fw in ("pytorch", "candle", "burn") if fw in med]
    head = f"{'workload':<18} {'nncore fwd':>11} {'fwd_into':>11}" + "".join(f" {fw:>11}" for fw in peers)
    print(head + "".join(f" {fw + '/nncore':>15}" for fw in peers))
    for b in (1, 2, 4, 8, 16):
        for model in ("simple", "mlp"):
            k = f"{model}_b{b}_fwd"
            ours = med["nncore"].get(k)
            into = med["nncore"].get(k + "_into")
            line = f"{k:<18} {fmt(ours) if ours else '-':>11} {fmt(into) if into else '-':>11}"
            line += "".join(f" {fmt(med[fw][k]):>11}" for fw in peers)
            line += "".join(f" {med[fw][k] / ours:>14.1f}x" for fw in peers if ours)
            print(line)
    for name in CHAINS:
        k = f"chain_{name}_b1_fwd"
        ours = med["nncore"].get(k)
        into = med["nncore"].get(k + "_into")
        print(f"{name} (batch 1)")
        line = f"{'':<18} {fmt(ours) if ours else '-':>11} {fmt(into) if into else '-':>11}"
        line += "".join(f" {fmt(med[fw][k]):>11}" for fw in peers)
        line += "".join(f" {med[fw][k] / ours:>14.1f}x" for fw in peers if ours)
        print(line)
    json.dump(med, sys.stderr)
    print(file=sys.stderr)


def fmt(t):
    if t < 1e-3:
        return f"{t * 1e6:.2f} µs"
    return f"{t * 1e3:.2f} ms"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-rust", action="store_true")
    ap.add_argument("--written", action="store_true", help="the written-forward (residual) workloads")
    ap.add_argument("--norm", action="store_true", help="LayerNorm and BatchNorm1d at 256 x 1024")
    ap.add_argument("--conv", action="store_true", help="LeNet-5 on 28x28 images")
    ap.add_argument("--latency", action="store_true", help="batch 1-16 forwards, several processes")
    ap.add_argument("--latency-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--runs", type=int, default=3, help="processes per framework (--latency)")
    ap.add_argument("--peers", action="store_true", help="also candle and Burn (--latency)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="alternate PyTorch and nncore this many times, report medians (not --latency)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.latency_child:
        json.dump(pytorch_latency_times(), sys.stdout)
        return
    if args.latency:
        latency_main(args)
        return
    bench = "written" if args.written else "norm" if args.norm else "conv" if args.conv else "workloads"
    py_fn = {"written": pytorch_written_times, "norm": pytorch_norm_times, "conv": pytorch_conv_times,
             "workloads": pytorch_times}[bench]
    # This machine's speed drifts between minutes: alternate the two
    # frameworks --rounds times and report medians, and the median of the
    # rounds' own ratios (each round's two sides ran minutes apart, not hours).
    pys, rss = [], []
    for _ in range(args.rounds):
        pys.append(py_fn())
        if not args.no_rust:
            rss.append(rust_times(args.threads, bench))
    py = {k: statistics.median(p[k] for p in pys) for k in pys[0]}
    rs = {k: statistics.median(r[k] for r in rss if k in r) for k in rss[0]} if rss else {}
    round_ratios = {k: statistics.median(p[k] / r[k] for p, r in zip(pys, rss) if k in r)
                    for k in py if rss and k in rss[0]}
    flops = {"mlp_b256_fwd": 2 * 256 * (784 * 1024 + 1024 * 1024 + 1024 * 10)}
    flops["mlp_b256_train"] = 3 * flops["mlp_b256_fwd"]
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    print(f"{'workload':<18} {'PyTorch':>12} {'nncore':>12} {'PyTorch/nncore':>15}")
    for k, t in py.items():
        r = rs.get(k)
        extra = f"   ({flops[k] / t / 1e9:.0f} vs {flops[k] / r / 1e9:.0f} GFLOP/s)" if k in flops and r else ""
        hand = rs.get(k + "_hand")
        extra += f"   (hand-written: {fmt(hand)})" if hand else ""
        if args.rounds > 1 and k in round_ratios:
            each = ", ".join(f"{p[k] / r[k]:.2f}" for p, r in zip(pys, rss) if k in r)
            extra += f"   (rounds' ratios {each}; median {round_ratios[k]:.2f}x)"
        print(f"{k:<20} {fmt(t):>12} {fmt(r) if r else '-':>12} {(t / r) if r else float('nan'):>14.2f}x{extra}")
    json.dump({"pytorch": pys, "nncore": rss}, sys.stderr)
    print(file=sys.stderr)


if __name__ == "__main__":
    main()
