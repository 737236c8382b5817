import numpy as np
import pytest

from lora_edu import SVDReconstructor, low_rank_approx, rank_by_elimination, row_echelon, svd_storage


def test_rank_of_the_course_examples():
    delta_w = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [1, 2, 3, 4], [2, 4, 6, 8]])
    assert rank_by_elimination(delta_w) == 1
    assert rank_by_elimination([[1, 2, 3], [2, 4, 6], [3, 6, 9]]) == 1  # a seed claims 2
    assert rank_by_elimination([[1, 2], [2, 1]]) == 2
    assert rank_by_elimination([[1, 4], [3, 12]]) == 1
    assert rank_by_elimination(np.zeros((3, 5))) == 0


def test_row_echelon_form_properties():
    rng = np.random.default_rng(0)
    m = rng.standard_normal((5, 3)) @ rng.standard_normal((3, 7))
    r, pivots = row_echelon(m)
    assert pivots == sorted(pivots) and len(pivots) == 3
    for i, col in enumerate(pivots):
        assert r[i, col] == pytest.approx(1.0)
        assert np.all(r[i + 1 :, col] == 0)
        assert np.all(r[i, :col] == 0)
    assert np.all(r[len(pivots) :] == 0)
    # elimination keeps the row space: stacking R under M does not raise the rank
    assert np.linalg.matrix_rank(np.vstack([m, r])) == 3


@pytest.mark.parametrize("seed", range(20))
def test_rank_agrees_with_numpy_on_random_low_rank(seed):
    rng = np.random.default_rng(seed)
    m, n = rng.integers(1, 12, size=2)
    k = int(rng.integers(0, min(m, n) + 1))
    mat = rng.standard_normal((m, k)) @ rng.standard_normal((k, n))
    assert rank_by_elimination(mat) == np.linalg.matrix_rank(mat) == k


def test_row_echelon_rejects_non_matrices():
    with pytest.raises(ValueError, match="2-D"):
        row_echelon(np.ones(3))


def test_eckart_young_error_and_reconstruction():
    rng = np.random.default_rng(1)
    m = rng.standard_normal((30, 20))
    svd = SVDReconstructor(m)
    assert np.allclose(svd.reconstruct(20), m)
    for k in range(21):
        assert svd.error(k) == pytest.approx(np.linalg.norm(m - svd.reconstruct(k)))
        assert np.linalg.matrix_rank(svd.reconstruct(k)) == k
    assert np.allclose(low_rank_approx(m, 4), svd.reconstruct(4))
    assert svd.relative_error(0) == pytest.approx(1.0)


def test_truncated_svd_beats_other_rank_k_matrices():
    rng = np.random.default_rng(2)
    m = rng.standard_normal((20, 15))
    best = SVDReconstructor(m).error(3)
    for _ in range(200):
        q, _ = np.linalg.qr(rng.standard_normal((20, 3)))
        assert best <= np.linalg.norm(m - q @ (q.T @ m)) + 1e-12


def test_storage_and_rank_checks():
    svd = SVDReconstructor(np.ones((6, 4)))
    assert svd.storage(2) == svd_storage(6, 4, 2) == 2 * (6 + 4 + 1)
    for bad in (-1, 5, 1.5, True):
        with pytest.raises(ValueError, match="Rank k"):
            svd.reconstruct(bad)
