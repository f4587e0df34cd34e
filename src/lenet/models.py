"""Every LeNet of the seed notebooks, built exactly, and a registry of them by name.

Each model is an `nn.Sequential` of named layers, so `for layer in net: x = layer(x)` walks it as the seed
notebooks do, and `forward` returns logits (scores whose argmax is the class; softmax gives probabilities).
Shapes in the comments are for one input of the model's own size.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import LenetError

# ----------------------------------------------------------------------------------------------------------
# Building blocks


class ClippedLog(nn.Module):
    """Keras' probability -> logit step: log(clip(p, eps, 1 - eps)).

    Keras' `sparse_categorical_crossentropy` on non-softmax outputs (TensorFlow backend, from_logits=False)
    clips the outputs to [1e-7, 1 - 1e-7], takes their log and feeds that to
    `sparse_softmax_cross_entropy_with_logits`. Ending the net with this layer makes torch's cross-entropy
    do the same arithmetic: softmax(log p) = p / sum(p), so the loss is -log(p_y / sum_i p_i) on clipped p.
    """

    def __init__(self, eps: float = 1e-7):
        super().__init__()
        self.eps = eps

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        return torch.log(p.clamp(self.eps, 1.0 - self.eps))


class LeNet(nn.Sequential):
    """A feed-forward net of named layers; `input_size` is the side of the square 1-channel input it expects."""

    def __init__(self, layers: OrderedDict[str, nn.Module], input_size: int = 28):
        super().__init__(layers)
        self.input_size = input_size


def conv_block(prefix: str, c_in: int, c_out: int, k: int, pad: int, act: Callable[[], nn.Module] | None, pool):
    """conv -> activation -> pool, named `<layer><prefix>` in the seeds' numbering (conv1, act1, pool1)."""
    layers = [(f"conv{prefix}", nn.Conv2d(c_in, c_out, k, padding=pad))]
    if act is not None:
        layers.append((f"act{prefix}", act()))
    layers.append((f"pool{prefix}", pool(2, 2)))
    return layers


def classifier(sizes: tuple[int, ...], act: Callable[[], nn.Module] | None, first: int = 1):
    """Flatten, then Linear layers through `sizes` with `act` between them (none after the last)."""
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append((f"fc{i + 1}", nn.Linear(n_in, n_out)))
        if act is not None and i < len(sizes) - 2:
            layers.append((f"act{first + i}", act()))
    return layers


