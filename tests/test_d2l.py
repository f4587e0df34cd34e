"""`from lenet import d2l`: the seeds' own code runs with only its import changed, and prints what d2l prints."""

import dataclasses
import gzip
import hashlib
import http.server
import re
import threading

import pytest
import torch
from conftest import write_dataset
from torch import nn

from lenet import d2l
from lenet import data as lenet_data
from lenet.data import DataIter, write_idx
from lenet.errors import LenetError
from lenet.train import live
from lenet.train.report import chance_hint

# Seed 004 (d2l's PyTorch LeNet with its own train_ch6), as the notebook has it but for the import line and the
# comments (Chinese docstrings and prints kept).
SEED_004 = '''
import torch
from torch import nn
from lenet import d2l

batch_size = 256
train_iter, test_iter = d2l.load_data_fashion_mnist(batch_size=batch_size)

net = nn.Sequential(
    nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.Sigmoid(),
    nn.AvgPool2d(kernel_size=2, stride=2),
    nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(),
    nn.AvgPool2d(kernel_size=2, stride=2),
    nn.Flatten(),
    nn.Linear(16 * 5 * 5, 120), nn.Sigmoid(),
    nn.Linear(120, 84), nn.Sigmoid(),
    nn.Linear(84, 10))

def evaluate_accuracy_gpu(net, data_iter, device=None):
    """
    使用GPU计算模型在数据集上的精度
    """
    if isinstance(net, nn.Module):
        net.eval()
        if not device:
            device = next(iter(net.parameters())).device
    metric = d2l.Accumulator(2)
    with torch.no_grad():
        for X, y in data_iter:
            if isinstance(X, list):
                X = [x.to(device) for x in X]
            else:
                X = X.to(device)
            y = y.to(device)
            metric.add(d2l.accuracy(net(X), y), y.numel())
    return metric[0] / metric[1]

def train_ch6(net, train_iter, test_iter, num_epochs, lr, device):
    """
    用GPU训练模型(在第六章定义)
    """
    def init_weights(m):
        if type(m) == nn.Linear or type(m) == nn.Conv2d:
            nn.init.xavier_uniform_(m.weight)

    net.apply(init_weights)
    print('training on', device)
    net.to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    loss = nn.CrossEntropyLoss()
    animator = d2l.Animator(xlabel='epoch', xlim=[1, num_epochs],
                            legend=['train loss', 'train acc', 'test acc'])
    timer, num_batches = d2l.Timer(), len(train_iter)
    for epoch in range(num_epochs):
        metric = d2l.Accumulator(3)
        net.train()
        for i, (X, y) in enumerate(train_iter):
            timer.start()
            optimizer.zero_grad()
            X, y = X.to(device), y.to(device)
            y_hat = net(X)
            l = loss(y_hat, y)
            l.backward()
            optimizer.step()
            with torch.no_grad():
                metric.add(l * X.shape[0], d2l.accuracy(y_hat, y), X.shape[0])
            timer.stop()
            train_l = metric[0] / metric[2]
            train_acc = metric[1] / metric[2]
            if (i + 1) % (num_batches // 5) == 0 or i == num_batches - 1:
                animator.add(epoch + (i + 1) / num_batches,
                             (train_l, train_acc, None))
        test_acc = evaluate_accuracy_gpu(net, test_iter)
        animator.add(epoch + 1, (None, None, test_acc))
    print(f'训练损失 {train_l:.3f}, 训练精度 {train_acc:.3f}, 'f'测试精度 {test_acc:.3f}')
    print(f'{metric[2] * num_epochs / timer.sum():.1f} examples/sec 'f'on {str(device)}')
    d2l.plt.show()
lr, num_epochs = 0.9, 10
train_ch6(net, train_iter, test_iter, num_epochs, lr, d2l.try_gpu())
'''

