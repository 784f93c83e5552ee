"""Precomputed feature matrices: load, validate, save; and the published IMF code's fixed 256-d pooling.

Formats (rows in entity/node id order):
- ``.npy``: a 2-D array (HGNN-IMA's ``*.npz.npy`` files too);
- ``.npz``: the array under ``key``, else under ``feature`` (HGNN-IMA), else the only array; a scipy sparse
  matrix saved with ``scipy.sparse.save_npz`` (MAGNN's ``features_*.npz``) is made dense;
- ``.pt`` / ``.pth``: a tensor, or a dict with ``values`` (and optional ``mask``, ``source``) as written by
  :func:`save_feature_matrix`;
- ``.pkl`` / ``.pickle``: a pickled numpy array, as the reference ``img_features.pkl`` (N, 4096) and
  ``text_features.pkl`` (N, 768). Unpickling is restricted to numpy arrays, so a pickle cannot run code.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from imf_kg.encoders.modality import EncodedModality
from imf_kg.errors import DataFormatError, ToolkitError
from imf_kg.io import NumpyOnlyUnpickler, atomic_torch_save, atomic_write_bytes

def _read_array(path: Path, key: str | None):
    suffix = path.suffix.lower()
    if suffix == ".npy":
        # memory-mapped copy-on-write: the matrix is paged in as rows are used, never read whole up front
        return np.load(path, mmap_mode="c", allow_pickle=False)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.keys())
            if {"format", "shape", "indptr"} <= set(names):  # scipy.sparse.save_npz
                import scipy.sparse

                return scipy.sparse.load_npz(path).toarray()
            chosen = key if key is not None else ("feature" if "feature" in names else None)
            if chosen is None and len(names) == 1:
                chosen = names[0]
            if chosen not in names:
                raise DataFormatError(path, None, f"arrays {names}", f"an array named {key or 'feature'!r}")
            return archive[chosen]
    if suffix in (".pt", ".pth"):
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            if key is None and "values" not in obj and len(obj) == 1:
                key = next(iter(obj))
            values = obj.get(key or "values")
            if not isinstance(values, torch.Tensor):
                raise DataFormatError(path, None, f"a dict with keys {sorted(obj)}",
                                      f"a tensor under {key or 'values'!r}")
            return values, obj.get("mask"), obj.get("source")
        return obj
    if suffix in (".pkl", ".pickle"):
        with open(path, "rb") as handle:
            return NumpyOnlyUnpickler(handle, encoding="latin1").load()
    raise DataFormatError(path, None, f"suffix {suffix!r}", "one of .npy, .npz, .pt, .pth, .pkl, .pickle")


def load_feature_matrix(path: str | Path, num_rows: int | None = None, dim: int | None = None,
                        key: str | None = None, zero_rows_missing: bool = True) -> EncodedModality:
    """Load and validate a ``(num_rows, dim)`` feature matrix.

    Args:
        path: the file (format from the suffix, see the module docstring).
        num_rows: expected number of rows (entities / nodes); checked when given.
        dim: expected width; checked when given.
        key: array name inside a ``.npz`` or dict inside a ``.pt``.
        zero_rows_missing: when the file carries no mask, all-zero rows count as missing (mask False).

    Raises:
        DataFormatError: unreadable file, not 2-D, wrong shape, or a NaN/inf value.
    """
    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"{path}: no such feature file")
    try:
        loaded = _read_array(path, key)
    except DataFormatError:
        raise
    except Exception as err:  # numpy/torch/pickle raise many types for damaged files
        raise DataFormatError(path, None, f"an unreadable file ({type(err).__name__}: {err})",
                              "a feature matrix in the format its suffix names") from err
    mask, source = None, None
    if isinstance(loaded, tuple):
        loaded, mask, source = loaded
    if isinstance(loaded, torch.Tensor):
        if loaded.is_complex():
            raise DataFormatError(path, None, f"a complex tensor ({loaded.dtype})", "real-valued features")
        if loaded.is_floating_point() and loaded.dtype not in (torch.float16, torch.float32, torch.float64):
            loaded = loaded.float()  # bfloat16 / float8 have no NumPy type; float32 holds them exactly
        loaded = loaded.detach().cpu().numpy()
    if not isinstance(loaded, np.ndarray) or not np.issubdtype(loaded.dtype, np.number):
        what = f"an array of dtype {loaded.dtype}" if isinstance(loaded, np.ndarray) else f"a {type(loaded).__name__}"
        raise DataFormatError(path, None, what, "a numeric array")
    if np.iscomplexobj(loaded):
        raise DataFormatError(path, None, f"a complex array ({loaded.dtype})", "real-valued features")
    values = loaded.astype(np.float32, copy=False)
    if values.ndim != 2:
        raise DataFormatError(path, None, f"an array of shape {tuple(values.shape)}", "a 2-D matrix (rows, dim)")
    if num_rows is not None and values.shape[0] != num_rows:
        raise DataFormatError(path, None, f"{values.shape[0]} rows", f"{num_rows} rows (one per entity/node)")
    if dim is not None and values.shape[1] != dim:
        raise DataFormatError(path, None, f"width {values.shape[1]}", f"width {dim}")
    finite, nonzero = _row_checks(values)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise DataFormatError(path, None, f"NaN or inf in row {bad} ({int((~finite).sum())} rows in all)",
                              "finite values")
    if mask is not None:
        if not ((isinstance(mask, torch.Tensor) and mask.dtype in (torch.bool, torch.uint8))
                or (isinstance(mask, np.ndarray) and mask.dtype in (np.bool_, np.uint8))):
            found = f"dtype {mask.dtype}" if isinstance(mask, (torch.Tensor, np.ndarray)) else type(mask).__name__
            raise DataFormatError(path, None, f"a mask of {found}", "a boolean (or 0/1 uint8) mask, one per row")
        mask = torch.as_tensor(mask).to(torch.bool).reshape(-1)
        if mask.shape[0] != values.shape[0]:
            raise DataFormatError(path, None, f"a mask of {mask.shape[0]} rows", f"{values.shape[0]} rows")
    elif zero_rows_missing:
        mask = torch.from_numpy(nonzero)
    else:
        mask = torch.ones(values.shape[0], dtype=torch.bool)
    return EncodedModality(values=np.ascontiguousarray(values), mask=mask, model=source or str(path),
                           details={"file": str(path)})


def _row_checks(values: np.ndarray, rows_per_chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Per row: all values finite, and any value non-zero; in chunks so a memory-mapped matrix stays mapped."""
    finite = np.empty(values.shape[0], dtype=bool)
    nonzero = np.empty(values.shape[0], dtype=bool)
    for start in range(0, values.shape[0], rows_per_chunk):
        chunk = np.asarray(values[start:start + rows_per_chunk])
        finite[start:start + len(chunk)] = np.isfinite(chunk).all(axis=1)
        nonzero[start:start + len(chunk)] = (chunk != 0).any(axis=1)
    return finite, nonzero


