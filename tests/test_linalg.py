import subprocess
import sys

import numpy as np
import pytest

from lora_edu import SVDReconstructor, lora_factors, low_rank_approx, null_space, rank_by_elimination, row_echelon, svd_storage
from lora_edu.maths.linalg import factorize_by_gradient_descent


def test_lora_factors_are_the_truncated_svd_split_evenly():
    rng = np.random.default_rng(0)
    m = rng.standard_normal((7, 5))
    b, a = lora_factors(m, 3)
    assert b.shape == (7, 3) and a.shape == (3, 5)
    np.testing.assert_allclose(b @ a, low_rank_approx(m, 3), atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(b, axis=0), np.linalg.norm(a, axis=1))  # sqrt(s) on each side
    with pytest.raises(ValueError, match=r"The LoRA rank r must be an integer in \[1, 5\], got 6"):  # the caller's name
        lora_factors(m, 6)
    with pytest.raises(ValueError, match="The LoRA rank r must be an integer in"):  # r = 0 gives no factors: refused
        lora_factors(m, 0)
    with pytest.raises(ValueError, match=r"The rank k must be an integer in \[0, 5\], got 6"):
        low_rank_approx(m, 6)
    assert not low_rank_approx(m, 0).any()  # rank 0: the zero matrix, the best rank-0 approximation


def test_null_space_vectors_are_sent_to_zero():
    m = np.array([[1.0, 2, 0], [0, 1, 1], [2, 5, 1]])  # row 3 = 2 row 1 + row 2
    n = null_space(m)
    assert n.shape == (3, 1) and np.allclose(m @ n, 0) and np.isclose(np.linalg.norm(n), 1)
    assert null_space(np.eye(3)).shape == (3, 0)
    assert null_space(np.zeros((2, 4))).shape == (4, 4)
    with pytest.raises(ValueError, match="2-D"):
        null_space(np.ones(3))


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
        with pytest.raises(ValueError, match="The rank k"):
            svd.reconstruct(bad)


def test_lessons_01_02_run_without_importing_torch():
    """`import lora_edu` and the package functions of notebooks 01-02 need only NumPy (torch is loaded lazily)."""
    code = """
import sys
import numpy as np
import matplotlib
matplotlib.use("Agg")
import lora_edu
from lora_edu import quiz, rank_by_elimination, row_echelon, null_space, lora_factors, low_rank_approx, SVDReconstructor
from lora_edu.course.plots import plot_spectrum, show_matrices
from lora_edu.course.widgets import RankSlider, product_rank_explorer, sample_photo
assert lora_edu.setup_notebook(needs_torch=False) is None
m = np.array([[1.0, 2, 0], [0, 1, 1], [2, 5, 1]])
assert rank_by_elimination(m) == 2 and row_echelon(m)[1] == [0, 1]
assert np.allclose(m @ null_space(m), 0)
b, a = lora_factors(m, 1)
assert np.allclose(b @ a, low_rank_approx(m, 1))
slider = RankSlider(sample_photo(64), k=3)
slider.slider.value = 5
product_rank_explorer(16, 2)
show_matrices({"m": m})
plot_spectrum(SVDReconstructor(m).s, "s")
for ex in ("factor-rank-one", "rank-for-energy", "predict-rotated-rank-one", "predict-rank-deficient-factor", "eckart-young-why"):
    quiz.show(ex)
    quiz.check(ex, None)
quiz.check("factor-rank-one", lambda x: (x[:, :1], x[:1]))
quiz.predict("predict-rotated-rank-one", 3.0, 2.0)
loaded = sorted(name for name in sys.modules if name == "torch" or name.startswith("torch."))
assert not loaded, loaded[:5]
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_lazy_names_are_all_importable():
    import lora_edu

    for name in lora_edu.__all__:
        assert getattr(lora_edu, name) is not None
    assert set(lora_edu.__all__) <= set(dir(lora_edu))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        lora_edu.nope  # noqa: B018


def test_gradient_descent_on_b_a_reaches_the_eckart_young_error():
    rng = np.random.default_rng(1)
    u, _ = np.linalg.qr(rng.standard_normal((30, 20)))
    v, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    s = 10 * 0.6 ** np.arange(20)
    m = u @ np.diag(s) @ v.T
    b, a, errors = factorize_by_gradient_descent(m, 3)
    bound = SVDReconstructor(m).error(3)
    assert b.shape == (30, 3) and a.shape == (3, 20) and len(errors) == 400
    assert errors[0] == pytest.approx(np.linalg.norm(m)) and errors[-1] == pytest.approx(bound, rel=1e-9)
    assert min(errors) >= bound * (1 - 1e-12)  # never below the optimum
    np.testing.assert_allclose(b @ a, low_rank_approx(m, 3), atol=1e-6)
    for bad in ({"r": 0}, {"r": 21}, {"r": 2.0}, {"r": 2, "steps": 0}, {"r": 2, "lr": -1.0}):
        with pytest.raises(ValueError):
            factorize_by_gradient_descent(m, **bad)


def test_gradient_descent_takes_the_textbook_steps():
    """factorize_by_gradient_descent is plain gradient descent: B += lr R Aᵀ, A += lr Bᵀ R with R = M - B A."""
    rng = np.random.default_rng(3)
    m = rng.standard_normal((8, 6))
    lr = 0.5 / np.linalg.norm(m, 2)
    b = np.zeros((8, 2))
    a = 0.1 * np.random.default_rng(0).standard_normal((2, 6))
    errors = []
    for _ in range(25):
        residual = m - b @ a
        errors.append(np.linalg.norm(residual))
        b, a = b + lr * residual @ a.T, a + lr * b.T @ residual
    b_pkg, a_pkg, errors_pkg = factorize_by_gradient_descent(m, 2, steps=25, lr=lr, seed=0)
    np.testing.assert_allclose(errors, errors_pkg)
    np.testing.assert_allclose(b @ a, b_pkg @ a_pkg)


def test_echelon_form_of_the_lesson_matrix_and_null_vectors_from_free_columns():
    delta_w = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [1, 2, 3, 4], [2, 4, 6, 8]], dtype=float)
    r, pivots = row_echelon(delta_w)  # the largest row (2, 4, 6, 8) is swapped up and scaled by 1/2
    assert pivots == [0] and np.allclose(r[0], [1, 2, 3, 4]) and not r[1:].any()
    for m in (delta_w, np.array([[1.0, 1, 2], [1, 2, 3], [2, 3, 5]]), np.random.default_rng(0).standard_normal((3, 5))):
        r, pivots = row_echelon(m)
        free = [c for c in range(m.shape[1]) if c not in pivots]
        vectors = np.zeros((m.shape[1], len(free)))
        for k, f in enumerate(free):  # free variable f = 1, the others 0; back-substitute the pivot variables
            vectors[f, k] = 1.0
            for i in reversed(range(len(pivots))):
                p = pivots[i]
                vectors[p, k] = -r[i, p + 1 :] @ vectors[p + 1 :, k]
        assert np.abs(m @ vectors).max(initial=0) < 1e-9
        assert np.linalg.matrix_rank(np.hstack([vectors, null_space(m)])) == len(free)  # they span the null space
        assert len(pivots) + len(free) == m.shape[1] == len(pivots) + null_space(m).shape[1]  # rank + nullity
