"""notebooks/ run in a real Jupyter kernel (nbclient + ipykernel) on the real MNIST, one epoch each: no cell
raises, the figures a reader would see are image outputs, and the printed lines have the seeds' formats."""

import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
D2L_CLOSING = r"loss \d\.\d{3}, train acc \d\.\d{3}, test acc \d\.\d{3}\n\d+\.\d examples/sec on cpu\n"
D2L_EPOCH = r"epoch 1, loss \d\.\d{4}, train acc \d\.\d{3}, test acc \d\.\d{3}, time [\d.]+ sec\n"

# What a reader sees, per notebook: patterns its printed output must match (in order), and at least how many
# images (live curves from lenet.train(plot=True) come on top).
KERAS_EPOCH = (
    r"Epoch 1/1\n1688/1688 - \d+s - loss: \d\.\d{4} - accuracy: \d\.\d{4} - val_loss: \d\.\d{4} - "
    r"val_accuracy: \d\.\d{4}\n"
)
EXPECTED = {
    "001_d2l_6.6_lenet.ipynb": (
        [r"Conv2d output shape: \t torch.Size\(\[1, 6, 28, 28\]\)\n",
         r"Linear output shape: \t torch.Size\(\[1, 10\]\)",
         r"training on cpu\n" + D2L_CLOSING],
        1,
    ),
    "004_d2l_pytorch_lenet.ipynb": (
        [r"training on cpu\n训练损失 \d\.\d{3}, 训练精度 \d\.\d{3}, 测试精度 \d\.\d{3}\n\d+\.\d examples/sec on cpu\n",
         r"training on cpu\n" + D2L_CLOSING],
        2,
    ),
    "exercises_6.6.ipynb": (
        [r"training on cpu\n" + D2L_CLOSING,
         r"hint: train acc \d\.\d{3} is chance level: ReLU nets at lr 0\.9",
         r"relu, max, lr 0\.1 +test acc 0\.[89]\d\d"],
        7,  # six trainings' curves and the activations
    ),
    "000_mxnet_lenet.ipynb": (
        [r"pool2 output shape: \t \(1, 16, 4, 4\)", r"44,426 parameters", D2L_EPOCH, D2L_CLOSING],
        1,
    ),
    "002_keras_lenet.ipynb": (
        [r"total params: 44,426", KERAS_EPOCH, r"313/313 - loss: \d\.\d{4} - accuracy: \d\.\d{4}"],
        1,
    ),
    "003_pytorch_tutorial_community_tf1.ipynb": (
        [r"torch.Size\(\[6, 1, 5, 5\]\)", D2L_EPOCH,
         r"\[1/1\] Loss: \d\.\d{5}, Acc: \d+\.\d\d, Time: [\d.]+ s\n",
         r"Finished Training\nTest: Loss: \d\.\d{5}, Acc: \d+\.\d\d %\n", r"recipe tf1-cnn"],
        1,
    ),
    "lenet5_1998.ipynb": ([r"60,000 trainable parameters", r"RBF EuclideanRBF \(1, 10\)", r"recipe lecun98"], 2),
}  # fmt: skip


def test_every_notebook_is_tested():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(EXPECTED)


def test_notebooks_hold_no_outputs():
    """Outputs stay out of the repository (they would go stale); CI makes them."""
    for path in NOTEBOOKS.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            assert cell.cell_type != "code" or (not cell.outputs and cell.execution_count is None), path.name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_in_a_kernel(name, real_root, tmp_path, monkeypatch):
    monkeypatch.setenv("LENET_DATA", str(real_root))
    monkeypatch.setenv("LENET_NOTEBOOK_DATASET", "mnist")  # no Fashion-MNIST here; the reader's default is
    monkeypatch.setenv("LENET_NOTEBOOK_EPOCHS", "1")
    monkeypatch.setenv("LENET_NOTEBOOK_MAX_STEPS", "60")  # only the slow CPU trainings (TF1's net, SDLM) use it
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own (inline) backend, as a reader has it
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})  # fmt: skip
    client.execute()  # raises CellExecutionError, naming the cell, if any cell raises

    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code)
    stdout = "".join(o.text for cell in code for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")
    images = [o for cell in code for o in cell.outputs if "image/png" in o.get("data", {})]
    patterns, count = EXPECTED[name]
    at = 0
    for pattern in patterns:
        found = re.compile(pattern).search(stdout, at)
        assert found, f"{name}: no {pattern!r} after position {at} in:\n{stdout}"
        at = found.end()
    assert len(images) >= count, f"{name}: {len(images)} image outputs, expected at least {count}"
    for cell in code:  # a live plot is one output updated in place (a display handle), not a flickering stack
        assert sum("image/png" in o.get("data", {}) for o in cell.outputs) <= 2, cell.source


def test_importing_lenet_in_a_kernel_keeps_plt_show_working(tmp_path):
    """The issue's report: after `from lenet import plots`, plt.show() in a notebook showed nothing (Agg)."""
    cells = [
        "import matplotlib\nbackend = matplotlib.get_backend()",
        "import lenet\nfrom lenet import d2l, plots\nlenet.plots.curves([{'epoch': 1, 'train_loss': 1.0}])",
        "import matplotlib.pyplot as plt\nassert matplotlib.get_backend() == backend, matplotlib.get_backend()\n"
        "plt.plot([1, 2, 3])\nplt.show()",
        "animator = d2l.Animator(legend=['a'])\nfor x in range(3):\n    animator.add(x, x * x)",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()  # fmt: skip
    outputs = [cell.outputs for cell in nb.cells]
    assert any("image/png" in o.get("data", {}) for o in outputs[1])  # a lenet figure is a value shown inline
    assert any("image/png" in o.get("data", {}) for o in outputs[2])  # and pyplot still shows its figures
    assert [o.output_type for o in outputs[3]] == ["display_data"]  # three adds, one output updated in place
    assert not list(tmp_path.glob("*.png"))  # in a notebook the Animator writes no file
