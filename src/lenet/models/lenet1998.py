"""The original LeNet-5, everything of it in one place: the model, its MAP loss, its optimiser, its distortions.

LeCun, Bottou, Bengio & Haffner, "Gradient-based learning applied to document recognition", Proc. IEEE 86(11),
1998: section II.B (the net), eq. 9 (the loss), section III.C (distortions), appendices A and C (initialisation,
stochastic diagonal Levenberg-Marquardt). Measurements behind the choices made here are in docs/lenet1998.md.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..errors import LenetError
from .registry import register
from .zoo import LeNet

# Table I: the S2 maps that each C3 map sees. Its first six maps see 3 neighbouring maps, the next nine see 4,
# the last sees all 6; the paper's reasons: fewer connections, and broken symmetry between the maps.
C3_TABLE = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5), (0, 1, 2, 3, 4, 5),
)  # fmt: skip

# The RBF units' fixed targets: a stylised 7x12 bitmap of each digit (ours, in the spirit of the paper's
# figure 3), '#' = +1 and '.' = -1. Any two differ in at least 12 of their 84 pixels.
DIGIT_BITMAPS = """
.......  .......  .......  .......  .......  .......  .......  .......  .......  .......
..###..  ...#...  .#####.  #######  ....##.  #######  ...###.  #######  .#####.  .#####.
.#...#.  ..##...  #.....#  .....#.  ...#.#.  #......  ..#....  ......#  #.....#  #.....#
#.....#  .#.#...  ......#  ....#..  ..#..#.  #......  .#.....  .....#.  #.....#  #.....#
#.....#  ...#...  .....#.  ...#...  .#...#.  ######.  #......  ....#..  #.....#  #.....#
#.....#  ...#...  ....#..  ..###..  #....#.  ......#  #.####.  ....#..  .#####.  #....##
#.....#  ...#...  ...#...  .....#.  #######  ......#  ##....#  ...#...  #.....#  .####.#
#.....#  ...#...  ..#....  ......#  .....#.  ......#  #.....#  ...#...  #.....#  ......#
#.....#  ...#...  .#.....  ......#  .....#.  ......#  #.....#  ..#....  #.....#  .....#.
.#...#.  ...#...  #......  #.....#  .....#.  #.....#  #.....#  ..#....  #.....#  ....#..
..###..  .#####.  #######  .#####.  .....#.  .#####.  .#####.  ..#....  .#####.  .###...
.......  .......  .......  .......  .......  .......  .......  .......  .......  .......
"""


def digit_prototypes() -> torch.Tensor:
    """DIGIT_BITMAPS as a (10, 84) tensor of ±1, row-major per digit."""
    rows = [line.split() for line in DIGIT_BITMAPS.strip().splitlines()]  # 12 rows of 10 bitmaps
    return torch.tensor([[1.0 if c == "#" else -1.0 for row in rows for c in row[d]] for d in range(10)])


class Squash(nn.Module):
    """The paper's squashing function f(a) = A tanh(S a), A = 1.7159, S = 2/3: f(±1) = ±1, f'(0) = A S."""

    def __init__(self, amplitude: float = 1.7159, slope: float = 2 / 3):
        super().__init__()
        self.amplitude, self.slope = amplitude, slope

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.amplitude * torch.tanh(self.slope * a)

    def derivative(self, a: torch.Tensor) -> torch.Tensor:
        """f'(a), which the diagonal Levenberg-Marquardt optimiser (lenet.sdlm) needs."""
        return self.amplitude * self.slope * (1 - torch.tanh(self.slope * a).square())

    def extra_repr(self) -> str:
        return f"{self.amplitude} * tanh({self.slope:.4g} * a)"


