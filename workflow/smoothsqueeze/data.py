"""Datasets: preparation into one compact .npz per dataset, and loading for training.

The prepared file holds uint8 images `x_train`, `x_test` (N, C, H, W), int64 labels
`y_train`, `y_test` and `max_value` (pixel value that maps to 1.0). MNIST and CIFAR-10 come
through torchvision's dataset classes; the scikit-learn digits need no download.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .artifacts import atomic_path, read_npz, write_npz
from .errors import PipelineError

DATASETS = ("digits", "mnist", "cifar10")
DIGITS_TEST_SIZE = 360
#: Expected shapes (C, H, W) and split sizes of the real datasets.
SHAPES = {"mnist": ((1, 28, 28), 60000, 10000), "cifar10": ((3, 32, 32), 50000, 10000), "digits": ((1, 8, 8), 1437, 360)}
MANUAL_HELP = {
    "mnist": "put train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte "
    "(or their .gz) in <dir>/MNIST/raw/ and set data_root: <dir> in config.yaml",
    "cifar10": "extract cifar-10-python.tar.gz so that <dir>/cifar-10-batches-py/ holds data_batch_1..5 and test_batch, "
    "and set data_root: <dir> in config.yaml",
}


@dataclass
class Dataset:
    """A prepared dataset held as tensors (uint8 images; divide by `max_value` for [0, 1])."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    max_value: float

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max()).item()) + 1

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def to(self, device: torch.device) -> "Dataset":
        return Dataset(self.x_train.to(device), self.y_train.to(device), self.x_test.to(device), self.y_test.to(device), self.max_value)

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 batch -> float32 in [0, 1]."""
        return x.float().div_(self.max_value)


def load_dataset(path: str | Path, dataset: str | None = None) -> Dataset:
    """Read a prepared .npz and check it before anything trains or is evaluated on it.

    `dataset` (default: the file's name when it is one of DATASETS, e.g. data/digits.npz) sets
    the image shape expected; a file of another shape, labels outside 0..9 or a bad
    `max_value` is refused with one line naming the file.
    """
    arrays = read_npz(path, required=("x_train", "y_train", "x_test", "y_test", "max_value"))
    if dataset is None and Path(path).stem in SHAPES:
        dataset = Path(path).stem
    redo = "delete it and rerun the data stage (snakemake prepares it again)"
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 4 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
            raise PipelineError(f"{path}: x_{split} has shape {x.shape} and y_{split} {y.shape}; expected (N, C, H, W) and (N,); {redo}")
        if dataset in SHAPES and tuple(x.shape[1:]) != SHAPES[dataset][0]:
            raise PipelineError(f"{path}: x_{split} has images of shape {tuple(x.shape[1:])}, {dataset} images are {SHAPES[dataset][0]}; {redo}")
        if x.dtype != np.uint8 or not np.issubdtype(y.dtype, np.integer):
            raise PipelineError(f"{path}: x_{split} is {x.dtype} and y_{split} {y.dtype}; expected uint8 images and integer labels; {redo}")
        if y.min() < 0 or y.max() > 9:
            raise PipelineError(f"{path}: y_{split} labels span {y.min()}..{y.max()}; expected 0..9; {redo}")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise PipelineError(f"{path}: train images are {arrays['x_train'].shape[1:]} but test images {arrays['x_test'].shape[1:]}; {redo}")
    max_value = arrays["max_value"]
    if max_value.size != 1 or not np.isfinite(max_value).all() or float(max_value.reshape(-1)[0]) <= 0:
        raise PipelineError(f"{path}: max_value is {max_value!r}; expected one positive number; {redo}")
    return Dataset(
        torch.from_numpy(arrays["x_train"]),
        torch.from_numpy(arrays["y_train"]).long(),
        torch.from_numpy(arrays["x_test"]),
        torch.from_numpy(arrays["y_test"]).long(),
        float(max_value.reshape(-1)[0]),
    )


def _save(out: str | Path, name: str, x_train, y_train, x_test, y_test, max_value: float) -> None:  # type: ignore[no-untyped-def]
    shape = SHAPES[name][0]
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if tuple(x.shape[1:]) != shape or len(x) != len(y) or len(x) == 0:
            raise PipelineError(f"{name} {split} split has images of shape {tuple(x.shape)} and {len(y)} labels; expected (N, {shape})")
        if y.min() < 0 or y.max() > 9:
            raise PipelineError(f"{name} {split} labels span {y.min()}..{y.max()}; expected 0..9")
    write_npz(
        out,
        x_train=np.ascontiguousarray(x_train, dtype=np.uint8),
        y_train=np.asarray(y_train, dtype=np.int64),
        x_test=np.ascontiguousarray(x_test, dtype=np.uint8),
        y_test=np.asarray(y_test, dtype=np.int64),
        max_value=np.float32(max_value),
    )


def prepare_digits(out: str | Path, seed: int = 0) -> None:
    """scikit-learn's 8x8 digits (values 0-16), a fixed stratified split of 1437 / 360."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.uint8)[:, None]
    x_tr, x_te, y_tr, y_te = train_test_split(images, digits.target, test_size=DIGITS_TEST_SIZE, random_state=seed, stratify=digits.target)
    _save(out, "digits", x_tr, y_tr, x_te, y_te, 16.0)


def _torchvision_splits(name: str, root: Path, download: bool, verify: bool):  # type: ignore[no-untyped-def]
    from torchvision import datasets

    if name == "mnist":
        train = datasets.MNIST(root, train=True, download=download)
        test = datasets.MNIST(root, train=False, download=download)
        return train.data.numpy()[:, None], train.targets.numpy(), test.data.numpy()[:, None], test.targets.numpy()
    cls = datasets.CIFAR10 if verify else _unchecked_cifar10()
    train = cls(root, train=True, download=download)
    test = cls(root, train=False, download=download)
    to_nchw = lambda a: np.ascontiguousarray(a.transpose(0, 3, 1, 2))  # noqa: E731
    return to_nchw(train.data), np.asarray(train.targets), to_nchw(test.data), np.asarray(test.targets)


def _unchecked_cifar10():  # type: ignore[no-untyped-def]
    from torchvision import datasets

    class UncheckedCIFAR10(datasets.CIFAR10):
        """CIFAR-10 that skips the MD5 check (verify_checksums: false); shapes are still checked."""

        def _check_integrity(self) -> bool:
            base = Path(self.root) / self.base_folder
            return all((base / fname).is_file() for fname, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            self.classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
            self.class_to_idx = {name: i for i, name in enumerate(self.classes)}

    return UncheckedCIFAR10


def _verify_mnist_gz(raw: Path) -> None:
    """Check MNIST .gz files a user supplied against torchvision's published MD5s."""
    from torchvision.datasets import MNIST
    from torchvision.datasets.utils import check_integrity

    for fname, md5 in MNIST.resources:
        path = raw / fname
        if path.exists() and not check_integrity(str(path), md5):
            raise PipelineError(f"{path}: MD5 checksum does not match the published {md5}; replace the file (or set verify_checksums: false)")


def _mnist_uncompressed(root: Path, scratch: Path) -> Path:
    """A root whose MNIST/raw holds uncompressed IDX files; user .gz files are unpacked to `scratch`."""
    import gzip

    raw = root / "MNIST" / "raw"
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    if all((raw / n).is_file() for n in names) or not all((raw / f"{n}.gz").is_file() for n in names):
        return root
    target = scratch / "MNIST" / "raw"
    for n in names:
        if not (target / n).is_file():
            with gzip.open(raw / f"{n}.gz", "rb") as src, atomic_path(target / n) as tmp:
                tmp.write_bytes(src.read())
    return scratch


def prepare_torchvision(name: str, out: str | Path, data_root: str | Path | None, download_dir: str | Path, verify: bool = True) -> None:
    """MNIST or CIFAR-10 from `data_root` (no download) or downloaded into `download_dir`.

    A download goes to a temporary folder that is moved into place only when it finished and
    its checksums matched, so a failed or partial download leaves nothing behind.
    """
    if data_root is not None:
        root = Path(data_root)
        if name == "mnist" and verify:
            _verify_mnist_gz(root / "MNIST" / "raw")
        try:
            readable = _mnist_uncompressed(root, Path(download_dir)) if name == "mnist" else root
            splits = _torchvision_splits(name, readable, download=False, verify=verify)
        except (RuntimeError, ValueError, OSError, EOFError, AssertionError, IndexError) as err:
            # missing files, or damaged ones (a bad .gz, a truncated IDX or pickle batch)
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
            raise PipelineError(f"{name}: no usable files under data_root {root} ({reason}); {MANUAL_HELP[name].replace('<dir>', str(root))}") from None
    else:
        final = Path(download_dir)
        if not (final.exists() and any(final.iterdir())):
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
            try:
                _torchvision_splits(name, tmp, download=True, verify=True)
            except Exception as err:  # noqa: BLE001 - any download failure gets the same advice
                shutil.rmtree(tmp, ignore_errors=True)
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise PipelineError(
                    f"{name}: download failed ({reason}); nothing was kept. To use files you have: {MANUAL_HELP[name]}"
                ) from None
            final.mkdir(parents=True, exist_ok=True)
            for child in tmp.iterdir():
                shutil.move(str(child), final / child.name)
            shutil.rmtree(tmp, ignore_errors=True)
        try:
            splits = _torchvision_splits(name, final, download=False, verify=verify)
        except (RuntimeError, ValueError, OSError, EOFError, AssertionError, IndexError) as err:
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
            raise PipelineError(f"{name}: the downloaded files in {final} are unusable ({reason}); delete {final} and rerun") from None
    _save(out, name, *splits, 255.0)


def prepare(name: str, out: str | Path, data_root: str | Path | None = None, download_dir: str | Path | None = None, verify: bool = True) -> None:
    if name == "digits":
        prepare_digits(out)
    elif name in ("mnist", "cifar10"):
        prepare_torchvision(name, out, data_root, download_dir or Path(out).parent / "downloads" / name, verify)
    else:
        raise PipelineError(f"unknown dataset {name!r}; known: {list(DATASETS)}")
