"""Atomic writing of artifacts and safe reading of the ones the pipeline produced.

Every stage writes through these helpers: data go to a temporary file in the target's
directory, then `os.replace` moves it into place, so an interrupted job never leaves a
file a later stage would accept as finished.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import PipelineError


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; move it onto `path` only if the block succeeds.

    The data are flushed to disk before the rename (and the rename itself after), so even a
    power loss leaves either the old file or the complete new one. The file gets the usual
    permissions (0666 less the umask), not mkstemp's owner-only 0600. A killed process leaves
    at most a hidden `.<name>.*.tmp` file, which no stage reads; see `remove_stale_temps`.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_current_umask())
        _fsync_file(tmp_path)
        os.replace(tmp_path, target)
        _fsync_dir(target.parent)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems do not sync directories; the rename is still atomic
    finally:
        os.close(fd)


def remove_stale_temps(directory: str | os.PathLike, names: tuple[str, ...]) -> list[Path]:
    """Delete temporary files that `atomic_path` left for `names` in `directory` when a job was killed.

    Only call this where no other process writes those names (e.g. a job's own output folder).
    """
    removed = []
    for name in names:
        for tmp in Path(directory).glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def read_json(path: str | os.PathLike) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PipelineError(f"{path}: not valid JSON ({err}); delete it and rerun the stage that made it") from None


#: Fixed time stamp of .npz members: equal arrays give equal bytes (numpy's savez stamps the current time).
_NPZ_DATE = (1980, 1, 1, 0, 0, 0)


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Like np.savez_compressed (np.load reads it), atomically, with reproducible bytes and no pickles."""
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
            for key, value in arrays.items():
                info = zipfile.ZipInfo(f"{key}.npy", date_time=_NPZ_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                with archive.open(info, "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def read_npz(path: str | os.PathLike, required: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Load an .npz without pickle; a damaged or incomplete file gives one clear error."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise PipelineError(f"{path}: not an .npz archive (holds one {type(loaded).__name__}); delete it and rerun the stage that made it")
        with loaded as data:
            arrays = {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found") from None
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise PipelineError(
                f"{path}: refused to load, it holds pickled Python objects (only plain arrays are read); delete it and rerun the stage that made it"
            ) from None
        raise PipelineError(f"{path}: unreadable or corrupt ({_first_line(err)}); delete it and rerun the stage that made it") from None
    except (OSError, zipfile.BadZipFile, EOFError, zlib.error, KeyError) as err:
        raise PipelineError(f"{path}: unreadable or corrupt ({_first_line(err)}); delete it and rerun the stage that made it") from None
    missing = [key for key in required if key not in arrays]
    if missing:
        raise PipelineError(f"{path}: missing arrays {missing}; delete it and rerun the stage that made it")
    return arrays


def _first_line(err: BaseException) -> str:
    """`Type: first line of the message`, at most 160 characters, for one-line errors."""
    text = str(err).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(err).__name__}: {first[:160]}" if first else type(err).__name__


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