class Subsampling(nn.Module):
    """S2/S4: each unit sums a 2x2 block of one map, times the map's trainable coefficient, plus its bias.

    Written as a grouped stride-2 convolution whose 2x2 kernel holds the map's coefficient four times, so
    that every output is a plain sum of weight x input (as lenet.sdlm's curvature pass assumes).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))  # (C,) one coefficient per map
        self.bias = nn.Parameter(torch.zeros(channels))  # (C,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = self.weight.view(-1, 1, 1, 1).expand(-1, 1, 2, 2)  # (C, 1, 2, 2)
        return F.conv2d(x, kernel, self.bias, stride=2, groups=self.weight.shape[0])  # (B, C, H/2, W/2)

    def extra_repr(self) -> str:
        return f"{len(self.weight)}, 2x2 sum x coefficient + bias"


class SparseConv2d(nn.Module):
    """A convolution in which output map k sees only the input maps in table[k]: one kernel per connection.

    The kernels are gathered into a dense (out, in, k, k) weight with zeros where there is no connection,
    then convolved: the parameters are only the real connections', and no gradient crosses a missing one.
    """

    def __init__(self, table: tuple[tuple[int, ...], ...], in_channels: int, kernel_size: int):
        super().__init__()
        self.table, self.in_channels, self.out_channels = table, in_channels, len(table)
        connections = [(k, j) for k, row in enumerate(table) for j in row]
        self.weight = nn.Parameter(torch.zeros(len(connections), kernel_size, kernel_size))  # C3: (60, 5, 5)
        self.bias = nn.Parameter(torch.zeros(len(table)))
        # index[k * in_channels + j]: 1 + the number of connection (k, j)'s kernel, or 0 (a zero kernel)
        index = torch.zeros(len(table) * in_channels, dtype=torch.long)
        for n, (k, j) in enumerate(connections):
            index[k * in_channels + j] = n + 1
        self.register_buffer("index", index, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.weight.shape[-1]
        kernels = torch.cat([self.weight.new_zeros(1, k, k), self.weight])[self.index]  # (out * in, k, k)
        return F.conv2d(x, kernels.view(self.out_channels, self.in_channels, k, k), self.bias)

    def extra_repr(self) -> str:
        k, n = self.weight.shape[-1], len(self.weight)
        return f"{self.in_channels}, {self.out_channels}, kernel_size=({k}, {k}), connections={n}"


class EuclideanRBF(nn.Module):
    """The output layer: y_i = sum_j (x_j - w_ij)^2, the squared distance to fixed prototype i.

    Returns -y, so that the logits' argmax is the nearest prototype (the paper's argmin y_i) everywhere.
    The prototypes are a buffer: saved with the weights, never trained.
    """

    def __init__(self, prototypes: torch.Tensor):
        super().__init__()
        self.register_buffer("prototypes", prototypes.clone())  # (classes, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -(x.unsqueeze(1) - self.prototypes).square().sum(-1)  # (B, 1, 84) - (10, 84) -> (B, 10)

    def extra_repr(self) -> str:
        return f"{self.prototypes.shape[1]} -> {self.prototypes.shape[0]}, fixed ±1 prototypes"


def init_lecun98(net: nn.Module, power: float = 0.75) -> nn.Module:
    """Every weight and bias uniform in ±2.4 / F^power, F the fan-in of the unit it feeds (appendix A).

    F counts the unit's inputs, not its bias: 25 for C1, 4 for S2 and S4, 75/100/150 for C3's maps with
    3/4/6 inputs, 400 for C5, 120 for F6. The paper prints 2.4/F (power 1), to keep each unit's total input
    in the squashing function's operating range. With weights uniform in ±c a sum of F inputs has c sqrt(F/3)
    times their spread: under 2.4/F, F6 gets ~1% of the input's signal and SDLM's first steps overshoot;
    the default power 0.75 keeps ~1.39/F^0.25 of it (docs/lenet1998.md has the runs). power=1 gives the
    printed formula.
    """
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d | nn.Linear | Subsampling):
                fan_in = m.weight[0].numel() if m.weight.dim() > 1 else 4  # subsampling: 2x2 inputs
                bound = 2.4 / fan_in**power
                m.weight.uniform_(-bound, bound)
                m.bias.uniform_(-bound, bound)
            elif isinstance(m, SparseConv2d):
                area = m.weight[0].numel()
                map_bound = torch.tensor([2.4 / (area * len(row)) ** power for row in m.table])  # (out,)
                connection_bound = torch.cat([map_bound[k].repeat(len(row)) for k, row in enumerate(m.table)])
                m.weight.uniform_(-1, 1).mul_(connection_bound.view(-1, 1, 1))
                m.bias.uniform_(-1, 1).mul_(map_bound)
    return net


@register("lenet5-1998", "paper (003)", 32, "LeCun et al. 1998's LeNet-5: sparse C3, trainable pooling, RBF")
def lenet5_1998(init_power: float = 0.75) -> LeNet:
    # (B,1,32,32) -> C1 (B,6,28,28) -> S2 (B,6,14,14) -> C3 (B,16,10,10) -> S4 (B,16,5,5) -> C5 (B,120,1,1)
    # -> F6 (B,84) -> RBF (B,10). Every layer up to F6 is squashed. Trainable: 156 + 12 + 1,516 + 32 + 48,120
    # + 10,164 = 60,000; the RBF's 840 prototype values are fixed.
    net = LeNet(
        OrderedDict(
            [
                ("C1", nn.Conv2d(1, 6, 5)),
                ("act1", Squash()),
                ("S2", Subsampling(6)),
                ("act2", Squash()),
                ("C3", SparseConv2d(C3_TABLE, 6, 5)),
                ("act3", Squash()),
                ("S4", Subsampling(16)),
                ("act4", Squash()),
                ("C5", nn.Conv2d(16, 120, 5)),
                ("act5", Squash()),
                ("flatten", nn.Flatten()),  # (B,120,1,1) -> (B,120)
                ("F6", nn.Linear(120, 84)),
                ("act6", Squash()),
                ("RBF", EuclideanRBF(digit_prototypes())),
            ]
        ),
        input_size=32,
    )
    return init_lecun98(net, init_power)


# ----------------------------------------------------------------------------------------------------------
# The MAP loss (eq. 9)

MAP_J = 0.1  # the MAP loss's j: its 'rubbish class' penalty; the paper only says a positive constant


def map_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Eq. 9 per sample, (B,), with logits = -y (the RBF distances): y_correct + log(e^-j + sum_i e^-y_i).

    It is the cross-entropy over the classes plus one extra class of constant penalty j, which caps how hard
    the loss pushes up distances that are already much larger than j.
    """
    rubbish = logits.new_full((len(logits), 1), -MAP_J)
    return F.cross_entropy(torch.cat([logits, rubbish], 1), y, reduction="none")


