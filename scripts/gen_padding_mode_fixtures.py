#!/usr/bin/env python3
"""Reference values for Conv2d's padding modes, computed by real PyTorch.

Writes tests/fixtures/conv_padding_modes.json: for each case, a Conv2d built
right after torch.manual_seed(0) (PyTorch's initial weights) with
padding_mode "reflect", "replicate" or "circular" ("zeros" for the
first case), its print text, the output for an input, and for L = sum(out * w)
the gradients of the weight, the bias and the input. Cases mix explicit
padding (equal and unequal per side), "same" (asymmetric for even
kernels), stride, dilation and groups. Then PyTorch's errors for
paddings the mode cannot take.

Rerun:  python scripts/gen_padding_mode_fixtures.py
        (needs `pip install torch`)
"""
import json
import os

import torch
import torch.nn as nn

from models import error, flat

HERE = os.path.dirname(__file__)
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures")

# (in, out, kernel, stride, padding, dilation, groups, bias, input shape)
CASES = [
    (2, 3, 3, 1, 1, 1, 1, True, (2, 2, 4, 5)),
    (2, 4, (3, 2), (2, 1), (2, 1), 1, 2, False, (2, 2, 5, 4)),
    (1, 2, 3, 1, "same", 2, 1, True, (1, 1, 5, 6)),
    (1, 2, (4, 2), 1, "same", 1, 1, True, (1, 1, 5, 4)),
    (3, 2, 2, 2, (1, 3), (1, 2), 1, True, (1, 3, 4, 6)),
]
MODES = ["zeros", "reflect", "replicate", "circular"]


def main():
    cases = []
    g = torch.Generator().manual_seed(11)
    for (cin, cout, k, s, p, d, groups, bias, shape) in CASES:
        # "zeros" once, as the reference the other modes differ from.
        for mode in MODES if not cases else MODES[1:]:
            torch.manual_seed(0)
            conv = nn.Conv2d(cin, cout, k, stride=s, padding=p, dilation=d, groups=groups,
                             bias=bias, padding_mode=mode)
            x = (torch.rand(*shape, generator=g) * 4 - 2).requires_grad_(True)
            y = conv(x)
            w = torch.rand(*y.shape, generator=g) * 2 - 1
            (y * w).sum().backward()
            cases.append({
                "config": {"in": cin, "out": cout, "kernel": list(torch.nn.modules.utils._pair(k)),
                           "stride": list(torch.nn.modules.utils._pair(s)),
                           "padding": p if isinstance(p, str) else list(torch.nn.modules.utils._pair(p)),
                           "dilation": list(torch.nn.modules.utils._pair(d)), "groups": groups,
                           "bias": bias, "mode": mode},
                "repr": repr(conv),
                "x_shape": list(shape), "x": flat(x),
                "out_shape": list(y.shape), "out": flat(y), "w": flat(w),
                "dx": flat(x.grad), "dweight": flat(conv.weight.grad),
                "dbias": flat(conv.bias.grad) if bias else None,
            })

    errors = {
        "reflect_too_large": error(lambda: nn.Conv2d(1, 1, 3, padding=2, padding_mode="reflect")(torch.zeros(1, 1, 2, 5))),
        "reflect_too_large_w": error(lambda: nn.Conv2d(1, 1, 3, padding=(1, 4), padding_mode="reflect")(torch.zeros(1, 1, 5, 4))),
        "circular_wraps": error(lambda: nn.Conv2d(1, 1, 3, padding=3, padding_mode="circular")(torch.zeros(1, 1, 2, 5))),
    }
    out_path = os.path.join(FIXTURES, "conv_padding_modes.json")
    with open(out_path, "w") as f:
        json.dump({"torch": torch.__version__, "cases": cases, "errors": errors}, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
