import subprocess
import sys

import numpy as np
import pytest

from lora_edu import fit_lora_to_matrix, quiz
from lora_edu.course.exercises import (
    ChoiceExercise,
    CodeExercise,
    NumericExercise,
    Trap,
    WrittenExercise,
    digest,
    notebook_modules,
    register,
    registered_by,
)
from lora_edu.course.widgets import (
    RankSlider,
    calculator_table,
    lora_calculator,
    product_rank_explorer,
    product_rank_report,
    rank_caption,
    residual_image,
    spectrum_image,
    spectrum_png,
    to_png,
)
from lora_edu.maths.arch import ARCHITECTURES, format_bytes, training_memory
from lora_edu.maths.linalg import SVDReconstructor


def factor_rank_one(m):
    i, j = np.argwhere(m != 0)[0]
    return m[:, j : j + 1] / m[i, j], m[i : i + 1]


def rank_for_energy(m, keep):
    s2 = np.linalg.svd(m, compute_uv=False) ** 2
    return int(np.argmax(np.cumsum(s2) >= (keep - 1e-12) * s2.sum()) + 1)


def lora_param_grads(x, grad_y, W, A, B, alpha, r):
    G = alpha / r * grad_y.T @ x
    return B.T @ G, G @ A.T


def update_size_by_hand(W, A, B, alpha, r):
    delta = alpha / r * B @ A
    sigma = np.linalg.svd(W, compute_uv=False)
    return np.linalg.norm(delta) / np.linalg.norm(W), np.linalg.norm(delta) / np.sqrt(np.sum(sigma[:r] ** 2))


def welch_by_hand(a, b, t_quantile):
    a, b = np.asarray(a), np.asarray(b)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_quantile(df) * np.sqrt(va + vb)
    return a.mean() - b.mean(), a.mean() - b.mean() - half, a.mean() - b.mean() + half


def dora_by_hand(W, B, A, m, scale):
    V = W + scale * B @ A
    return m * V / np.linalg.norm(V, axis=1, keepdims=True)


def count_intruders_by_hand(W0, W, k, eps):
    U0, U = np.linalg.svd(W0, full_matrices=False)[0], np.linalg.svd(W, full_matrices=False)[0][:, :k]
    return int((np.abs(U.T @ U0).max(axis=1) < eps).sum())


ARGUMENT = "Each column of B A is B times a column of A, so it lies in the span of the columns of B; rows likewise."


def rank_by_hand(m):
    a = np.array(m, dtype=float)
    rank = 0
    for col in range(a.shape[1]):
        rows = [i for i in range(rank, a.shape[0]) if abs(a[i, col]) > 1e-9]
        if not rows:
            continue
        a[[rank, rows[0]]] = a[[rows[0], rank]]
        a[rank + 1 :] -= np.outer(a[rank + 1 :, col] / a[rank, col], a[rank])
        rank += 1
    return rank


def svd_to_lora(m, r):
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    return u[:, :r] * s[:r], vt[:r]  # all of s in B: a different split, the same product


