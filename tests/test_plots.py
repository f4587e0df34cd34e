"""Figures as values (inline in Jupyter, saved to files), LiveCurves, activations; and no global matplotlib state."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from lenet import create_model
from lenet.errors import LenetError
from lenet.train import live, plots

PNG = b"\x89PNG\r\n\x1a\n"
RECORDS = [
    {"epoch": 1, "train_loss": 2.3, "train_acc": 0.11, "test_acc": 0.10},
    {"epoch": 2, "train_loss": 1.1, "train_acc": 0.60, "test_acc": 0.79},
]


def seed_004_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.Sigmoid(), nn.Linear(120, 84), nn.Sigmoid(), nn.Linear(84, 10),
    )  # fmt: skip


def test_importing_and_drawing_leave_the_users_backend_alone(tmp_path):
    """A kernel's backend (here svg, standing in for Jupyter's inline one) survives lenet's imports and figures."""
    script = textwrap.dedent(f"""
        import sys
        import matplotlib
        matplotlib.use("svg")
        import lenet
        from lenet import d2l, plots
        plots.curves({RECORDS!r}).save({str(tmp_path / "c.png")!r})
        animator = d2l.Animator(legend=["a"], path={str(tmp_path / "a.png")!r})
        animator.add(1, 0.5)
        assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
        assert "matplotlib.pyplot" not in sys.modules, "pyplot imported"
        print("ok")
    """)
    env = dict(os.environ, MPLBACKEND="")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert (tmp_path / "c.png").read_bytes().startswith(PNG) and (tmp_path / "a.png").read_bytes().startswith(PNG)


def test_lenet_plots_is_the_plots_module():
    from lenet import plots as top

    assert top is plots
    with pytest.raises(AttributeError):
        import lenet

        lenet.no_such_thing  # noqa: B018


def test_figures_are_values_that_show_inline_and_save(tmp_path):
    history = type("History", (), {"epochs": RECORDS})()  # anything with .epochs, as lenet's History
    figures = {
        "curves": plots.curves(history),
        "confusion": plots.confusion([[5, 1], [2, 7]], ["cat", "dog"], title="acc 0.80"),
        "gallery": plots.gallery(np.random.rand(3, 28, 28), ["a", "b", "c"]),
    }
    for name, figure in figures.items():
        assert figure._repr_png_().startswith(PNG), name
        path = figure.save(tmp_path / f"{name}.png")
        assert path.read_bytes().startswith(PNG)
        assert "Plot" in repr(figure)
    with pytest.raises(LenetError, match="empty"):
        plots.curves([])


def test_misclassified_gallery_takes_the_data_kinds_users_hold():
    torch.manual_seed(0)
    model = create_model("lenet5-d2l")
    x, y = torch.rand(40, 1, 28, 28), torch.randint(0, 10, (40,))
    figure = plots.misclassified(model, (x, y), n=5)
    titles = [ax.get_title() for ax in figure.figure.axes if ax.get_title()]
    assert len(titles) == 5 and all("->" in t for t in titles)
    assert model.training  # mode restored


def test_activation_layers_default_to_the_first_two_conv_stages():
    assert plots.default_layers(create_model("lenet5-d2l")) == ["act1", "act2"]
    assert plots.default_layers(create_model("lenet5-modern")) == ["act1", "act2"]  # conv, bn, act
    assert plots.default_layers(create_model("lenet-community")) == ["conv1", "conv2"]  # no activations
    assert plots.default_layers(seed_004_net()) == ["1", "4"]  # nn.Sequential numbering
    with pytest.raises(LenetError, match="no Conv2d"):
        plots.default_layers(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)))


def test_activations_draw_each_images_feature_maps():
    torch.manual_seed(0)
    model = create_model("lenet5-d2l")
    images = torch.rand(2, 1, 28, 28)
    outputs = plots.layer_outputs(model, images)
    assert [(name, tuple(out.shape)) for name, _, out in outputs] == [
        ("act1", (2, 6, 28, 28)),
        ("act2", (2, 16, 10, 10)),
    ]
    figure = plots.activations(model, images, titles=["sweater", "coat"])
    assert figure._repr_png_().startswith(PNG)
    titles = [ax.get_title(loc="left") for ax in figure.figure.axes if ax.get_title(loc="left")]
    assert titles == ["act1 (Sigmoid) 6@28x28", "act2 (Sigmoid) 16@10x10"] * 2
    shown = [ax for ax in figure.figure.axes if ax.images]
    assert len(shown) == 2 * (1 + 6 + 16)  # per image: the input, 6 maps, 16 maps
    # any layers, by name or index, and a vector layer as a strip; one (H, W) image
    outputs = plots.layer_outputs(model, images[0, 0][None, None], ["conv1", 7])
    assert [name for name, _, _ in outputs] == ["conv1", "fc1"]
    assert plots.activations(model, images[0, 0].numpy(), layers=["fc1"])._repr_png_().startswith(PNG)
    with pytest.raises(LenetError, match="unknown layer 'conv9'; the model's layers: conv1, act1"):
        plots.activations(model, images, layers=["conv9"])
    with pytest.raises(LenetError, match="images must be"):
        plots.activations(model, torch.rand(1, 1, 1, 28, 28))