# ----------------------------------------------------------------------------------------------------------
# The registry


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[..., nn.Module]
    seed: str  # which seed notebook it comes from
    input_size: int
    description: str


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, seed: str, input_size: int, description: str):
    """Decorator: add a model builder to the registry under `name`."""

    def add(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = ModelSpec(name, build, seed, input_size, description)
        return build

    return add


def list_models() -> list[str]:
    """Names of every registered model, in registration order."""
    return list(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    """The registry entry for `name`, or an error listing the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise LenetError(f"unknown model {name!r}; known: {', '.join(_REGISTRY)}") from None


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model by name; keyword arguments go to its builder."""
    spec = model_spec(name)
    try:
        model = spec.build(**kwargs)
    except TypeError as e:
        raise LenetError(f"model {name!r}: {e}") from None
    model.input_size = spec.input_size
    return model


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def leaf_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of every module without children, in order: the layers a summary or a demo shows."""
    for name, module in model.named_modules():
        if name and next(module.children(), None) is None:
            yield name, module


# ----------------------------------------------------------------------------------------------------------
# The seed notebooks' nets


@register("lenet5-d2l", "001, 004", 28, "d2l's LeNet: sigmoid, average pooling, conv padded to keep 28x28")
def lenet5_d2l() -> LeNet:
    # (B,1,28,28) -> conv1 (B,6,28,28) -> pool1 (B,6,14,14) -> conv2 (B,16,10,10) -> pool2 (B,16,5,5) -> 400
    return LeNet(
        OrderedDict(
            conv_block("1", 1, 6, 5, 2, nn.Sigmoid, nn.AvgPool2d)
            + conv_block("2", 6, 16, 5, 0, nn.Sigmoid, nn.AvgPool2d)
            + classifier((16 * 5 * 5, 120, 84, 10), nn.Sigmoid, first=3)
        )
    )


@register("lenet5-mxnet", "000", 28, "d2l's MXNet LeNet: sigmoid, max pooling, unpadded convs (256 features)")
def lenet5_mxnet() -> LeNet:
    # (B,1,28,28) -> conv1 (B,6,24,24) -> pool1 (B,6,12,12) -> conv2 (B,16,8,8) -> pool2 (B,16,4,4) -> 256
    return LeNet(
        OrderedDict(
            conv_block("1", 1, 6, 5, 0, nn.Sigmoid, nn.MaxPool2d)
            + conv_block("2", 6, 16, 5, 0, nn.Sigmoid, nn.MaxPool2d)
            + classifier((16 * 4 * 4, 120, 84, 10), nn.Sigmoid, first=3)
        )
    )


@register("lenet5-keras", "002", 28, "the Keras LeNet: as lenet5-mxnet, plus a sigmoid on the 10 outputs")
def lenet5_keras() -> LeNet:
    # Same shapes as lenet5-mxnet; the outputs go through a sigmoid and then Keras' loss arithmetic.
    layers = (
        conv_block("1", 1, 6, 5, 0, nn.Sigmoid, nn.MaxPool2d)
        + conv_block("2", 6, 16, 5, 0, nn.Sigmoid, nn.MaxPool2d)
        + classifier((16 * 4 * 4, 120, 84, 10), nn.Sigmoid, first=3)
    )
    layers += [("act5", nn.Sigmoid()), ("keras_log", ClippedLog())]
    return LeNet(OrderedDict(layers))


@register("lenet5-tutorial", "003 (official)", 32, "the PyTorch tutorial LeNet5: 32x32 input, ReLU, max pooling")
def lenet5_tutorial() -> LeNet:
    # (B,1,32,32) -> conv1 (B,6,28,28) -> pool1 (B,6,14,14) -> conv2 (B,16,10,10) -> pool2 (B,16,5,5) -> 400
    return LeNet(
        OrderedDict(
            conv_block("1", 1, 6, 5, 0, nn.ReLU, nn.MaxPool2d)
            + conv_block("2", 6, 16, 5, 0, nn.ReLU, nn.MaxPool2d)
            + classifier((16 * 5 * 5, 120, 84, 10), nn.ReLU, first=3)
        ),
        input_size=32,
    )


@register("lenet-community", "003 (民间版)", 28, "the community LeNet: 3x3 first conv, max pooling, no activations")
def lenet_community() -> LeNet:
    # No activation anywhere, as in the seed: the whole net is one affine map composed with max pooling.
    # (B,1,28,28) -> conv1 (B,6,28,28) -> pool1 (B,6,14,14) -> conv2 (B,16,10,10) -> pool2 (B,16,5,5) -> 400
    return LeNet(
        OrderedDict(
            conv_block("1", 1, 6, 3, 1, None, nn.MaxPool2d)
            + conv_block("2", 6, 16, 5, 0, None, nn.MaxPool2d)
            + classifier((16 * 5 * 5, 120, 84, 10), None)
        )
    )


@register(
    "cnn-tf1",
    "003 (TF)",
    28,
    "the TF1 MNIST CNN: 32/64 'SAME' convs, 1024-unit FC with dropout (3.3M params)",
)
def cnn_tf1(dropout: float = 0.5) -> LeNet:
    # 'SAME' padding for a 5x5 kernel at stride 1 is 2 on each side; 2x2/2 'SAME' pooling of an even size
    # pads nothing. (B,1,28,28) -> conv1 (B,32,28,28) -> pool1 (B,32,14,14) -> conv2 (B,64,14,14)
    # -> pool2 (B,64,7,7) -> 3136 -> 1024 -> 10
    net = LeNet(
        OrderedDict(
            conv_block("1", 1, 32, 5, 2, nn.ReLU, nn.MaxPool2d)
            + conv_block("2", 32, 64, 5, 2, nn.ReLU, nn.MaxPool2d)
            + [
                ("flatten", nn.Flatten()),
                ("fc1", nn.Linear(7 * 7 * 64, 1024)),
                ("act3", nn.ReLU()),
                ("dropout", nn.Dropout(dropout)),  # keep_prob 0.5 in training, 1 in evaluation
                ("fc2", nn.Linear(1024, 10)),
            ]
        )
    )
    # tf.truncated_normal(stddev=0.1) redraws values beyond two standard deviations; biases are 0.1.
    for m in net.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.1, a=-0.2, b=0.2)
            nn.init.constant_(m.bias, 0.1)
    return net


@register("lenet5-modern", "ours", 28, "LeNet-5 sized with ReLU, max pooling and batch norm: the fast default")
def lenet5_modern(batch_norm: bool = True, channels: tuple[int, int] = (6, 16)) -> LeNet:
    # (B,1,28,28) -> conv1 (B,c1,28,28) -> pool1 (B,c1,14,14) -> conv2 (B,c2,10,10) -> pool2 (B,c2,5,5)
    c1, c2 = channels
    layers: list[tuple[str, nn.Module]] = []
    for i, (c_in, c_out, pad) in enumerate(((1, c1, 2), (c1, c2, 0)), start=1):
        layers.append((f"conv{i}", nn.Conv2d(c_in, c_out, 5, padding=pad, bias=not batch_norm)))
        if batch_norm:
            layers.append((f"bn{i}", nn.BatchNorm2d(c_out)))
        layers += [(f"act{i}", nn.ReLU()), (f"pool{i}", nn.MaxPool2d(2, 2))]
    layers += classifier((c2 * 5 * 5, 120, 84, 10), nn.ReLU, first=3)
    return LeNet(OrderedDict(layers))


# ----------------------------------------------------------------------------------------------------------
# Initialisation schemes the recipes name

INITS = ("default", "xavier", "glorot")


def init_weights(model: nn.Module, scheme: str) -> nn.Module:
    """Re-initialise conv and linear layers.

    default: leave the model's own initialisation (PyTorch's, or the model's constructor's).
    xavier:  Xavier-uniform weights, biases as PyTorch made them (d2l's `init_weights` in train_ch6).
    glorot:  Xavier-uniform weights and zero biases (Keras' glorot_uniform/zeros, MXNet's init.Xavier()).
    """
    if scheme not in INITS:
        raise LenetError(f"unknown init {scheme!r}; expected one of {', '.join(INITS)}")
    if scheme == "default":
        return model
    for m in model.modules():
        if type(m) in (nn.Linear, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if scheme == "glorot" and m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


# ----------------------------------------------------------------------------------------------------------
# The original LeNet-5: LeCun, Bottou, Bengio & Haffner, "Gradient-based learning applied to document
# recognition", Proc. IEEE 86(11), 1998, section II.B and appendices A and C.

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
    times their spread: 1.39/sqrt(F) under 2.4/F (0.07 at C5: F6 gets ~1% of the input's signal), 1.39
    under 2.4/sqrt(F), 1.39/F^0.25 under the default 2.4/F^0.75. Measured with the lecun98 recipe at
    batch 16: 2.4/F diverges at once (SDLM's steps, sized for the tiny initial curvature, overshoot);
    2.4/sqrt(F) starts with half of S4's units saturated and learns slowly (test error 5.0%, 2.8% after
    passes 1-2); 2.4/F^0.75 gives 3.6%, 1.6%. power=1 gives the printed formula.
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
