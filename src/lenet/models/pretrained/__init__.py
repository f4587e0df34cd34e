"""Published weights, shipped inside the package: `create_model(name, pretrained=True)`.

Each is a `<model>.safetensors` (a run's own weights file, with the model name and config in its metadata, so
`lenet predict --pretrained NAME` needs nothing else) beside `<model>.json`, its model card: the recipe and
seed that trained it, the data and its checksums, the test accuracy, the versions, and the command that
rebuilds it. They were trained by `lenet reproduce` on MNIST (the data available where they were made), also
for the recipes whose notebooks use Fashion-MNIST; the card says so. The file's sha256 is checked on loading.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from torch import nn

from ...errors import LenetError

FOLDER = Path(__file__).parent


def cards() -> dict[str, dict]:
    """Every published model's card, by model name."""
    out = {}
    for path in sorted(FOLDER.glob("*.json")):
        card = json.loads(path.read_text())
        out[card["name"]] = card
    return out


def card(name: str) -> dict:
    """The model card of `name`'s published weights, or an error listing what is published."""
    found = cards()
    if name not in found:
        names = ", ".join(found) or "none"
        raise LenetError(f"no published weights for {name!r}; available: {names}")
    return found[name]


def weights_file(name: str) -> Path:
    """The path of `name`'s published weights, after checking them against the card's sha256."""
    info = card(name)
    path = FOLDER / info["weights"]["file"]
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as e:
        raise LenetError(f"{path}: cannot read the published weights ({e.strerror})") from None
    if digest != info["weights"]["sha256"]:
        raise LenetError(f"{path}: sha256 {digest[:12]}... is not the card's {info['weights']['sha256'][:12]}...; "
                         "reinstall lenet")  # fmt: skip
    return path


def load_pretrained(model: nn.Module, name: str) -> nn.Module:
    """`model` (built as `name`) with the published weights loaded, in eval mode."""
    from safetensors.torch import load_file

    state = load_file(str(weights_file(name)))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise LenetError(f"the published weights of {name!r} do not fit this model ({str(e).splitlines()[0]}); "
                         "build it without options to load them") from None  # fmt: skip
    return model.eval()
