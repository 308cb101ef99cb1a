"""Fashion-MNIST in the data stage, and the per-file checks of MNIST / Fashion-MNIST / CIFAR-10 files.

Most tests write tiny files in the real on-disk formats (IDX, .gz or not) under a fake data_root
or a fake copy of Debian's folder. The last ones read Debian's real files
(`apt-get install dataset-fashion-mnist`): they skip without them, except in CI, where they fail.
"""
from __future__ import annotations

import gzip
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from smoothsqueeze import data as data_module
from smoothsqueeze.data import CONTENT_MD5, IDX_FILES, Dataset, fashion_mnist_system_dir, load_dataset, prepare
from smoothsqueeze.errors import PipelineError
from smoothsqueeze.train import train_model
from test_data import make_cifar, make_mnist

ROOT = Path(__file__).resolve().parent.parent
N_TRAIN, N_TEST = 20, 10


def idx_bytes(kind: str, array: np.ndarray) -> bytes:
    """An IDX file as MNIST and Fashion-MNIST store them: big-endian header, then unsigned bytes."""
    if kind == "images":
        return struct.pack(">IIII", 0x803, len(array), 28, 28) + array.astype(np.uint8).tobytes()
    return struct.pack(">II", 0x801, len(array)) + array.astype(np.uint8).tobytes()


def write_fashion(raw: Path, gz: bool) -> dict[str, np.ndarray]:
    """The four Fashion-MNIST files, tiny (N_TRAIN / N_TEST images), in `raw`; returns the arrays."""
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(N_TRAIN) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(N_TEST) * 7) % 10,
    }
    for fname, kind in IDX_FILES:
        content = idx_bytes(kind, arrays[fname])
        if gz:
            (raw / f"{fname}.gz").write_bytes(gzip.compress(content))
        else:
            (raw / fname).write_bytes(content)
    return arrays