def lora_trainable(n_layer, d_model, n_head, n_kv_head, d_ff, r, targets):
    kv = n_kv_head * (d_model // n_head)
    shapes = {"q": (d_model, d_model), "k": (kv, d_model), "v": (kv, d_model), "o": (d_model, d_model),
              "gate": (d_ff, d_model), "up": (d_ff, d_model), "down": (d_model, d_ff)}
    return n_layer * sum(r * sum(shapes[t]) for t in targets)


def merge_conv1d(W_stored, A, B, alpha, r):
    return W_stored + alpha / r * A.T @ B.T


def lora_input_grad(grad_y, W, A, B, alpha, r):
    return grad_y @ W + alpha / r * (grad_y @ B) @ A


def training_state_bytes(n_params, n_trainable, bytes_per_number):
    return (n_params + 3 * n_trainable) * bytes_per_number


def wilson(p, n):
    z = 1.96
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def match_by_hand(grid_a, grid_b, bar, one_animal):
    kept_a, kept_b = ({lr: em for lr, em in grid.items() if em >= bar} for grid in (grid_a, grid_b))
    gaps = {(x, y): abs(kept_a[x] - kept_b[y]) for x in kept_a for y in kept_b}
    return min(gaps, key=lambda pair: (gaps[pair] if gaps[pair] >= one_animal - 1e-12 else 0.0, pair))


def phi(a1, a2, i, j):
    u = np.linalg.svd(a1, full_matrices=False)[2][:i]
    v = np.linalg.svd(a2, full_matrices=False)[2][:j]
    return float(np.sum((u @ v.T) ** 2) / min(i, j))


CORRECT = {
    # nb01
    "predict-rank-deficient-factor": 2,
    "rank-of-sum-rows": 3,
    "factor-rank-one": factor_rank_one,
    "proof-rank-of-product": ARGUMENT,
    # nb02
    "predict-rotated-rank-one": 2.0,
    "tail-error": 3,
    "rank-for-energy": rank_for_energy,
    "eckart-young-why": ARGUMENT,
    "recommender": "b",
    # nb03
    "predict-gqa-lora-ratio": 16 / 9,
    "mistral7-total": 7_241_732_096,
    "llama70-kv-r16": 23_592_960,
    "lora-trainable": lora_trainable,
    "unmerged-cost-rectangular": 4096 * 14336 + 16 * (4096 + 14336),
    "rank-barely-matters": ARGUMENT,
    "which-matrices": "d",
    # nb04
    "merge-conv1d": merge_conv1d,
    "lora-param-grads": lora_param_grads,
    "init-swapped": ARGUMENT,
    "predict-alpha-doubled": 2.0,
    "lora-input-grad": lora_input_grad,
    # nb05
    "predict-lora-all-count": 4 * 8 * (4 * (64 + 64) + 2 * (64 + 256)),
    "tiny-gpt-lora-budget": 9216,
    "training-state-bytes": training_state_bytes,
    "disable-lora-exact": ARGUMENT,
    "optimizer-all-parameters": "c",
    # nb05b
    "predict-sixteen-of-sixteen": 0.81,
    "wilson-interval": wilson,
    "welch-interval": welch_by_hand,
    "match-rates": match_by_hand,
    "pareto-learning-rate": "b",
    "shared-rate": "a",
    "matched-threshold": ARGUMENT,
    # nb05c
    "update-size": update_size_by_hand,
    "finer-steps": ARGUMENT,
    "intruder-count": count_intruders_by_hand,
    "predict-random-cosine": 0.32,
    "intruder-null": "c",
    "task-at-zero": "b",
    "rank-is-not-size": "b",
    # nb06
    "predict-random-phi": 8 / 64,
    "subspace-phi": phi,
    "placement-budget": 1_310_720,
    "amplification-factor": "c",
    "margin-verdict": "c",
    "first-update-scaling": ARGUMENT,
    # nb06b
    "predict-adapter-layers": 41 / 25,
    "predict-rslora-slope": -1.0,
    "adapter-bottleneck": ARGUMENT,
    "merged-latency": "d",
    "dora-weight": dora_by_hand,
    "pissa-tail": ARGUMENT,
}
WRONG_CODE = {  # a plausible mistake per code exercise: each must fail on a hidden case
    "factor-rank-one": lambda m: (np.ones((m.shape[0], 1)), m[:1]),
    "rank-for-energy": lambda m, keep: 1,
    "lora-param-grads": lambda x, grad_y, W, A, B, alpha, r: (B.T @ grad_y.T @ x, grad_y.T @ x @ A.T),  # scaling forgotten
    "lora-trainable": lambda n_layer, d_model, n_head, n_kv_head, d_ff, r, targets: n_layer * len(targets) * r * 2 * d_model,
    "merge-conv1d": lambda W, A, B, alpha, r: W + alpha / r * B @ A,  # the transposed merge
    "training-state-bytes": lambda n_params, n_trainable, b: 4 * n_params * b,
    "match-rates": lambda grid_a, grid_b, bar, one_animal: (min(grid_a), min(grid_b)),  # the smallest rates, learned or not
    "welch-interval": lambda a, b, t_quantile: (np.mean(a) - np.mean(b), np.min(a) - np.max(b), np.max(a) - np.min(b)),  # the range
    "wilson-interval": lambda p, n: (p - 1.96 * (p * (1 - p) / n) ** 0.5, p + 1.96 * (p * (1 - p) / n) ** 0.5),  # the textbook interval
    "lora-input-grad": lambda grad_y, W, A, B, alpha, r: grad_y @ W,  # the LoRA branch forgotten
    "update-size": lambda W, A, B, alpha, r: (np.linalg.norm(B @ A) / np.linalg.norm(W),) * 2,  # no scaling, no top-r part
    "intruder-count": lambda W0, W, k, eps: int((np.abs(np.linalg.svd(W)[0][:, :k].T @ np.linalg.svd(W0)[0][:, :k]).max(axis=1)
                                                  < eps).sum()),  # W0's top k only
    "dora-weight": lambda W, B, A, m, scale: m * (W + scale * B @ A) / np.linalg.norm(W, axis=1, keepdims=True),  # W's norms
    "subspace-phi": lambda a1, a2, i, j: float(np.sum((a1[:i] @ a2[:j].T) ** 2) / min(i, j)),  # rows, not singular vectors
}


def wrong_answers(ex):
    if isinstance(ex, WrittenExercise):
        return ["rank is at most r", "because of linear algebra"]
    if isinstance(ex, ChoiceExercise):
        return [o for o in ex.options if o != CORRECT[ex.id]]
    if isinstance(ex, CodeExercise):
        return [WRONG_CODE[ex.id]]
    right = CORRECT[ex.id]
    return [right + 1, right * 2, right - 0.5]


MINE = ("nb01", "nb02", "nb03", "nb04", "nb05", "nb05b", "nb05c", "nb06", "nb06b")  # notebook 07's exercises are tested beside its modules


def test_every_exercise_has_a_known_answer():
    mine = {ex_id for ex_id in quiz.all_exercises() if registered_by(ex_id).rsplit(".", 1)[-1] in MINE}
    assert set(CORRECT) == mine


def test_each_lesson_module_has_three_exercises_and_a_code_one():
    by_module: dict[str, list] = {}
    for ex_id, ex in quiz.all_exercises().items():
        by_module.setdefault(registered_by(ex_id).rsplit(".", 1)[-1], []).append(ex)
    assert sorted(by_module) == notebook_modules() and set(MINE) <= set(by_module)
    for module, exercises in by_module.items():
        assert len(exercises) >= 3, module
        assert any(isinstance(ex, CodeExercise) for ex in exercises), module


@pytest.mark.parametrize("exercise_id, answer", CORRECT.items())
def test_correct_answers_pass_and_wrong_ones_fail(exercise_id, answer, capsys):
    assert quiz.check(exercise_id, answer) is True
    assert capsys.readouterr().out.startswith("Not graded: " if isinstance(quiz.get(exercise_id), WrittenExercise) else "Correct: ")
    ex = quiz.get(exercise_id)
    for w in wrong_answers(ex):
        assert quiz.check(exercise_id, w) is False, w
        out = capsys.readouterr().out
        assert out.startswith("Not yet. ") and len(out) > 30
    assert quiz.check(exercise_id, None) is None
    assert "replace None by your answer" in capsys.readouterr().out


def test_numeric_answers_accept_numpy_scalars_and_floats(capsys):
    assert quiz.check("llama70-kv-r16", np.int64(23_592_960)) is True
    assert quiz.check("llama70-kv-r16", np.float32(23_592_960.0)) is True
    assert quiz.check("llama70-kv-r16", np.array(23_592_960)) is True
    assert quiz.check("predict-rotated-rank-one", np.float64(2.001)) is True  # within the float tolerance
    assert quiz.check("predict-rotated-rank-one", 2.3) is False


def test_wrong_options_get_their_own_feedback(capsys):
    messages = set()
    for letter in "acd":
        quiz.check("recommender", letter)
        messages.add(capsys.readouterr().out)
    assert len(messages) == 3 and all(f"Not {letter}" in "".join(messages) for letter in "acd")


def test_traps_name_the_misconception(capsys):
    assert quiz.check("rank-of-sum-rows", 4) is False
    assert "several rows" in capsys.readouterr().out
    assert quiz.check("llama70-kv-r16", 80 * 2 * 16 * 2 * 8192) is False
    assert "grouped-query" in capsys.readouterr().out


def test_code_exercise_reports_the_failing_hidden_case(capsys):
    assert quiz.check("merge-conv1d", WRONG_CODE["merge-conv1d"]) is False
    out = capsys.readouterr().out
    assert "hidden case" in out and "expected" in out
    assert quiz.check("factor-rank-one", lambda m: 1 / 0) is False
    assert "ZeroDivisionError" in capsys.readouterr().out
    with pytest.raises(TypeError, match="wants a function"):
        quiz.check("factor-rank-one", 3)


def test_student_functions_cannot_change_the_hidden_cases(capsys):
    def vandal(m):
        m[:] = 0
        return np.zeros((m.shape[0], 1)), np.zeros((1, m.shape[1]))

    quiz.check("factor-rank-one", vandal)
    capsys.readouterr()
    assert quiz.check("factor-rank-one", factor_rank_one) is True


def test_hints_and_instructor_reveal(capsys, monkeypatch):
    quiz.show("factor-rank-one")
    assert "quiz.hint('factor-rank-one')" in capsys.readouterr().out
    quiz.hint("factor-rank-one")
    quiz.hint("factor-rank-one")
    quiz.hint("factor-rank-one")
    out = capsys.readouterr().out
    assert "Hint 1/2" in out and out.count("Hint 2/2") == 2
    quiz.hint("recommender")
    assert "No hints" in capsys.readouterr().out
    quiz.show("rank-of-sum-rows")
    assert "Instructor" not in capsys.readouterr().out
    monkeypatch.setenv("LORA_EDU_REVEAL", "1")
    quiz.show("rank-of-sum-rows")
    assert "Instructor, model solution: 3" in capsys.readouterr().out
    quiz.check("recommender", None)
    assert "Instructor, model solution: b)" in capsys.readouterr().out
    quiz.show("merge-conv1d")
    out = capsys.readouterr().out
    assert "def merge_conv1d(W_stored, A, B, alpha, r):" in out and "package" not in out.split("model solution:")[1]
    quiz.reveal(False)  # the switch overrides the environment
    try:
        quiz.show("rank-of-sum-rows")
        assert "Instructor" not in capsys.readouterr().out
    finally:
        quiz.reveal(None)
    with pytest.raises(TypeError, match="True, False or None"):
        quiz.reveal("yes")


def test_answers_are_not_stored_in_plain_text():
    for ex in quiz.all_exercises().values():
        if isinstance(ex, ChoiceExercise):
            assert len(ex.answer_digest) == 16 and ex.answer_digest not in ex.options
            assert ex.answer_digest == digest(ex.id, ex.correct_letter())


def test_registration_rejects_bad_exercises():
    with pytest.raises(ValueError, match="matches 0 options"):
        register(ChoiceExercise("bad-1", "?", "!", options={"a": "x", "b": "y"}, answer_digest="0" * 16, feedback={"a": "no"}))
    with pytest.raises(ValueError, match="feedback for every wrong option"):
        register(ChoiceExercise("bad-2", "?", "!", options={"a": "x", "b": "y", "c": "z"}, answer_digest=digest("bad-2", "a"),
                                feedback={"b": "no"}))
    with pytest.raises(ValueError, match="registered twice"):
        register(NumericExercise("rank-of-sum-rows", "?", "!", expected=lambda: 1))
    with pytest.raises(TypeError, match="NumericExercise, ChoiceExercise, CodeExercise or WrittenExercise"):
        register("rank-of-sum-rows")
    assert "bad-1" not in quiz.all_exercises() and "bad-2" not in quiz.all_exercises()
    assert Trap(lambda: 1, "x").message == "x"


def test_bad_answers_are_clear_errors():
    with pytest.raises(ValueError, match="one of the letters"):
        quiz.check("which-matrices", "z")
    with pytest.raises(ValueError, match="one of the letters"):
        quiz.check("which-matrices", 2)
    with pytest.raises(TypeError, match="wants a number"):
        quiz.check("llama70-kv-r16", "many")
    with pytest.raises(TypeError, match="wants a number"):
        quiz.check("llama70-kv-r16", True)
    with pytest.raises(ValueError, match="finite"):
        quiz.check("tail-error", float("nan"))
    with pytest.raises(ValueError, match="Unknown exercise"):
        quiz.check("nope", "a")


def test_quiz_and_exercises_import_without_a_cycle_or_torch():
    code = ("import sys; import lora_edu.course.exercises.core; import lora_edu.course.quiz as q; q.all_exercises(); "
            "q.check('factor-rank-one', lambda m: 0); q.check('rank-for-energy', None); "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_rank_slider_callback_updates_image_residual_spectrum_and_caption():
    rng = np.random.default_rng(0)
    img = rng.random((64, 48))
    slider = RankSlider(img, k=3)
    svd = SVDReconstructor(img)
    assert slider.caption.value == rank_caption(svd, 3) and slider.slider.value == 3
    first, first_spectrum = slider.image.value, slider.spectrum.value
    slider.slider.value = 10
    assert slider.caption.value == rank_caption(svd, 10)
    assert f"residual ||M - M_k||_F = {svd.error(10):.4f}" in slider.caption.value
    assert slider.image.value == to_png(svd.reconstruct(10)) != first
    assert slider.residual.value == to_png(residual_image(svd, 10, img))
    assert slider.spectrum.value == spectrum_png(svd.s, 10, width_px=768) != first_spectrum
    assert len(slider.latencies_ms) == 1


@pytest.mark.parametrize("k", [0, -1, 49, 2.5, True, "3"])
def test_rank_slider_refuses_a_rank_it_cannot_show(k):
    with pytest.raises(ValueError, match=r"rank k must be an integer in \[1, 48\]"):
        RankSlider(np.ones((64, 48)), k=k)


def test_spectrum_image_marks_k():
    s = np.array([8.0, 4.0, 2.0, 1.0])
    pic = spectrum_image(s, 2, width=40, height=10)
    assert pic.shape == (10, 40) and pic.min() >= 0 and pic.max() <= 1
    assert np.all(pic[:, 19:21] == 0.0)  # the line after the 2nd of 4 values
    assert pic[-1, 5] == 0.15 and pic[-1, 35] == 0.7  # kept dark, dropped light
    assert np.all(residual_image(SVDReconstructor(np.eye(3)), 3, np.eye(3)) == 0.5)


def test_calculator_table_numbers_come_from_the_arithmetic():
    html = calculator_table("GPT-3 175B", 4, ("q", "v"), "fp16")
    n, total = 18_874_368, ARCHITECTURES["GPT-3 175B"].total_parameters()
    assert f"{n:,}" in html and "37.7 MB" in html and "0.0108%" in html
    assert format_bytes(16 * total) in html  # mixed precision: 2 + 2 + 4 + 8 bytes per trained parameter
    assert format_bytes(2 * (total + n) + 14 * n) in html
    assert "Pick at least one" in calculator_table("GPT-2 small", 4, ())
    box = lora_calculator("Llama 3 8B", 8, ("q", "v"), "bf16")
    out = box.children[-1]
    rank = box.children[1]
    rank.value = 16
    assert f"{16 * 32 * ((4096 + 4096) + (4096 + 1024)):,}" in out.value
    dropdown = box.children[0].children[0]
    dropdown.value = "GPT-2 small"
    assert f"{16 * 12 * 2 * (768 + 768):,}" in out.value
    assert set(ARCHITECTURES["GPT-2 small"].matrices) == {c.description for c in box.children[2].children}
    assert list(box.children[0].children[1].options) == ["fp32", "bf16", "fp16"]  # no int8 optimizer


def test_calculator_and_memory_refuse_unknown_inputs():
    with pytest.raises(ValueError, match="Unknown model 'GPT-5'; choose one of: GPT-2 small, "):
        calculator_table("GPT-5", 4, ("q",))
    with pytest.raises(ValueError, match="Unknown training precision 'int8'"):
        calculator_table("GPT-2 small", 4, ("q",), "int8")
    with pytest.raises(ValueError, match="Unknown model"):
        lora_calculator("GPT-5")
    with pytest.raises(ValueError, match="n_trainable <= n_params"):
        training_memory(10, 11)
    fp32 = training_memory(1000, 10, "fp32")
    assert fp32["total"] == 4 * 1000 + 12 * 10 and fp32["fp32 master weights"] == 0
    assert training_memory(1000, 1000, "bf16")["total"] == 16 * 1000


def test_product_rank_report_and_explorer():
    text = product_rank_report(32, 5)
    assert "rank(ΔW) = 5" in text and "1,024" in text and "320" in text
    assert "rank(ΔW) = 2 (≤ min(rank B, r) = 2)" in product_rank_report(32, 5, rank_b=2)
    assert "rank(ΔW) = 0" in product_rank_report(8, 3, rank_b=0)
    box = product_rank_explorer(16, 2)
    box.children[1].value = 3
    assert "rank(ΔW) = 3" in box.children[3].value
    box.children[2].value = 1
    assert "rank(ΔW) = 1" in box.children[3].value
    with pytest.raises(ValueError, match="1 <= r <= d"):
        product_rank_report(4, 5)
    with pytest.raises(ValueError, match="rank is in"):
        product_rank_report(8, 3, rank_b=4)


def test_fit_reaches_the_rank_one_target():
    w = np.ones((4, 4)) + np.eye(4)  # notebook 01's full-rank W
    target = w.copy()
    target[2:] += [[1, 2, 3, 4], [2, 4, 6, 8]]
    fit = fit_lora_to_matrix(w, target, r=1, steps=400, lr=0.05)
    assert fit.losses[-1] < 1e-8 < fit.losses[0]
    np.testing.assert_allclose(fit.delta_weight, target - w, atol=1e-4)
    np.testing.assert_allclose(fit.deltas[-1], fit.delta_weight)
    with pytest.raises(ValueError, match="same shape"):
        fit_lora_to_matrix(w, np.ones((3, 4)))


def test_fit_history_explorer_shows_each_step():
    from lora_edu.course.widgets import fit_history_explorer, fit_step_html

    w, target = np.ones((2, 2)), np.array([[1.0, 1.0], [2.0, 3.0]])
    fit = fit_lora_to_matrix(w, target, r=1, steps=5, lr=0.1, a_init=np.array([[0.3, -0.2]]))
    assert f"loss {fit.losses[2]:.6f}" in fit_step_html(fit, 3)
    assert "-0.000" not in fit_step_html(fit, 3) and "<td style='padding:2px 8px'>0.000</td>" in fit_step_html(fit, 3)  # row 1 stays 0
    box = fit_history_explorer(fit)
    box.children[0].value = 2
    assert box.children[1].value == fit_step_html(fit, 2)
    with pytest.raises(ValueError, match="step must be"):
        fit_step_html(fit, 0)
    with pytest.raises(ValueError, match="a_init"):
        fit_lora_to_matrix(w, target, r=1, a_init=np.zeros((2, 2)))


def test_rank_slider_moves_without_a_new_svd(monkeypatch):
    """What keeps the slider fast (benchmarks/slider_latency.py times it): the SVD is computed once, not per move."""
    slider = RankSlider(np.random.default_rng(0).random((40, 30)), k=2)

    def no_svd(*args, **kwargs):
        raise AssertionError("the slider recomputed an SVD on a move")

    monkeypatch.setattr(np.linalg, "svd", no_svd)
    for k in (5, 30, 1):
        slider.slider.value = k
    assert len(slider.latencies_ms) == 3 and slider.caption.value == rank_caption(slider.svd, 1)


def test_three_significant_digits_pass_rounded_or_cut_off():
    root5 = NumericExercise("root-five", "?", "!", expected=lambda: 5**0.5, rel_tol=3e-3)  # not registered
    assert all(root5.verdict(x)[0] for x in (2.24, 2.23, 2.236))
    assert not any(root5.verdict(x)[0] for x in (2.0, 2.3))


def test_first_update_explorer_rescales_the_measured_sizes_exactly():
    from lora_edu.course.widgets import first_update_explorer, first_update_html, first_update_png, first_update_sizes
    from lora_edu.lora.variants import update_size_after_one_step

    sizes = first_update_sizes(ranks=(1, 8, 32))
    for r, alpha, rs in ((1, 16.0, False), (32, 64.0, False), (32, 4.0, True)):
        assert sizes.size(r, alpha, rs) == pytest.approx(update_size_after_one_step(r, alpha, rs), rel=1e-6)
    text = first_update_html(sizes, 32, 64.0, False)
    assert "scaling γ = α/r = 2.000" in text and "2.02 × that of r = 8, α = 16" in text  # α = 2r: the size grows like √r, √(32/8) = 2
    assert "1.00 × that of r = 8" in first_update_html(sizes, 8, 16.0, False)
    assert first_update_png(sizes, 8, 16.0, True)[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="not among the measured ranks"):
        first_update_html(sizes, 4, 16.0, False)
    with pytest.raises(ValueError, match="positive finite"):
        first_update_html(sizes, 8, 0, False)
    box = first_update_explorer(sizes=sizes)
    r_slider, alpha_slider = box.children[0].children
    caption = box.children[2]
    r_slider.value = 32
    assert caption.value == first_update_html(sizes, 32, 16.0, False)
    alpha_slider.value = 64.0
    assert caption.value == first_update_html(sizes, 32, 64.0, False)
    box.children[1].value = "α/√r (rsLoRA)"
    assert caption.value == first_update_html(sizes, 32, 64.0, True)


def fake_sweep():
    import dataclasses

    from lora_edu.paper.experiments import LoRARun

    runs = []
    for targets, r, base_loss in ((("q",), 1, 2.0), (("q",), 8, 1.0), (("q", "v"), 1, 0.6), (("q", "v"), 8, 0.3), (("v",), 8, 0.4)):
        for seed in range(3):
            given = {"targets": targets, "r": r, "seed": seed, "val_answer_loss": base_loss + 0.1 * seed,
                     "test_answer_loss": base_loss + 0.05 * seed}
            runs.append(LoRARun(**{f.name: given.get(f.name) for f in dataclasses.fields(LoRARun)}))
    return runs


def test_sweep_explorer_looks_up_the_stored_runs_and_names_the_validation_best():
    from lora_edu.course.widgets import sweep_explorer, sweep_png, sweep_point_html, sweep_summary

    summary = sweep_summary(fake_sweep() + fake_sweep()[:2], ("val_answer_loss", "test_answer_loss"))  # two runs listed twice
    text = sweep_point_html(summary, ("q", "v"), 8, d_model=64, n_layer=4)
    assert "Wq+Wv at r = 8: 8,192 trainable parameters" in text  # 4 layers x 2 matrices x 8 x (64 + 64)
    assert "0.391 [" in text and "0.300, 0.400, 0.500" in text and "the best mean on it" in text  # (0.3 · 0.4 · 0.5)^(1/3)
    assert "best on it: Wq+Wv at r = 8" in sweep_point_html(summary, ("q",), 1, d_model=64, n_layer=4)
    assert sweep_png(summary, ("v",), 8)[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no run of Wq at r = 4"):
        sweep_point_html(summary, ("q",), 4, d_model=64, n_layer=4)
    box = sweep_explorer(fake_sweep(), d_model=64, n_layer=4)
    targets, rank = box.children[0].children
    caption = box.children[1]
    assert list(rank.options) == [1, 8] and caption.value == sweep_point_html(summary, ("q",), 1, 64, 4)
    targets.value = "Wv"
    assert list(rank.options) == [8] and caption.value == sweep_point_html(summary, ("v",), 8, 64, 4)
    targets.value = "Wq+Wv"
    rank.value = 8
    assert caption.value == sweep_point_html(summary, ("q", "v"), 8, 64, 4)
