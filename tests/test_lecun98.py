"""The 1998 LeNet-5 (lenet5-1998), its MAP loss, the SDLM optimiser and the distortions by hand."""

import math
from collections import OrderedDict

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from lenet import count_parameters, create_model
from lenet.cli import main
from lenet.config import resolve
from lenet.data import Split
from lenet.errors import LenetError
from lenet.infer.inspect import summarize
from lenet.models import LeNet
from lenet.models.lenet1998 import C3_TABLE, MAP_J, SDLM, EuclideanRBF, Squash, distort, gauss_newton_diagonal
from lenet.train.loop import fit
from lenet.train.setup import build_model, load_data, make_optimizer, per_sample_loss


def test_layers_and_their_parameters_as_the_paper_counts_them():
    net = create_model("lenet5-1998")
    rows = {r.name: (r.output_shape[1:], r.params) for r in summarize(net).layers}
    assert rows["C1"] == ([6, 28, 28], 156)
    assert rows["S2"] == ([6, 14, 14], 12)
    assert rows["C3"] == ([16, 10, 10], 1516)
    assert rows["S4"] == ([16, 5, 5], 32)
    assert rows["C5"] == ([120, 1, 1], 48120)
    assert rows["F6"] == ([84], 10164)
    assert rows["RBF"] == ([10], 0)
    assert count_parameters(net) == 60_000 and count_parameters(net, trainable_only=False) == 60_000
    assert net.input_size == 32


def test_c3_sees_only_the_s2_maps_of_its_table_row():
    c3 = create_model("lenet5-1998").C3
    x = torch.randn(2, 6, 14, 14, requires_grad=True)
    out = c3(x)  # (2, 16, 10, 10)
    for k, row in enumerate(C3_TABLE):
        (grad,) = torch.autograd.grad(out[:, k].sum(), x, retain_graph=True)
        reached = {j for j in range(6) if grad[:, j].abs().sum() > 0}
        assert reached == set(row), k
    assert sum(len(row) for row in C3_TABLE) == 60 and c3.weight.shape == (60, 5, 5)


def test_rbf_prototypes_are_fixed_plus_minus_one_bitmaps():
    net = create_model("lenet5-1998")
    protos = net.RBF.prototypes
    assert protos.shape == (10, 84) and set(protos.unique().tolist()) == {-1.0, 1.0}
    assert "RBF.prototypes" in net.state_dict() and all(p is not protos for p in net.parameters())
    assert (torch.cdist(protos, protos) + 99 * torch.eye(10)).min() ** 2 >= 4 * 12  # >= 12 pixels apart
    before = protos.clone()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net(torch.randn(4, 1, 32, 32)).sum().backward()
    opt.step()
    assert torch.equal(net.RBF.prototypes, before)
    # The logits are minus the squared distances: a prototype itself scores 0, the best possible.
    logits = net.RBF(protos)
    assert torch.equal(logits.argmax(1), torch.arange(10)) and torch.all(logits.diagonal() == 0)


def test_squashing_function():
    f = Squash()
    a = torch.tensor([-1.0, 0.0, 1.0, 50.0], requires_grad=True)
    y = f(a)
    assert y.tolist() == pytest.approx([-1.0, 0.0, 1.0, 1.7159], abs=2e-4)  # f(±1) = ±1, asymptote A
    assert f(torch.tensor([0.5])).item() == pytest.approx(1.7159 * math.tanh(1 / 3), rel=1e-6)
    (grad,) = torch.autograd.grad(y.sum(), a)
    assert torch.allclose(f.derivative(a.detach()), grad)
    assert f.derivative(torch.zeros(1)).item() == pytest.approx(1.7159 * 2 / 3)


def test_map_loss_by_hand():
    cfg = resolve("lecun98")
    y = [[1.0, 2.0, 3.0], [0.5, 40.0, 7.0]]  # RBF distances; the model's logits are -y
    labels = [0, 2]
    loss = per_sample_loss(cfg, -torch.tensor(y), torch.tensor(labels))
    for row, label, got in zip(y, labels, loss.tolist(), strict=True):
        expected = row[label] + math.log(math.exp(-MAP_J) + sum(math.exp(-v) for v in row))
        assert got == pytest.approx(expected, rel=1e-6)


def quadratic_net(prototype: torch.Tensor, n_in: int, bias: bool) -> LeNet:
    """x -> W x (+ b) -> RBF: E = ||W x + b - p||^2 is quadratic in the weights."""
    fc = nn.Linear(n_in, prototype.shape[-1], bias=bias)
    return LeNet(OrderedDict([("fc", fc), ("out", EuclideanRBF(prototype.view(1, -1)))]))


def test_gauss_newton_diagonal_of_a_quadratic_is_exact():
    torch.manual_seed(0)
    net = quadratic_net(torch.tensor([1.0, -1.0, 1.0]), 2, bias=True)
    x = torch.randn(7, 2)
    h = gauss_newton_diagonal(net, x)
    # d2/dW_ij2 of mean_p ||W x_p + b - p||^2 = 2 mean_p x_pj^2, and 2 for each bias.
    assert torch.allclose(h[net.fc.weight], (2 * x.square().mean(0)).expand(3, 2))
    assert torch.allclose(h[net.fc.bias], torch.full((3,), 2.0))