def listing(folder: Path) -> list[tuple[str, int, int]]:
    return sorted((p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


@pytest.fixture(autouse=True)
def no_network_no_system_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No download can succeed, and the system folder is an empty one unless a test points it elsewhere."""
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    empty = tmp_path / "no-system-folder"
    empty.mkdir()
    monkeypatch.setenv("SMOOTHSQUEEZE_FASHION_MNIST_DIR", str(empty))
    return empty


# --- fake files: data_root and the system folder -----------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["uncompressed", "gz"])
def test_fashion_mnist_from_data_root(tmp_path: Path, gz: bool) -> None:
    user = tmp_path / "user"
    arrays = write_fashion(user / "FashionMNIST" / "raw", gz)
    before = listing(user)
    out, scratch = tmp_path / "data" / "fashion_mnist.npz", tmp_path / "data" / "downloads" / "fashion_mnist"
    prepare("fashion_mnist", out, data_root=user, download_dir=scratch, verify=False)
    ds = load_dataset(out)
    assert ds.x_train.shape == (N_TRAIN, 1, 28, 28) and ds.x_test.shape == (N_TEST, 1, 28, 28) and ds.max_value == 255.0
    assert np.array_equal(ds.x_train[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(ds.y_test.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert listing(user) == before  # nothing written next to the user's files
    # .gz files are unpacked into the download folder (scratch); uncompressed ones are read in place
    assert sorted(p.name for p in files_under(scratch)) == (sorted(f for f, _ in IDX_FILES) if gz else [])


def test_fashion_mnist_from_the_system_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    debian = tmp_path / "usr-share-datasets-fashion-mnist"
    arrays = write_fashion(debian, gz=True)
    monkeypatch.setenv("SMOOTHSQUEEZE_FASHION_MNIST_DIR", str(debian))
    assert fashion_mnist_system_dir() == debian
    before = listing(debian)
    out, scratch = tmp_path / "data" / "fashion_mnist.npz", tmp_path / "data" / "downloads" / "fashion_mnist"
    prepare("fashion_mnist", out, download_dir=scratch, verify=False)  # no download: the proxy would refuse it
    ds = load_dataset(out)
    assert np.array_equal(ds.x_test[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert listing(debian) == before
    assert sorted(p.relative_to(scratch).as_posix() for p in files_under(scratch)) == sorted(f"FashionMNIST/raw/{f}" for f, _ in IDX_FILES)
    # a second run reuses the unpacked copies (and the system_dir argument works like the variable)
    stamps = listing(scratch)
    prepare("fashion_mnist", tmp_path / "again.npz", download_dir=scratch, verify=False, system_dir=debian)
    assert listing(scratch) == stamps and (tmp_path / "again.npz").read_bytes() == out.read_bytes()


@pytest.mark.parametrize("where", ["data_root", "system folder"])
def test_checksums_refuse_files_that_are_not_the_published_ones(tmp_path: Path, where: str) -> None:
    out, scratch = tmp_path / "fashion_mnist.npz", tmp_path / "dl"
    if where == "data_root":
        write_fashion(tmp_path / "user" / "FashionMNIST" / "raw", gz=True)
        kwargs = {"data_root": tmp_path / "user"}
    else:
        write_fashion(tmp_path / "debian", gz=True)
        kwargs = {"system_dir": tmp_path / "debian"}
    with pytest.raises(PipelineError) as err:
        prepare("fashion_mnist", out, download_dir=scratch, verify=True, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / ("user/FashionMNIST/raw" if where == "data_root" else "debian") / "train-images-idx3-ubyte.gz: "))
    assert "checksum mismatch (expected .gz MD5 8d4fb7e6c68d591d4c3dfef9ec88bf0d or decompressed MD5 " in message
    assert CONTENT_MD5["fashion_mnist"]["train-images-idx3-ubyte"] in message and "got .gz MD5 " in message
    assert not out.exists() and files_under(scratch) == []


def test_checksums_of_uncompressed_fashion_mnist_files_use_the_decompressed_reference(tmp_path: Path) -> None:
    write_fashion(tmp_path / "user" / "FashionMNIST" / "raw", gz=False)
    with pytest.raises(PipelineError, match=r"train-images-idx3-ubyte: MD5 checksum does not match.*checksum mismatch \(expected MD5 f4a8712d7a061bf5bd6d2ca38dc4d50a, got MD5 [0-9a-f]{32}\)"):
        prepare("fashion_mnist", tmp_path / "f.npz", data_root=tmp_path / "user", download_dir=tmp_path / "dl", verify=True)


@pytest.mark.parametrize("verify", [False, True], ids=["unverified", "verified"])
@pytest.mark.parametrize("gz", [False, True], ids=["uncompressed", "gz"])
def test_damaged_file_is_named_as_not_an_idx_file(tmp_path: Path, gz: bool, verify: bool) -> None:
    raw = tmp_path / "user" / "FashionMNIST" / "raw"
    write_fashion(raw, gz)
    damaged = raw / ("t10k-images-idx3-ubyte" + (".gz" if gz else ""))
    damaged.write_bytes(np.random.default_rng(5).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    out = tmp_path / "fashion_mnist.npz"
    with pytest.raises(PipelineError) as err:
        prepare("fashion_mnist", out, data_root=tmp_path / "user", download_dir=tmp_path / "dl", verify=verify)
    message = str(err.value)
    assert message.startswith(f"{damaged}: ") and "not an IDX file" in message and "\n" not in message
    assert "AssertionError" not in message and "no usable files" not in message
    assert not out.exists() and files_under(tmp_path / "dl") == []


def test_truncated_and_mismatched_files_give_the_wrong_number_of_images(tmp_path: Path) -> None:
    raw = tmp_path / "user" / "FashionMNIST" / "raw"
    write_fashion(raw, gz=False)
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])  # cut short
    with pytest.raises(PipelineError, match=r"train-images-idx3-ubyte: wrong number of images \(the header says 20 .*truncated"):
        prepare("fashion_mnist", tmp_path / "f.npz", data_root=tmp_path / "user", download_dir=tmp_path / "dl", verify=False)
    images.write_bytes(idx_bytes("images", np.zeros((N_TRAIN - 1, 28, 28))))  # well formed, one image short of the labels
    with pytest.raises(PipelineError, match=r"train-images-idx3-ubyte: wrong number of images \(19, but .*train-labels-idx1-ubyte holds 20 labels\)"):
        prepare("fashion_mnist", tmp_path / "f.npz", data_root=tmp_path / "user", download_dir=tmp_path / "dl", verify=False)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes("images", np.zeros((N_TEST, 28, 28))))  # images where labels belong
    images.write_bytes(idx_bytes("images", np.zeros((N_TRAIN, 28, 28))))
    with pytest.raises(PipelineError, match=r"t10k-labels-idx1-ubyte: not an IDX file \(magic 0x00000803; IDX labels files start with 0x00000801\)"):
        prepare("fashion_mnist", tmp_path / "f.npz", data_root=tmp_path / "user", download_dir=tmp_path / "dl", verify=False)


def test_missing_file_is_named(tmp_path: Path) -> None:
    raw = tmp_path / "user" / "FashionMNIST" / "raw"
    write_fashion(raw, gz=True)
    (raw / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(PipelineError) as err:
        prepare("fashion_mnist", tmp_path / "f.npz", data_root=tmp_path / "user", download_dir=tmp_path / "dl", verify=True)
    message = str(err.value)
    assert message.startswith(f"fashion_mnist: files missing under data_root {tmp_path / 'user'}: train-labels-idx1-ubyte[.gz] missing from ")
    assert "\n" not in message
    assert str(raw) in message and "t10k" not in message.split(";")[0]


def test_offline_download_fails_in_one_line_and_keeps_nothing(tmp_path: Path) -> None:
    # The system folder is empty (autouse fixture): the only source left is a download, refused by the proxy.
    out = tmp_path / "data" / "fashion_mnist.npz"
    with pytest.raises(PipelineError) as err:
        prepare("fashion_mnist", out, download_dir=tmp_path / "data" / "downloads" / "fashion_mnist")
    message = str(err.value)
    assert message.startswith("fashion_mnist: download failed (") and "apt-get install dataset-fashion-mnist" in message
    assert "FashionMNIST/raw" in message and "\n" not in message
    assert files_under(tmp_path / "data") == []


# --- the same checks for MNIST and CIFAR-10 ------------------------------------------------------


def test_mnist_damaged_file_is_named_instead_of_an_assertion_error(tmp_path: Path) -> None:
    make_mnist(tmp_path / "user")
    damaged = tmp_path / "user" / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    damaged.write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 30) + bytes(10))  # header says 30 labels, holds 10
    with pytest.raises(PipelineError) as err:
        prepare("mnist", tmp_path / "m.npz", data_root=tmp_path / "user", download_dir=tmp_path / "dl", verify=False)
    assert str(err.value).startswith(f"{damaged}: wrong number of labels (the header says 30")
    # uncompressed MNIST has no content reference: with checksums on, the header and size are what is checked
    make_mnist(tmp_path / "good")
    prepare("mnist", tmp_path / "m.npz", data_root=tmp_path / "good", download_dir=tmp_path / "dl", verify=True)
    assert load_dataset(tmp_path / "m.npz").x_train.shape == (30, 1, 28, 28)


def test_cifar10_damaged_batch_is_named(tmp_path: Path) -> None:
    make_cifar(tmp_path / "user")
    damaged = tmp_path / "user" / "cifar-10-batches-py" / "data_batch_3"
    damaged.write_bytes(b"not a pickle" * 10)
    with pytest.raises(PipelineError) as err:
        prepare("cifar10", tmp_path / "c.npz", data_root=tmp_path / "user", verify=False)
    assert str(err.value).startswith(f"{damaged}: not a CIFAR-10 batch (") and "\n" not in str(err.value)
    with pytest.raises(PipelineError, match=r"data_batch_1: MD5 checksum does not match.*checksum mismatch \(expected c99cafc152244af753f735de768cd75f, got "):
        prepare("cifar10", tmp_path / "c.npz", data_root=tmp_path / "user", verify=True)
    assert not (tmp_path / "c.npz").exists()


# --- Debian's real files -------------------------------------------------------------------------


def real_system_folder() -> Path:
    """Debian's folder with the four .gz files; skips without it, but fails in CI (CI=true)."""
    folder = data_module.FASHION_MNIST_SYSTEM_DIR
    if all((folder / f"{fname}.gz").is_file() for fname, _ in IDX_FILES):
        return folder
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{folder} lacks Fashion-MNIST's .gz files: this test must run in CI (.ci/run installs dataset-fashion-mnist)")
    pytest.skip("apt-get install dataset-fashion-mnist")


def test_without_debian_files_real_data_tests_skip_but_fail_in_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_module, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "absent")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install dataset-fashion-mnist"):
        real_system_folder()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="must run in CI"):
        real_system_folder()