# ----------------------------------------------------------------------------------------------------------
# Stochastic diagonal Levenberg-Marquardt (appendix C)

# Every weight w_k gets its own step size eta / (mu + h_kk), where h_kk is a Gauss-Newton estimate of the
# second derivative of the per-sample loss with respect to w_k, averaged over a few hundred training samples
# (500 in the paper) before each pass and held fixed during it; mu (0.02) keeps the step finite where the
# curvature is tiny. The paper updates after every sample; this optimiser applies eta / (mu + h) to whatever
# gradient it is given, and the lecun98 recipe gives it the *mean* gradient of a batch of 4: each update the
# size of one of the paper's, with the sample noise averaged down. Summing the batch's gradients instead
# diverges, because the diagonal misses the curvature along directions that move many weights together (a
# unit's fan-in; a shared kernel). The runs behind these choices: docs/lenet1998.md.

# Layers whose every output is a sum of weight x input (+ bias): the curvature pass squares both.
WEIGHTED_SUMS = (nn.Conv2d, nn.Linear, SparseConv2d, Subsampling)
RESHAPES = (nn.Flatten, nn.Identity)


def check_model(model: nn.Module) -> list[nn.Module]:
    """The layers before the RBF output, or a one-line error naming a layer the curvature pass cannot do."""
    layers = list(model.children())
    if not layers or not isinstance(layers[-1], EuclideanRBF):
        raise LenetError("optimizer 'sdlm' needs a model with a Euclidean RBF output, such as lenet5-1998")
    for layer in layers[:-1]:
        if not isinstance(layer, WEIGHTED_SUMS + RESHAPES + (Squash,)):
            raise LenetError(f"optimizer 'sdlm' cannot pass curvature through a {type(layer).__name__} layer")
    return layers[:-1]