def save_feature_matrix(path: str | Path, encoded: EncodedModality) -> Path:
    """Write atomically: ``.pt`` keeps values, mask and source; ``.npy`` keeps values only."""
    path = Path(path)
    if path.suffix == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, encoded.values.numpy(), allow_pickle=False)
        return atomic_write_bytes(path, buffer.getvalue())
    if path.suffix in (".pt", ".pth"):
        return atomic_torch_save(path, encoded.state())
    raise ToolkitError(f"{path}: cannot save features with suffix {path.suffix!r}; use .pt or .npy")


def reference_pool(values: torch.Tensor | np.ndarray, normalize: bool = False) -> torch.Tensor:
    """The published IMF code's fixed reduction of raw features to 256-d (IMF_SPEC section 3).

    - ``(N, 4096)`` (VGG16 fc7): viewed as a 64x64 grid, 4x4 average pool with stride 4 -> 16x16 = 256; each
      output averages 4 consecutive coordinates in 4 rows 64 apart.
    - ``(N, 768)`` (BERT pooled): viewed as 12x64, adaptive average pool to 4x64 -> 256; output row i averages
      input rows 3i, 3i+1, 3i+2.

    ``normalize=True`` first L2-normalises each row, as the reference ``main.py`` does on loading. This pooling
    mixes unrelated channels; it exists only to reproduce the published-code variant.

    Returns:
        ``(N, 256)`` float32 tensor.
    """
    values = torch.as_tensor(values, dtype=torch.float32)
    if values.ndim != 2 or values.shape[1] not in (4096, 768):
        raise ToolkitError(f"reference_pool takes (N, 4096) image or (N, 768) text features, got {tuple(values.shape)}")
    if normalize:
        values = F.normalize(values, p=2, dim=1)
    if values.shape[1] == 4096:
        pooled = F.avg_pool2d(values.view(-1, 1, 64, 64), kernel_size=4, stride=4)
    else:
        pooled = F.adaptive_avg_pool2d(values.view(-1, 1, 12, 64), output_size=(4, 64))
    return pooled.reshape(values.shape[0], 256)
