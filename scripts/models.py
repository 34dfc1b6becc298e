"""The PyTorch models the fixture scripts share (the same structs are
defined with #[derive(Module)] in the Rust tests)."""
import torch
import torch.nn as nn


class SimpleNet(nn.Module):
    """The seed article's model: fc1 -> relu -> fc2."""

    def __init__(self, input_size, hidden_size, output_size):
        super().__init__()
        self.fc1 = nn.Linear(input_size, hidden_size)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden_size, output_size)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, n=8):
        super().__init__()
        self.fc = nn.Linear(n, n)
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


class ResBlock(nn.Module):
    """relu(fc2(relu(fc1(x))) + x): the residual block of the written-forward
    fixtures and benchmarks."""

    def __init__(self, n):
        super().__init__()
        self.fc1 = nn.Linear(n, n)
        self.fc2 = nn.Linear(n, n)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        h = self.fc2(h)
        return torch.relu(h + x)


def flat(t):
    """A tensor's values, row-major, as Python floats (exact for f32)."""
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def state(model):
    """The state_dict as JSON values: float lists, int64 scalars as ints."""
    out = {}
    for n, t in model.state_dict().items():
        out[n] = int(t) if t.dtype == torch.int64 else flat(t)
    return out


def grads(model):
    """Every parameter's gradient, by name."""
    return {n: flat(p.grad) for n, p in model.named_parameters()}


def error(f):
    """PyTorch's message for the call `f`, which must fail."""
    try:
        f()
    except Exception as e:  # noqa: BLE001 - the message is the point
        return str(e)
    raise AssertionError("no error")