# Seed 001 (d2l-zh 6.6) as far as the seed shows it, then the chapter's training cell through d2l.train_ch6.
SEED_001 = """
import torch
from torch import nn
from lenet import d2l

net = nn.Sequential(
    nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.Sigmoid(),
    nn.AvgPool2d(kernel_size=2, stride=2),
    nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(),
    nn.AvgPool2d(kernel_size=2, stride=2),
    nn.Flatten(),
    nn.Linear(16 * 5 * 5, 120), nn.Sigmoid(),
    nn.Linear(120, 84), nn.Sigmoid(),
    nn.Linear(84, 10))

X = torch.rand(size=(1, 1, 28, 28), dtype=torch.float32)
for layer in net:
    X = layer(X)
    print(layer.__class__.__name__,'output shape: \\t',X.shape)

batch_size = 256
train_iter, test_iter = d2l.load_data_fashion_mnist(batch_size=batch_size)

lr, num_epochs = 0.9, 10
d2l.train_ch6(net, train_iter, test_iter, num_epochs, lr, d2l.try_gpu())
"""

SEED_001_SHAPES = """\
Conv2d output shape: \t torch.Size([1, 6, 28, 28])
Sigmoid output shape: \t torch.Size([1, 6, 28, 28])
AvgPool2d output shape: \t torch.Size([1, 6, 14, 14])
Conv2d output shape: \t torch.Size([1, 16, 10, 10])
Sigmoid output shape: \t torch.Size([1, 16, 10, 10])
AvgPool2d output shape: \t torch.Size([1, 16, 5, 5])
Flatten output shape: \t torch.Size([1, 400])
Linear output shape: \t torch.Size([1, 120])
Sigmoid output shape: \t torch.Size([1, 120])
Linear output shape: \t torch.Size([1, 84])
Sigmoid output shape: \t torch.Size([1, 84])
Linear output shape: \t torch.Size([1, 10])
"""

# d2l's two closing lines; a third, a hint, only when training ended at chance accuracy
D2L_CLOSING = re.compile(
    r"loss \d\.\d{3}, train acc \d\.\d{3}, test acc \d\.\d{3}\n\d+\.\d examples/sec on cpu\n(hint: [^\n]+\n)?"
)


@pytest.fixture(scope="module")
def reader_root(tmp_path_factory):
    """Generated Fashion-MNIST files with 5 batches of 256 (d2l's loop plots every len(train_iter) // 5 batches)."""
    return write_dataset(tmp_path_factory.mktemp("data"), "fashion-mnist", n_train=1280, n_test=256)


@pytest.fixture
def reader(reader_root, tmp_path, monkeypatch):
    """A reader's session: the data root in $LENET_DATA (their own, unofficial copy), a fresh working folder."""
    monkeypatch.setenv("LENET_DATA", str(reader_root))
    monkeypatch.setenv("LENET_NO_VERIFY", "1")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(live, "_FILES_NAMED", [])
    return tmp_path


def test_seed_004_runs_unchanged_but_for_the_import(reader, capsys):
    torch.manual_seed(0)
    exec(compile(SEED_004, "seed_004", "exec"), {"__name__": "__main__"})
    out, err = capsys.readouterr()
    assert re.fullmatch(
        r"training on cpu\n训练损失 \d\.\d{3}, 训练精度 \d\.\d{3}, 测试精度 \d\.\d{3}\n\d+\.\d examples/sec on cpu\n",
        out,
    )
    warning = "fashion-mnist: 4 of its files are not the official fashion-mnist ones (checksums differ)"
    assert err.count("warning:") == 1 and warning in err  # LENET_NO_VERIFY=1: one line, not an error
    assert err.count("drawing to") == 1 and (reader / "animator.png").stat().st_size > 0  # the live plot, as a file


