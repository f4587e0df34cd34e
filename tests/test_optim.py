"""lenet's SGD is torch.optim.SGD bit for bit, and their checkpoints load into each other."""

import subprocess
import sys

import pytest
import torch

from lenet.models import create_model
from lenet.train.optim import SGD


def train_steps(make, steps: int = 5) -> tuple[torch.nn.Module, object]:
    torch.manual_seed(0)
    model = create_model("lenet5-modern")
    optimizer = make(model.parameters())
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.rand(16, 1, 28, 28, generator=generator), torch.randint(0, 10, (16,), generator=generator)
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model, optimizer


@pytest.mark.parametrize(
    "settings",
    [dict(), dict(momentum=0.9), dict(momentum=0.9, nesterov=True, weight_decay=5e-4),
     dict(momentum=0.5, dampening=0.1, weight_decay=1e-3)],
)  # fmt: skip
def test_the_same_weights_as_torch_optim_sgd(settings):
    ours, ours_opt = train_steps(lambda p: SGD(p, lr=0.1, **settings))
    theirs, theirs_opt = train_steps(lambda p: torch.optim.SGD(p, lr=0.1, **settings))
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    mine, torch_state = ours_opt.state_dict(), theirs_opt.state_dict()
    assert mine["param_groups"][0].keys() == torch_state["param_groups"][0].keys()
    assert mine["state"].keys() == torch_state["state"].keys()


def test_state_dicts_load_into_each_other():
    _, theirs = train_steps(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True))
    model = create_model("lenet5-modern")
    ours = SGD(model.parameters(), lr=0.5, momentum=0.9, nesterov=True)
    ours.load_state_dict(theirs.state_dict())
    assert ours.param_groups[0]["lr"] == 0.1
    back = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, nesterov=True)
    back.load_state_dict(ours.state_dict())
    for a, b in zip(back.state_dict()["state"].values(), theirs.state_dict()["state"].values(), strict=True):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])


def test_training_never_imports_the_compiler(fake_root, tmp_path):
    code = (
        "import sys; from lenet.cli import main; "
        f"assert main(['train', '--recipe', 'fast', '--root', {str(fake_root)!r}, '--no-verify', "
        f"'--out', {str(tmp_path / 'run')!r}, '--epochs', '1']) == 0; "
        "print(sorted(m for m in sys.modules if m.startswith(('torch._dynamo', 'torch._inductor', 'matplotlib'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    imported = eval(out.strip().splitlines()[-1])
    assert not [m for m in imported if m.startswith("torch._")], imported