@pytest.fixture(scope="module")
def real_fashion_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Debian's Fashion-MNIST prepared with checksums on, through the real command line."""
    folder = real_system_folder()
    work = tmp_path_factory.mktemp("real_fashion_mnist")
    before = listing(folder)
    env = {**os.environ, "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9", "SMOOTHSQUEEZE_FASHION_MNIST_DIR": str(folder)}
    cmd = [sys.executable, "-m", "smoothsqueeze", "prepare-data", "fashion_mnist", "--out", str(work / "data" / "fashion_mnist.npz"),
           "--download-dir", str(work / "data" / "downloads" / "fashion_mnist")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert listing(folder) == before
    return work / "data" / "fashion_mnist.npz"


@pytest.mark.slow
def test_real_fashion_mnist_from_debian(real_fashion_mnist: Path) -> None:
    ds = load_dataset(real_fashion_mnist)
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.x_train.dtype == torch.uint8 and ds.max_value == 255.0 and int(ds.x_train.max()) == 255
    assert set(ds.y_train.unique().tolist()) == set(range(10)) == set(ds.y_test.unique().tolist())
    assert torch.bincount(ds.y_train).tolist() == [6000] * 10
    assert torch.bincount(ds.y_test).tolist() == [1000] * 10


@pytest.mark.slow
def test_madry_cnn_trains_on_real_fashion_mnist(real_fashion_mnist: Path, tmp_path: Path) -> None:
    full = load_dataset(real_fashion_mnist)
    ds = Dataset(full.x_train[:1000], full.y_train[:1000], full.x_test[:200], full.y_test[:200], full.max_value)
    settings = {
        "seed": 0, "architecture": "madry_cnn", "k": 30, "alpha": 0, "beta": 0, "sigma01": 0, "adversarial": None,
        "train": {"optimizer": "adam", "lr": 0.001, "batch_size": 50, "log_every": 10, "checkpoint_every": 1000},
    }
    model, metrics = train_model(settings, ds, tmp_path, torch.device("cpu"), log=lambda _: None)
    assert model.fc1.in_features == 7 * 7 * 64  # Madry's CNN on 28x28
    history = metrics["history"]
    assert [h["iteration"] for h in history] == [10, 20, 30] and all(math.isfinite(h["loss"]) for h in history)
    # 30 Adam steps on real images learn: the loss falls from its first logged value and the test
    # accuracy is far above the 10% of chance (a model that did not train, or data that were not
    # real images with their labels, would sit near 10%).
    assert history[-1]["loss"] < history[0]["loss"], history
    assert metrics["test_accuracy"] > 40, metrics["test_accuracy"]
