"""Published weights: create_model(name, pretrained=True), `lenet predict/serve --pretrained NAME`, model cards;
a rebuild from a card reaches the card's accuracy."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import lenet
from lenet.cli import main
from lenet.config import Config, input_size
from lenet.data import load_raw
from lenet.errors import LenetError
from lenet.models import count_parameters, list_models, pretrained
from lenet.train.setup import load_data

CARDS = pretrained.cards()


def test_every_zoo_lenet_is_published_with_a_card_that_matches_its_file():
    assert set(CARDS) == set(list_models()) - {"cnn-tf1"}  # 3.3 M parameters: not shipped (13 MB)
    for name, card in CARDS.items():
        path = pretrained.FOLDER / card["weights"]["file"]
        blob = path.read_bytes()
        assert hashlib.sha256(blob).hexdigest() == card["weights"]["sha256"] and len(blob) == card["weights"]["bytes"]
        assert len(blob) < 300_000  # about 250 KB each
        assert card["config"]["model"] == name and card["config"]["seed"] == card["seed"]
        assert card["data"]["name"] == card["config"]["dataset"] == "mnist"
        assert len(card["data"]["sha256"]) == 4 and card["versions"]["lenet"]
        assert card["command"].startswith(f"lenet train --recipe {card['recipe']}")
        assert 0.9 < card["test_acc"] <= 1.0 and card["test_examples"] == 10_000


@pytest.mark.parametrize("name", sorted(CARDS))
def test_pretrained_models_read_real_mnist_test_digits_at_their_cards_accuracy(name, real_root):
    card = CARDS[name]
    model = lenet.create_model(name, pretrained=True)
    assert not model.training and count_parameters(model) == count_parameters(lenet.create_model(name))
    cfg = Config.from_dict(card["config"])
    data = load_data(cfg, real_root)
    assert data.test.images.shape[-1] == input_size(cfg)
    acc = lenet.evaluate(model, data)["acc"]
    # the card's figure came from the same weights on the same images; a CPU with other vector units may
    # round a borderline logit the other way, hence a few images of slack
    assert acc == pytest.approx(card["test_acc"], abs=5e-4)


def test_a_card_rebuilds_its_weights(real_root, tmp_path):
    card = CARDS["lenet5-modern"]
    assert card["command"] == f"lenet train --recipe fast --seed {card['seed']} --root DATA"
    run = lenet.train(card["recipe"], **card["overrides"], root=real_root, device="cpu", out=tmp_path / "again",
                      verbose=False, progress=False)  # fmt: skip
    assert run.config.model == "lenet5-modern" and run.config.seed == card["seed"]
    assert run.summary["test_acc"] == pytest.approx(card["test_acc"], abs=2e-3)
    if run.summary["fast_path"] == card["fast_path"]:  # the same kernels: bit for bit the published weights
        rebuilt = lenet.load(run.path).model.state_dict()
        published = lenet.create_model("lenet5-modern", pretrained=True).state_dict()
        assert all(torch.equal(rebuilt[k], published[k]) for k in published)
        assert run.summary["test_acc"] == card["test_acc"]


def test_unknown_or_changed_models_and_tampered_files_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(LenetError, match=r"no published weights for 'cnn-tf1'; available: .*lenet5-modern"):
        lenet.create_model("cnn-tf1", pretrained=True)
    with pytest.raises(LenetError, match="the published weights are for the model as registered"):
        lenet.create_model("lenet5-d2l", pretrained=True, activation="relu")
    copy = tmp_path / "pretrained"
    shutil.copytree(pretrained.FOLDER, copy, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    blob = bytearray((copy / "lenet5-modern.safetensors").read_bytes())
    blob[-1] ^= 1
    (copy / "lenet5-modern.safetensors").write_bytes(bytes(blob))
    monkeypatch.setattr(pretrained, "FOLDER", copy)
    with pytest.raises(LenetError, match="is not the card's"):
        lenet.create_model("lenet5-modern", pretrained=True)


def test_lenet_predict_pretrained_reads_mnist_digits_saved_as_png(real_root, tmp_path, capsys):
    images, labels = load_raw("mnist", "test", real_root)
    files = []
    for i in range(10):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray(np.asarray(images[i], dtype=np.uint8)).save(path)
        files.append(str(path))
    assert main(["predict", "--pretrained", "lenet5-modern", *files, "--json"]) == 0
    got = [json.loads(line)["class"] for line in capsys.readouterr().out.strip().splitlines()]
    assert got == [int(y) for y in labels[:10]]

    assert main(["predict", "--pretrained", "nope", files[0]]) == 2
    err = capsys.readouterr().err
    assert "no published weights for 'nope'; available:" in err and len(err.strip().splitlines()) == 1
    assert main(["predict", files[0]]) == 2  # a run, but no image
    assert "which images?" in capsys.readouterr().err


def test_lenet_serve_needs_a_run_or_published_weights(capsys):
    assert main(["serve"]) == 2
    assert "which model? lenet serve RUN (or lenet serve --pretrained NAME)" in capsys.readouterr().err
    assert main(["serve", "--pretrained", "nope"]) == 2
    assert "no published weights for 'nope'" in capsys.readouterr().err


def test_pretrained_weights_keep_the_model_name_and_config_for_the_command_line():
    from lenet.train.checkpoint import load_run

    for name in CARDS:
        model, cfg, _ = load_run(pretrained.weights_file(name))
        assert cfg.to_dict() == CARDS[name]["config"]
        reference = lenet.create_model(name, pretrained=True)
        for (k, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items(), strict=True):
            assert torch.equal(a, b), k


def test_models_lists_the_published_weights_and_load_run_reads_their_cards(capsys):
    from lenet.models.pretrained import cards, weights_file
    from lenet.train.checkpoint import load_run

    assert main(["models", "--pretrained", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {c["name"] for c in listed} == set(cards()) and all(c["command"].startswith("lenet train") for c in listed)
    _, _, info = load_run(weights_file("lenet5-1998"))
    assert info["test_acc"] == cards()["lenet5-1998"]["test_acc"]  # what the drawing page shows
