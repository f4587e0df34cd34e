import json

from lenet.cli import main


def test_train_dry_run_on_generated_data(fake_root, capsys):
    assert main(["train", "--dataset", "mnist", "--root", str(fake_root), "--no-verify", "--dry-run", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 1
    assert summary["device"] == "cpu"