def gauss_newton_diagonal(model: nn.Module, x: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    """The diagonal Gauss-Newton estimate of d2E/dw2 for every weight, averaged over the samples x.

    Becker & LeCun's (1989) backward pass of second derivatives, as the paper's appendix C gives it:
        d2E/da_i2  = f'(a_i)^2 d2E/dx_i2        (the squashing function's own second derivative neglected)
        d2E/dx_j2  = sum_i w_ij^2 d2E/da_i2      (the cross terms between units neglected)
        d2E/dw_k2  = sum over the connections (i, j) sharing w_k of x_j^2 d2E/da_i2
    The last two are the backward pass of the same layer with squared weights applied to squared inputs, so
    autograd computes them layer by layer. At the top, E = y_correct + log(...) with y_correct =
    ||x - w_correct||^2: its second derivative with respect to each F6 output is 2, and the log term's
    (small once the net separates the classes, and not positive) is neglected. Where a weight reaches the
    output by one path (C5, F6) this is the exact Gauss-Newton diagonal; for shared weights it leaves out
    the cross terms between positions (measured at initialisation: C1's biases get ~1/12 of the exact value).
    """
    layers = check_model(model)
    inputs = []
    with torch.no_grad():
        for layer in layers:
            inputs.append(x)
            x = layer(x)
    h = torch.full_like(x, 2.0 / len(x))  # d2E/dx2 at F6's output, (B, 84), already divided by B for the mean
    hessian = {}
    for layer, x in zip(reversed(layers), reversed(inputs), strict=True):
        if isinstance(layer, Squash):
            h = h * layer.derivative(x).square()
        elif isinstance(layer, RESHAPES):
            h = h.reshape(x.shape)
        else:
            squared = {name: p.detach().square().requires_grad_() for name, p in layer.named_parameters()}
            x2 = x.square().requires_grad_()
            with torch.enable_grad():
                out = functional_call(layer, squared, (x2,))
                *grads, h = torch.autograd.grad(out, [*squared.values(), x2], h)
            hessian.update(zip(layer.parameters(), grads, strict=True))
    return hessian


class SDLM(torch.optim.Optimizer):
    """w -= lr / (mu + h) * grad, with h re-estimated by `start_epoch`, which `fit` calls before each pass.

    `lr` is the paper's eta, applied to each update's gradient (in the lecun98 recipe the mean over a batch
    of 4; see the module docstring). Until the first estimate h is 0 and the step is lr / mu.
    """

    def __init__(self, params, model: nn.Module, lr: float = 5e-4, mu: float = 0.02, samples: int = 500):
        if lr <= 0 or mu <= 0 or samples < 1:
            raise LenetError(f"sdlm needs lr > 0, mu > 0 and samples >= 1; got {lr}, {mu}, {samples}")
        super().__init__(params, dict(lr=lr, mu=mu))
        check_model(model)
        self.model, self.samples = model, samples

    @torch.no_grad()
    def start_epoch(self, images, generator: torch.Generator | None = None) -> None:
        """The hook `fit` calls before each pass: re-estimate h on `samples` images drawn from `images` (a
        tensor of network inputs, or anything with len() and inputs(index), as a lenet Split)."""
        device = generator.device if generator is not None else None
        pick = torch.randperm(len(images), device=device, generator=generator)[: self.samples]
        x = images.inputs(pick) if hasattr(images, "inputs") else images[pick.to(images.device)]
        hessian = gauss_newton_diagonal(self.model, x)
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["hessian"] = hessian[p] if p in hessian else torch.zeros_like(p)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                h = self.state[p].get("hessian")
                if h is None:
                    h = self.state[p]["hessian"] = torch.zeros_like(p)
                p.addcdiv_(p.grad, h + group["mu"], value=-group["lr"])
        return loss


# ----------------------------------------------------------------------------------------------------------
# Distortions (section III.C)


def distort(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    shift: float = 2.0,
    scale: float = 0.1,
    squeeze: float = 0.1,
    shear: float = 0.15,
) -> torch.Tensor:
    """Random planar affine distortions of a batch (B, C, H, W), as in LeCun et al. 1998's section III.C.

    Each image gets its own uniform draws: a translation of up to `shift` pixels each way, a scaling by
    1 ± `scale`, a squeeze (width x q, height / q, q in 1 ± `squeeze`) and a horizontal shear (x += k y,
    |k| <= `shear`). Pixels from outside the image repeat its border, i.e. the background whatever the
    scaling. On the batch's device; the same generator state gives the same output.
    """
    b, _, h, w = x.shape
    u = torch.rand(b, 5, generator=generator, device=x.device) * 2 - 1  # (B, 5) uniform in [-1, 1)
    s, q, k = 1 + scale * u[:, 0], 1 + squeeze * u[:, 1], shear * u[:, 2]
    tx, ty = shift * u[:, 3] * 2 / w, shift * u[:, 4] * 2 / h  # pixels -> affine_grid's [-1, 1] units
    zero = torch.zeros_like(s)
    # theta maps each output pixel to where it samples the input: the inverse of the distortion
    theta = torch.stack([1 / (s * q), k, tx, zero, q / s, ty], 1).view(b, 2, 3)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