def test_sdlm_on_a_quadratic_matches_the_closed_form():
    """E(w) = sum_i (w_i x - p_i)^2 is separable, so SDLM's diagonal is the whole Hessian, 2 x^2, and
    w_t - p/x = (1 - eta 2x^2 / (mu + 2x^2))^t (w_0 - p/x)."""
    p, x, eta, mu, steps = torch.tensor([1.0, -1.0, 1.0]), torch.tensor([[0.7]]), 0.3, 0.02, 5
    net = quadratic_net(p, 1, bias=False)
    w0 = net.fc.weight.detach().clone().view(-1)
    opt = SDLM(net.parameters(), net, lr=eta, mu=mu, samples=1)
    opt.start_epoch(x)
    assert torch.allclose(opt.state[net.fc.weight]["hessian"], torch.full((3, 1), 2 * 0.49))
    for _ in range(steps):
        opt.zero_grad()
        (-net(x)[0, 0]).backward()  # E = y_0, the distance to the one prototype
        opt.step()
    rate = 1 - eta * 2 * 0.49 / (mu + 2 * 0.49)
    expected = p / 0.7 + rate**steps * (w0 - p / 0.7)
    assert torch.allclose(net.fc.weight.view(-1), expected, atol=1e-6)
    # eta = 1, mu -> 0: a Newton step, which lands on the minimum at once.
    newton = SDLM(net.parameters(), net, lr=1.0, mu=1e-12, samples=1)
    newton.start_epoch(x)
    newton.zero_grad()
    (-net(x)[0, 0]).backward()
    newton.step()
    assert torch.allclose(net.fc.weight.view(-1), p / 0.7, atol=1e-5)


def test_gauss_newton_diagonal_of_lenet5_at_f6():
    """At F6's bias the estimate is exact: d2E/db_i2 = 2 f'(a_i)^2, averaged over the samples."""
    torch.manual_seed(0)
    net = create_model("lenet5-1998")
    x = torch.randn(5, 1, 32, 32)
    h = gauss_newton_diagonal(net, x)
    assert set(h) == set(net.parameters())
    a = net.F6(net[:11](x))  # F6's input sums, (5, 84)
    assert torch.allclose(h[net.F6.bias], 2 * net.act6.derivative(a).square().mean(0), rtol=1e-5)
    assert all(torch.all(v >= 0) for v in h.values())


def test_gauss_newton_diagonal_is_exact_where_each_weight_has_one_path():
    """Against the Gauss-Newton diagonal from the Jacobian, one output at a time: 2 sum_i (dx_i/dw)^2."""
    torch.manual_seed(0)
    net = create_model("lenet5-1998").double()
    x = torch.randn(1, 1, 32, 32, dtype=torch.double)
    h = gauss_newton_diagonal(net, x)
    f6 = net[:13](x)[0]  # (84,) F6's outputs
    layers = (net.C5.weight, net.C5.bias, net.F6.weight, net.F6.bias)
    exact = [torch.zeros_like(p) for p in layers]
    for i in range(84):
        for e, g in zip(exact, torch.autograd.grad(f6[i], layers, retain_graph=True), strict=True):
            e += 2 * g.square()
    for p, e in zip(layers, exact, strict=True):
        assert torch.allclose(h[p], e, rtol=1e-9, atol=1e-12)


def test_sdlm_needs_an_rbf_output():
    cfg = resolve("lecun98", model="lenet5-d2l")
    with pytest.raises(LenetError, match="needs a model with a Euclidean RBF output"):
        make_optimizer(cfg, create_model("lenet5-d2l"))


def test_distortions_are_deterministic_and_keep_the_background():
    x = torch.full((4, 1, 32, 32), -0.1)
    x[:, :, 10:22, 14:18] = 1.175  # a bar of ink on the lecun-scaled background
    g1, g2, g3 = (torch.Generator().manual_seed(s) for s in (0, 0, 1))
    a, b, c = distort(x, g1), distort(x, g2), distort(x, g3)
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # each image draws its own distortion
    assert torch.allclose(a[..., 0, :], torch.tensor(-0.1))  # the border stays background
    assert a.min() >= -0.1 - 1e-6 and a.max() <= 1.175 + 1e-6
    identity = distort(x, g3, shift=0, scale=0, squeeze=0, shear=0)
    assert torch.allclose(identity, x, atol=1e-5)


def test_resumed_mid_epoch_with_distortions_is_bit_identical(fake_root, tmp_path):
    """SDLM's curvature and the distortions are drawn from (seed, epoch or step) keys, so a run stopped
    mid-epoch and resumed (150 steps an epoch here; it stops at 200) ends with the unbroken run's weights."""
    data = ["--root", str(fake_root), "--no-verify"]
    args = ["train", "--recipe", "lecun98", "--distort", "--epochs", "2", *data]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*args, "--out", str(tmp_path / "ref")]) == 0
        assert main([*args, "--out", str(tmp_path / "cut"), "--max-steps", "200"]) == 0
        assert main(["train", "--resume", str(tmp_path / "cut"), *data]) == 0
    finally:
        torch.set_num_threads(threads)
    want, got = (load_file(tmp_path / run / "model.safetensors") for run in ("ref", "cut"))
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def test_lecun98_learns_real_mnist(real_root):
    """Two short passes over 2,000 real (distorted) digits take the test error far below chance (90%)."""
    torch.manual_seed(0)
    cfg = resolve("lecun98", epochs=2, distort=True)
    data = load_data(cfg, real_root)
    data.train = Split(data.train.images[:2000], data.train.labels[:2000])
    data.test = Split(data.test.images[:2000], data.test.labels[:2000])
    history = fit(build_model(cfg), data, cfg)
    assert history.epochs[-1]["test_acc"] > 0.8  # 0.91 here
