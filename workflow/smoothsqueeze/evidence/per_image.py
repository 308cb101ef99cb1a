"""Per-image results: which attacked images a model classified correctly, one bit per image.

Records keep them as JSON-safe, checksummed strings: `np.packbits` of the boolean mask,
base64-encoded, with the mask's length and the SHA-256 of the packed bytes. A test set of
10,000 images costs 1,250 bytes (about 1.7 kB in the record) per attack. The attacked images
are named by their test-set indices, kept the same way (int32 differences between consecutive
indices, zlib-compressed, base64: the usual run of the first n images costs a few bytes).

    record["per_image"] = {"indices": <encoded indices>, "correct": {"test": <mask>, "whitebox_pgd40_xent": <mask>, ...}}
"""
from __future__ import annotations

import base64
import hashlib
import zlib
from typing import Any, Mapping

import numpy as np

from ..errors import PipelineError

#: Keys of an encoded mask / index array.
MASK_KEYS = ("n", "bits", "sha256")
INDEX_KEYS = ("n", "data", "sha256")


def encode_mask(mask: Any) -> dict[str, Any]:
    """A boolean mask (any array-like of bools) as {"n", "bits", "sha256"}."""
    flat = np.asarray(mask, dtype=bool).reshape(-1)
    packed = np.packbits(flat).tobytes()
    return {"n": int(flat.size), "bits": base64.b64encode(packed).decode("ascii"), "sha256": hashlib.sha256(packed).hexdigest()}


def decode_mask(encoded: Mapping[str, Any], what: str = "per-image mask") -> np.ndarray:
    """The boolean mask of `encode_mask`; a damaged or altered one is refused, naming `what`."""
    try:
        n, packed = int(encoded["n"]), base64.b64decode(encoded["bits"], validate=True)
        expected = encoded["sha256"]
    except (KeyError, TypeError, ValueError) as err:
        raise PipelineError(f"{what}: not an encoded per-image mask ({err}); rerun the stage that wrote it") from None
    if hashlib.sha256(packed).hexdigest() != expected:
        raise PipelineError(f"{what}: its per-image bits do not match their sha256 (damaged or edited); rerun the stage that wrote it")
    if len(packed) != (n + 7) // 8:
        raise PipelineError(f"{what}: holds {len(packed)} bytes for {n} images; rerun the stage that wrote it")
    return np.unpackbits(np.frombuffer(packed, dtype=np.uint8), count=n).astype(bool)


def encode_indices(indices: Any) -> dict[str, Any]:
    """Test-set indices (non-negative integers) as {"n", "data", "sha256"}: int32 deltas, zlib, base64; sha256 of the int32 indices."""
    arr = np.asarray(indices, dtype=np.int64).reshape(-1)
    if arr.size and (arr.min() < 0 or arr.max() > np.iinfo(np.int32).max):
        raise ValueError("indices must be non-negative int32 values")
    deltas = np.diff(arr, prepend=0).astype("<i4").tobytes()
    raw = arr.astype("<i4").tobytes()
    return {"n": int(arr.size), "data": base64.b64encode(zlib.compress(deltas, 9)).decode("ascii"), "sha256": hashlib.sha256(raw).hexdigest()}


def decode_indices(encoded: Mapping[str, Any], what: str = "per-image indices") -> np.ndarray:
    """The int64 indices of `encode_indices`; a damaged or altered array is refused, naming `what`."""
    try:
        deltas = zlib.decompress(base64.b64decode(encoded["data"], validate=True))
        n, expected = int(encoded["n"]), encoded["sha256"]
    except (KeyError, TypeError, ValueError, zlib.error) as err:
        raise PipelineError(f"{what}: not encoded indices ({err}); rerun the stage that wrote it") from None
    if len(deltas) != 4 * n:
        raise PipelineError(f"{what}: holds {len(deltas) // 4} indices for n = {n}; rerun the stage that wrote it")
    indices = np.cumsum(np.frombuffer(deltas, dtype="<i4").astype(np.int64))
    if hashlib.sha256(indices.astype("<i4").tobytes()).hexdigest() != expected:
        raise PipelineError(f"{what}: its indices do not match their sha256 (damaged or edited); rerun the stage that wrote it")
    return indices


def encode_results(indices: Any, masks: Mapping[str, Any]) -> dict[str, Any]:
    """The `per_image` block of a record: the attacked images' indices and one mask per result key."""
    idx = encode_indices(indices)
    correct = {key: encode_mask(mask) for key, mask in masks.items()}
    for key, enc in correct.items():
        if enc["n"] != idx["n"]:
            raise ValueError(f"per-image mask {key!r} has {enc['n']} images, the indices {idx['n']}")
    return {"indices": idx, "correct": correct}


def decode_results(block: Mapping[str, Any] | None, what: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(indices, {key: mask}) of a record's `per_image` block; a record without one is refused, naming `what`."""
    if not block:
        raise PipelineError(f"{what}: has no per-image results (written before they were kept); rerun its stage")
    try:
        indices = decode_indices(block["indices"], f"{what} indices")
        masks = {key: decode_mask(enc, f"{what} {key}") for key, enc in block["correct"].items()}
    except (KeyError, TypeError, AttributeError) as err:
        raise PipelineError(f"{what}: its per-image block is malformed ({err}); rerun its stage") from None
    for key, mask in masks.items():
        if len(mask) != len(indices):
            raise PipelineError(f"{what}: per-image mask {key!r} has {len(mask)} images, its indices {len(indices)}")
    return indices, masks


def record_masks(record: Mapping[str, Any], what: str | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(test indices, {accuracy key: mask}) of an evaluation or audit record."""
    name = what or f"record of {record.get('model_id', '?')}"
    return decode_results(record.get("per_image"), name)


def restrict(indices: np.ndarray, masks: Mapping[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    """The masks on the images `keep` (test indices), in `keep`'s order; every one must have been attacked."""
    position = {int(i): p for p, i in enumerate(indices)}
    try:
        rows = np.array([position[int(i)] for i in keep], dtype=np.int64)
    except KeyError as err:
        raise PipelineError(f"test image {err} was not attacked in the record; the two cannot be compared image by image") from None
    return {key: np.asarray(mask, dtype=bool)[rows] for key, mask in masks.items()}


def percent(mask: np.ndarray) -> float:
    """Accuracy (%) of a mask; NaN for no images."""
    return 100.0 * float(np.mean(mask)) if len(mask) else float("nan")