def test_seed_001_runs_unchanged_and_prints_what_d2l_prints(reader, capsys):
    torch.manual_seed(0)
    exec(compile(SEED_001, "seed_001", "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    assert out.startswith(SEED_001_SHAPES + "training on cpu\n")
    assert D2L_CLOSING.fullmatch(out[len(SEED_001_SHAPES) + len("training on cpu\n") :])
    assert (reader / "animator.png").is_file()


def lenet_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.Sigmoid(), nn.Linear(120, 84), nn.Sigmoid(), nn.Linear(84, 10),
    )  # fmt: skip


def test_train_ch6_has_d2ls_semantics(reader, capsys):
    """Full batches (one step an epoch, so the order cannot differ): weights as d2l's own loop makes them."""
    train_iter, test_iter = d2l.load_data_fashion_mnist(1280)  # the whole training set: one batch
    torch.manual_seed(0)
    net = lenet_net()
    torch.manual_seed(1)
    d2l.train_ch6(net, train_iter, test_iter, 3, 0.9, d2l.try_gpu())

    torch.manual_seed(0)
    reference = lenet_net()
    torch.manual_seed(1)
    for m in reference.modules():  # d2l's init_weights: Xavier-uniform weights of Linear and Conv2d only
        if type(m) in (nn.Linear, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.9)
    for _ in range(3):
        for X, y in train_iter:
            optimizer.zero_grad()
            nn.CrossEntropyLoss()(reference(X), y).backward()
            optimizer.step()
    for (name, ours), theirs in zip(net.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.allclose(ours, theirs, atol=2e-5), name
    out = capsys.readouterr().out
    assert out.startswith("training on cpu\n") and D2L_CLOSING.fullmatch(out.removeprefix("training on cpu\n"))


def batch_norm(X, gamma, beta, moving_mean, moving_var, eps, momentum):
    """d2l 7.5's batch norm by hand: its mode comes from torch.is_grad_enabled()."""
    if not torch.is_grad_enabled():
        X_hat = (X - moving_mean) / torch.sqrt(moving_var + eps)
    else:
        dims = (0,) if X.dim() == 2 else (0, 2, 3)
        mean = X.mean(dim=dims, keepdim=X.dim() == 4)
        var = ((X - mean) ** 2).mean(dim=dims, keepdim=X.dim() == 4)
        X_hat = (X - mean) / torch.sqrt(var + eps)
        moving_mean = momentum * moving_mean + (1.0 - momentum) * mean
        moving_var = momentum * moving_var + (1.0 - momentum) * var
    return gamma * X_hat + beta, moving_mean.data, moving_var.data


class BatchNorm(nn.Module):
    def __init__(self, num_features, num_dims):
        super().__init__()
        shape = (1, num_features) if num_dims == 2 else (1, num_features, 1, 1)
        self.gamma = nn.Parameter(torch.ones(shape))
        self.beta = nn.Parameter(torch.zeros(shape))
        self.moving_mean = torch.zeros(shape)
        self.moving_var = torch.ones(shape)

    def forward(self, X):
        if self.moving_mean.device != X.device:
            self.moving_mean = self.moving_mean.to(X.device)
            self.moving_var = self.moving_var.to(X.device)
        Y, self.moving_mean, self.moving_var = batch_norm(
            X, self.gamma, self.beta, self.moving_mean, self.moving_var, eps=1e-5, momentum=0.9
        )
        return Y


@pytest.mark.parametrize("norm", ["by hand", "nn.BatchNorm2d"])
def test_train_ch6_trains_batch_norm_nets(reader, capsys, norm):
    """d2l 7.5's LeNet with batch norm, its own module or PyTorch's, at d2l's lr 1.0."""

    def bn(n, dims):
        return (
            BatchNorm(n, num_dims=dims)
            if norm == "by hand"
            else (nn.BatchNorm2d(n) if dims == 4 else nn.BatchNorm1d(n))
        )

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5), bn(6, 4), nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), bn(16, 4), nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 120), bn(120, 2), nn.Sigmoid(),
        nn.Linear(120, 84), bn(84, 2), nn.Sigmoid(), nn.Linear(84, 10),
    )  # fmt: skip
    train_iter, test_iter = d2l.load_data_fashion_mnist(batch_size=64)
    d2l.train_ch6(net, train_iter, test_iter, 2, 1.0, d2l.try_gpu())
    loss, train_acc, test_acc = map(float, re.search(r"loss (\S+), train acc (\S+), test acc (\S+)",
                                                     capsys.readouterr().out).groups())  # fmt: skip
    assert train_acc > 0.9 and test_acc > 0.9  # the generated classes are easy; chance is 0.1
    moving_mean = net[1].moving_mean if norm == "by hand" else net[1].running_mean
    assert moving_mean.abs().sum() > 0  # the running statistics moved, and evaluation used them
    assert d2l.evaluate_accuracy_gpu(net, test_iter) == pytest.approx(test_acc, abs=1e-3)


