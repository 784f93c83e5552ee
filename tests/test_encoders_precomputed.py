"""Precomputed feature files and the published code's fixed 256-d pooling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.sparse
import torch

from imf_kg.encoders.modality import EncodedModality
from imf_kg.encoders.precomputed import load_feature_matrix, reference_pool, save_feature_matrix
from imf_kg.errors import DataFormatError, ToolkitError


@pytest.fixture
def matrix() -> np.ndarray:
    values = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    values[3] = 0.0  # an entity without the modality
    return values


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_reference_pickle_round_trip(tmp_path, matrix, protocol):
    path = tmp_path / "img_features.pkl"
    with open(path, "wb") as handle:
        pickle.dump(matrix.astype(np.float64), handle, protocol=protocol)  # the reference pickles float64 arrays
    loaded = load_feature_matrix(path, num_rows=5, dim=7)
    np.testing.assert_allclose(loaded.values.numpy(), matrix, rtol=1e-6)
    assert loaded.values.dtype == torch.float32
    assert loaded.mask.tolist() == [True, True, True, False, True]


def test_npy_npz_pt_round_trips(tmp_path, matrix):
    np.save(tmp_path / "f.npy", matrix)
    np.savez(tmp_path / "hgnn.npz", feature=matrix)
    np.savez(tmp_path / "named.npz", other=matrix * 2, mine=matrix)
    torch.save(torch.from_numpy(matrix), tmp_path / "f.pt")
    scipy.sparse.save_npz(tmp_path / "sparse.npz", scipy.sparse.csr_matrix(matrix))
    for path, kwargs in [("f.npy", {}), ("hgnn.npz", {}), ("named.npz", {"key": "mine"}), ("f.pt", {}),
                         ("sparse.npz", {})]:
        loaded = load_feature_matrix(tmp_path / path, **kwargs)
        np.testing.assert_array_equal(loaded.values.numpy(), matrix, err_msg=path)
        assert loaded.mask.tolist() == [True, True, True, False, True], path


def test_saved_pt_keeps_mask_and_source(tmp_path, matrix):
    mask = torch.tensor([True, False, True, True, True])  # an explicit mask wins over zero rows
    encoded = EncodedModality(values=matrix, mask=mask, model="minilm", details={"pooling": "mean"})
    save_feature_matrix(tmp_path / "text.pt", encoded)
    loaded = load_feature_matrix(tmp_path / "text.pt", num_rows=5)
    assert torch.equal(loaded.values, encoded.values) and torch.equal(loaded.mask, mask)
    assert loaded.model == "minilm"
    save_feature_matrix(tmp_path / "text.npy", encoded)
    np.testing.assert_array_equal(np.load(tmp_path / "text.npy"), matrix)


def test_zero_rows_count_as_present_when_asked(tmp_path, matrix):
    np.save(tmp_path / "f.npy", matrix)
    assert load_feature_matrix(tmp_path / "f.npy", zero_rows_missing=False).mask.all()


@pytest.mark.parametrize(
    "array, kwargs, message",
    [
        (np.zeros(5, dtype=np.float32), {}, "2-D"),
        (np.zeros((2, 3, 4), dtype=np.float32), {}, "2-D"),
        (np.zeros((4, 7), dtype=np.float32), {"num_rows": 5}, "4 rows; expected 5 rows"),
        (np.zeros((5, 6), dtype=np.float32), {"dim": 7}, "width 6; expected width 7"),
    ],
)
def test_wrong_shapes_raise(tmp_path, array, kwargs, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(DataFormatError, match=message) as info:
        load_feature_matrix(tmp_path / "bad.npy", **kwargs)
    assert "bad.npy" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_non_finite_values_raise_naming_the_row(tmp_path, matrix, bad_value):
    matrix[2, 4] = bad_value
    with open(tmp_path / "text_features.pkl", "wb") as handle:
        pickle.dump(matrix, handle)
    with pytest.raises(DataFormatError, match=r"text_features.pkl: found NaN or inf in row 2"):
        load_feature_matrix(tmp_path / "text_features.pkl")


class _Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickles_that_are_not_arrays_are_refused(tmp_path, capsys):
    with open(tmp_path / "evil.pkl", "wb") as handle:
        pickle.dump(_Exploit(), handle)
    with pytest.raises(DataFormatError, match="evil.pkl"):
        load_feature_matrix(tmp_path / "evil.pkl")
    assert "must never run" not in capsys.readouterr().out


def test_unknown_suffix_missing_file_and_damaged_file(tmp_path):
    (tmp_path / "f.csv").write_text("1,2\n")
    with pytest.raises(DataFormatError, match=".csv"):
        load_feature_matrix(tmp_path / "f.csv")
    with pytest.raises(ToolkitError, match="no such feature file"):
        load_feature_matrix(tmp_path / "absent.npy")
    (tmp_path / "damaged.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataFormatError, match="damaged.npy"):
        load_feature_matrix(tmp_path / "damaged.npy")


def test_reference_pool_image_by_hand():
    values = torch.randn(2, 4096)
    pooled = reference_pool(values)
    assert pooled.shape == (2, 256)
    flat = values.numpy()
    expected = np.zeros((2, 256), dtype=np.float64)
    for i in range(16):
        for j in range(16):
            # output (i, j) of the 16x16 grid: rows 4i..4i+3, columns 4j..4j+3 of the 64x64 view
            coords = [(4 * i + a) * 64 + 4 * j + b for a in range(4) for b in range(4)]
            expected[:, i * 16 + j] = flat[:, coords].mean(axis=1)
    np.testing.assert_allclose(pooled.numpy(), expected, atol=1e-6)
    # the published expression, literally: AvgPool2d(4, stride=4) on a (N, 64, 64) view
    published = torch.nn.AvgPool2d(4, stride=4)(values.view(-1, 64, 64)).view(2, -1)
    torch.testing.assert_close(pooled, published)


def test_reference_pool_text_by_hand():
    values = torch.randn(3, 768)
    pooled = reference_pool(values)
    flat = values.numpy()
    expected = np.zeros((3, 256), dtype=np.float64)
    for i in range(4):
        for c in range(64):
            # output row i averages input rows 3i, 3i+1, 3i+2 of the 12x64 view
            expected[:, i * 64 + c] = (flat[:, 3 * i * 64 + c] + flat[:, (3 * i + 1) * 64 + c]
                                       + flat[:, (3 * i + 2) * 64 + c]) / 3
    np.testing.assert_allclose(pooled.numpy(), expected, atol=1e-6)
    published = torch.nn.AdaptiveAvgPool2d(output_size=(4, 64))(values.view(-1, 12, 64)).view(3, -1)
    torch.testing.assert_close(pooled, published)


def test_reference_pool_normalize_and_bad_width():
    values = torch.randn(2, 768) * 10
    normalized = torch.nn.functional.normalize(values, dim=1)
    torch.testing.assert_close(reference_pool(values, normalize=True), reference_pool(normalized))
    with pytest.raises(ToolkitError, match="4096"):
        reference_pool(torch.zeros(2, 384))