def test_live_curves_outside_jupyter_write_one_named_png(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(live, "_FILES_NAMED", [])
    first = plots.LiveCurves(xlabel="epoch", xlim=[1, 2], legend=["train loss", "train acc", "test acc"])
    assert not first.live  # pytest is no Jupyter kernel
    for x in (0.5, 1.0):
        first.add(x, (2.0 - x, x / 2, None))
    first.add(1, (None, None, 0.4))
    assert first.X == [[0.5, 1.0], [0.5, 1.0], [1.0]] and first.Y[2] == [0.4]  # d2l's bookkeeping
    second = plots.LiveCurves()
    second.add(1, 3.0)
    err = capsys.readouterr().err
    assert err.count("animator.png") == 1 and err.count("animator-2.png") == 1  # each file named once
    assert (tmp_path / "animator.png").read_bytes().startswith(PNG)
    assert (tmp_path / "animator-2.png").is_file()
    assert len(first.axes[0].lines) == 3
    assert [t.get_text() for t in first.axes[0].get_legend().get_texts()] == ["train loss", "train acc", "test acc"]
    assert not list(tmp_path.glob(".*tmp"))  # written through a temporary file, renamed into place


def test_training_curves_draw_between_epochs_and_throttle_within(tmp_path):
    curves = plots.TrainingCurves(3, path=tmp_path / "c.png", min_interval=3600)
    curves.on_progress(0.2, 2.3, 0.1)
    curves.on_progress(0.4, 2.2, 0.12)
    assert not (tmp_path / "c.png").exists()  # within min_interval of its creation: no drawing mid-epoch
    curves.on_epoch({"epoch": 1, "test_acc": 0.2})
    mtime = (tmp_path / "c.png").stat().st_mtime_ns  # an epoch's end is drawn
    curves.on_progress(1.2, 2.0, 0.3)
    assert (tmp_path / "c.png").stat().st_mtime_ns == mtime
    assert len(curves.axes[0].lines[0].get_xdata()) == 2
    curves.close()
    assert curves.X == [[0.2, 0.4, 1.2], [0.2, 0.4, 1.2], [1.0]]
    assert len(curves.axes[0].lines[0].get_xdata()) == 3  # close() draws what was skipped


def test_live_curves_never_raise_on_an_unwritable_file(tmp_path, capsys):
    curves = plots.LiveCurves(path=tmp_path / "missing" / "c.png")
    curves.add(1, 1.0)
    curves.add(2, 2.0)
    err = capsys.readouterr().err
    assert err.count("cannot write") == 1 and "curves not drawn" in err


def test_activations_command(run_dir, tmp_path, capsys):
    """`lenet activations RUN IMAGE...`: the chosen layers' feature maps of each image file, as one PNG."""
    from PIL import Image, ImageDraw

    from lenet.cli import main

    files = []
    for name, box in (("one.png", (45, 10, 55, 90)), ("block.png", (20, 20, 80, 80))):
        image = Image.new("L", (100, 100), 255)
        ImageDraw.Draw(image).rectangle(box, fill=0)
        image.save(tmp_path / name)
        files.append(str(tmp_path / name))
    assert main(["activations", str(run_dir), *files]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"wrote {run_dir / 'activations.png'}: act1 (6, 28, 28), act2 (16, 10, 10) for 2 image(s)")
    assert (run_dir / "activations.png").read_bytes().startswith(PNG)
    target = tmp_path / "conv1.png"
    assert main(["activations", str(run_dir), files[0], "--layers", "conv1,fc1", "-o", str(target)]) == 0
    assert "conv1 (6, 28, 28), fc1 (120,)" in capsys.readouterr().out and target.is_file()
    assert main(["activations", str(run_dir), files[0], "--layers", "conv7"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown layer 'conv7'; the model's layers: conv1, bn1")
    (tmp_path / "notes.txt").write_text("not an image")
    assert main(["activations", str(run_dir), str(tmp_path / "notes.txt")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_a_history_and_a_run_show_their_curves_inline(fake_root):
    import lenet

    run = lenet.train("fast", root=fake_root, verify=False, epochs=2, verbose=False)
    for value in (run, run.history):
        png = value._repr_png_()
        assert png.startswith(b"\x89PNG") and len(png) > 1000