def test_a_readers_own_loop_with_the_helpers(fake_root):
    """Chapter 3's and 6's small helpers, as a reader's own loop calls them."""
    train_iter, test_iter = d2l.load_data_fashion_mnist(100, root=fake_root, verify=False)
    assert len(train_iter) == 6 and len(test_iter) == 2
    X, y = next(iter(train_iter))
    assert X.shape == (100, 1, 28, 28) and X.dtype == torch.float32 and 0 <= X.min() and X.max() <= 1
    assert y.dtype == torch.int64 and d2l.size(y) == 100
    assert d2l.accuracy(torch.eye(3), torch.tensor([0, 1, 0])) == 2.0
    metric = d2l.Accumulator(2)
    metric.add(1, torch.tensor(2.0))
    metric.add(3, 4)
    assert metric[0] == 4.0 and metric[1] == 6.0
    metric.reset()
    assert metric.data == [0.0, 0.0]
    timer = d2l.Timer()
    timer.stop()
    assert len(timer.times) == 1 and timer.sum() >= 0 and timer.avg() == timer.sum() and len(timer.cumsum()) == 1
    assert d2l.try_gpu() == torch.device("cpu") and d2l.try_all_gpus() == [torch.device("cpu")]
    assert d2l.get_fashion_mnist_labels([0, 9]) == ["t-shirt", "ankle boot"]
    assert torch.equal(
        d2l.corr2d(torch.arange(9.0).reshape(3, 3), torch.tensor([[0.0, 1.0], [2.0, 3.0]])),
        torch.tensor([[19.0, 25.0], [37.0, 43.0]]),
    )  # fmt: skip  (d2l 6.2's example)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    ours = d2l.evaluate_accuracy_gpu(net, test_iter)
    theirs = sum(d2l.accuracy(net(X), y) for X, y in test_iter) / 200
    assert ours == pytest.approx(theirs) and not net.training  # d2l leaves the net in eval mode
    assert d2l.evaluate_accuracy(net, list(test_iter)) == pytest.approx(theirs)  # any iterable of batches
    resized, _ = d2l.load_data_fashion_mnist(10, resize=32, root=fake_root, verify=False)
    assert next(iter(resized))[0].shape == (10, 1, 32, 32)


