"""Dataset loaders on small files the test writes in the real on-disk formats (no network)."""
from __future__ import annotations

import gzip
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from smoothsqueeze.data import download_reason, load_dataset, prepare, prepare_digits
from smoothsqueeze.errors import PipelineError


def write_idx_images(path: Path, images: np.ndarray) -> None:
    path.write_bytes(struct.pack(">IIII", 2051, len(images), 28, 28) + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    path.write_bytes(struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes())


def make_mnist(root: Path, n_train: int = 30, n_test: int = 12, gz: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's layout: <root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    x_test = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    y_train, y_test = np.arange(n_train) % 10, (np.arange(n_test) * 3) % 10
    for prefix, x, y in (("train", x_train, y_train), ("t10k", x_test, y_test)):
        write_idx_images(raw / f"{prefix}-images-idx3-ubyte", x)
        write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", y)
        if gz:
            for kind in ("images-idx3", "labels-idx1"):
                plain = raw / f"{prefix}-{kind}-ubyte"
                Path(f"{plain}.gz").write_bytes(gzip.compress(plain.read_bytes()))
                plain.unlink()
    return x_test, y_test


def make_cifar(root: Path, per_batch: int = 4, n_test: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's layout: <root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} (pickled dicts)."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(1, 6):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        with open(base / f"data_batch_{i}", "wb") as fh:
            pickle.dump({"data": data, "labels": list(range(per_batch))}, fh)
    test = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    labels = [(3 * i) % 10 for i in range(n_test)]
    with open(base / "test_batch", "wb") as fh:
        pickle.dump({"data": test, "labels": labels}, fh)
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": ["c%d" % i for i in range(10)]}, fh)
    return test.reshape(-1, 3, 32, 32), np.array(labels)


def test_digits_split_is_fixed_and_scaled(tmp_path: Path) -> None:
    prepare_digits(tmp_path / "digits.npz")
    ds = load_dataset(tmp_path / "digits.npz")
    assert ds.x_train.shape == (1437, 1, 8, 8) and ds.x_test.shape == (360, 1, 8, 8)
    assert ds.max_value == 16.0 and int(ds.x_train.max()) == 16
    assert ds.scale(ds.x_test).max().item() == 1.0
    assert ds.num_classes == 10
    prepare_digits(tmp_path / "again.npz")
    assert (load_dataset(tmp_path / "again.npz").y_test == ds.y_test).all()


def test_mnist_loader_on_idx_files(tmp_path: Path) -> None:
    x_test, y_test = make_mnist(tmp_path / "user")
    out = tmp_path / "data" / "mnist.npz"
    prepare("mnist", out, data_root=tmp_path / "user", download_dir=tmp_path / "data" / "downloads" / "mnist", verify=False)
    ds = load_dataset(out)
    assert ds.x_train.shape == (30, 1, 28, 28) and ds.x_test.shape == (12, 1, 28, 28)
    assert np.array_equal(ds.x_test[:, 0].numpy(), x_test) and np.array_equal(ds.y_test.numpy(), y_test)
    assert ds.max_value == 255.0


def test_mnist_loader_on_gz_files(tmp_path: Path) -> None:
    x_test, _ = make_mnist(tmp_path / "user", gz=True)
    out = tmp_path / "data" / "mnist.npz"
    prepare("mnist", out, data_root=tmp_path / "user", download_dir=tmp_path / "data" / "downloads" / "mnist", verify=False)
    assert np.array_equal(load_dataset(out).x_test[:, 0].numpy(), x_test)


def test_mnist_gz_with_wrong_checksum_is_refused(tmp_path: Path) -> None:
    make_mnist(tmp_path / "user", gz=True)
    out = tmp_path / "data" / "mnist.npz"
    with pytest.raises(PipelineError, match=r"train-images-idx3-ubyte\.gz: MD5 checksum does not match"):
        prepare("mnist", out, data_root=tmp_path / "user", download_dir=tmp_path / "dl", verify=True)
    assert not out.exists()


def test_cifar10_loader_on_pickled_batches(tmp_path: Path) -> None:
    x_test, y_test = make_cifar(tmp_path / "user")
    out = tmp_path / "cifar10.npz"
    prepare("cifar10", out, data_root=tmp_path / "user", verify=False)
    ds = load_dataset(out)
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (6, 3, 32, 32)
    assert np.array_equal(ds.x_test.numpy(), x_test) and np.array_equal(ds.y_test.numpy(), y_test)


def test_cifar10_checksums_refuse_files_that_are_not_the_real_ones(tmp_path: Path) -> None:
    make_cifar(tmp_path / "user")
    with pytest.raises(PipelineError, match="cifar-10-batches-py"):
        prepare("cifar10", tmp_path / "c.npz", data_root=tmp_path / "user", verify=True)
    assert not (tmp_path / "c.npz").exists()


def test_missing_data_root_files_say_where_to_put_them(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(PipelineError) as err:
        prepare("mnist", tmp_path / "m.npz", data_root=tmp_path / "empty", download_dir=tmp_path / "dl", verify=True)
    assert "MNIST/raw" in str(err.value) and "\n" not in str(err.value)


def test_failed_download_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No network here (and in CI): torchvision's real download fails; make sure of it for hosts that have one.
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    out = tmp_path / "data" / "mnist.npz"
    with pytest.raises(PipelineError) as err:
        prepare("mnist", out, download_dir=tmp_path / "data" / "downloads" / "mnist")
    assert "download failed" in str(err.value) and "MNIST/raw" in str(err.value)
    assert "\n" not in str(err.value) and "():" not in str(err.value) and ":)" not in str(err.value), err.value
    assert not out.exists()
    leftovers = list((tmp_path / "data").rglob("*"))
    assert [p for p in leftovers if p.is_file()] == []


def test_a_failed_download_ends_on_its_cause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision puts each mirror's cause on the lines after 'Error downloading <file>:'; the one line keeps them."""
    import torchvision

    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://127.0.0.1:9/mnist/"])
    monkeypatch.setenv("no_proxy", "*")
    with pytest.raises(PipelineError) as err:
        prepare("mnist", tmp_path / "mnist.npz", download_dir=tmp_path / "dl")
    text = str(err.value)
    assert "\n" not in text
    match = re.search(r"download failed \(could not download train-images-idx3-ubyte\.gz: tried http://127\.0\.0\.1:9/mnist/: ([^;)]+)\)", text)
    assert match and match.group(1).strip(), text  # the cause itself, e.g. 'Connection refused'


def test_download_reason_of_torchvision_messages() -> None:
    from urllib.error import URLError

    mnist = RuntimeError("Error downloading t.gz:\nTried https://a/, got:\n<urlopen error [Errno -2] Name or service not known>\n"
                         "Tried http://b/, got:\nHTTP Error 404: Not Found\n")
    assert download_reason(mnist) == "could not download t.gz: tried https://a/: Name or service not known; tried http://b/: HTTP Error 404: Not Found"
    assert download_reason(URLError("[Errno -3] Temporary failure in name resolution")) == "Temporary failure in name resolution"
    assert download_reason(RuntimeError("")) == "RuntimeError"
    assert download_reason(RuntimeError("Error downloading t.gz:")) == "could not download t.gz: no cause given"


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist", "cifar10"])
def test_a_data_root_that_does_not_exist_says_so(tmp_path: Path, dataset: str) -> None:
    with pytest.raises(PipelineError) as err:
        prepare(dataset, tmp_path / "d.npz", data_root=tmp_path / "no such folder", download_dir=tmp_path / "dl")
    text = str(err.value)
    assert f"{dataset}: data_root {tmp_path / 'no such folder'} does not exist (no such folder)" in text and "\n" not in text
    assert not (tmp_path / "dl").exists() and not (tmp_path / "d.npz").exists()