def test_train_ch6_takes_a_dataloader(fake_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    train_iter, test_iter = d2l.load_data_fashion_mnist(100, root=fake_root, verify=False)
    X, y = train_iter.split.images, train_iter.split.labels
    loader = d2l.load_array((X, y), 50)  # a torch DataLoader, as chapter 3 makes them
    torch.manual_seed(0)
    d2l.train_ch6(lenet_net(), loader, d2l.load_array((X[:100], y[:100]), 50, is_train=False), 1, 0.9, "cpu")
    assert D2L_CLOSING.fullmatch(capsys.readouterr().out.removeprefix("training on cpu\n"))


def test_verification_and_its_switches(fake_root, monkeypatch):
    monkeypatch.delenv("LENET_NO_VERIFY", raising=False)
    with pytest.raises(LenetError, match=r"checksum does not match .*pass verify=False \(or set LENET_NO_VERIFY=1\)"):
        d2l.load_data_fashion_mnist(32, root=fake_root)
    train_iter, _ = d2l.load_data_fashion_mnist(32, root=fake_root, verify=False)
    assert isinstance(train_iter, DataIter)
    monkeypatch.setenv("LENET_DATA", str(fake_root))
    monkeypatch.setenv("LENET_NO_VERIFY", "1")
    assert len(d2l.load_data_fashion_mnist(32)[1]) == 7  # 200 test images
    mnist, _ = d2l.load_data_fashion_mnist(32, dataset="mnist")
    assert len(mnist.split) == 600


class Files(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    asked: list[str] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        self.asked.append(name)
        body = self.files.get(name)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_downloads_verified_on_first_use(fake_root, tmp_path, monkeypatch):
    """As d2l's helper: the first call fetches what is missing (here from a local server), checked."""
    info = lenet_data.DATASETS["fashion-mnist"]
    blobs, specs = {}, []
    for spec in info.files:
        path = write_idx(tmp_path / spec.name, lenet_data.read_idx(fake_root / "fashion-mnist" / spec.name))
        blobs[spec.name] = path.read_bytes()
        payload = gzip.decompress(blobs[spec.name])
        specs.append(dataclasses.replace(spec, archive_md5=hashlib.md5(blobs[spec.name]).hexdigest(),
                                         payload_md5=hashlib.md5(payload).hexdigest()))  # fmt: skip
    Files.files, Files.asked = blobs, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        mirror = f"http://127.0.0.1:{server.server_port}/"
        served = dataclasses.replace(info, train_images=specs[0], train_labels=specs[1], test_images=specs[2],
                                     test_labels=specs[3], mirrors=(mirror,))  # fmt: skip
        monkeypatch.setitem(lenet_data.DATASETS, "fashion-mnist", served)
        root = tmp_path / "empty"
        train_iter, test_iter = d2l.load_data_fashion_mnist(64, root=root)
        assert len(train_iter.split) == 600 and len(test_iter.split) == 200
        assert sorted(Files.asked) == sorted(blobs)
        d2l.load_data_fashion_mnist(64, root=root)
        assert len(Files.asked) == 4  # the second call finds everything on disk
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    "act,record,hint",
    [
        (nn.ReLU(), {"train_loss": 2.30, "train_acc": 0.11, "steps": 2350}, "ReLU nets at lr 0.9 often die or diverge"),
        (nn.Sigmoid(), {"train_loss": 2.30, "train_acc": 0.10, "steps": 470}, "near chance for several hundred steps"),
        (nn.Sigmoid(), {"train_loss": 2.30, "train_acc": 0.10, "steps": 9000}, "try another learning rate than 0.9"),
        (nn.ReLU(), {"train_loss": float("nan"), "train_acc": 0.10}, "the loss diverged (nan); try a lower"),
        (nn.ReLU(), {"train_loss": 0.1, "train_acc": 0.97, "steps": 2350}, None),
    ],
)
def test_hints_when_training_stays_at_chance(act, record, hint):
    said = chance_hint(nn.Sequential(nn.Linear(2, 2), act), record, 0.9)
    assert (said is None) if hint is None else (hint in said and said.startswith("hint: "))


class TutorialNet(nn.Module):
    """A reader's own module (the PyTorch tutorial's style: layers as attributes, pooling in forward)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5, padding=2), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(16 * 5 * 5, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def test_train_ch6_takes_a_module_of_the_readers_own_and_lenet_takes_d2ls_iterators(reader, capsys):
    import lenet

    train_iter, test_iter = d2l.load_data_fashion_mnist(64)
    torch.manual_seed(0)
    net = TutorialNet()
    d2l.train_ch6(net, train_iter, test_iter, 2, 0.1, d2l.try_gpu())
    assert D2L_CLOSING.fullmatch(capsys.readouterr().out.removeprefix("training on cpu\n"))
    assert d2l.evaluate_accuracy_gpu(net, test_iter) > 0.5  # learned something (chance: 0.1)
    history = lenet.fit(net, train_iter, test=test_iter, progress=False)  # d2l's iterators, as they are
    assert history.epochs[-1]["test_acc"] == pytest.approx(lenet.evaluate(net, test_iter)["acc"])
