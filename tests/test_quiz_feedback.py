"""How exercises are shown and diagnosed: formatted text in a notebook, usual mistakes named, model solutions."""

import numpy as np
import pytest

from lora_edu.course import quiz
from lora_edu.course.exercises import CodeExercise, PredictExercise, WrittenExercise

LESSONS = ("nb01", "nb02", "nb03", "nb04", "nb05", "nb05b", "nb05c", "nb06", "nb06b", "nb07")
LATER = ("nb05", "nb05b", "nb05c", "nb06", "nb06b", "nb07")  # the GPT lessons


@pytest.fixture
def notebook(monkeypatch):
    """Pretend to run in a Jupyter kernel and collect what would be displayed."""
    import IPython.display

    shown = []
    monkeypatch.setattr(quiz, "in_notebook", lambda: True)
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False: shown.append(obj))
    return shown


def test_a_jupyter_kernel_counts_as_a_notebook(monkeypatch):
    import IPython

    class Shell:
        kernel = object()  # what a Jupyter kernel's shell has and a terminal's has not

    assert not quiz.in_notebook()
    monkeypatch.setattr(IPython, "get_ipython", lambda: Shell())
    assert quiz.in_notebook()


def lesson_exercises(lessons=LESSONS):
    from lora_edu.course.exercises import registered_by

    return {i: ex for i, ex in quiz.all_exercises().items() if registered_by(i).rsplit(".", 1)[-1] in lessons}


def test_in_a_notebook_feedback_is_formatted_and_check_returns_nothing(notebook):
    assert quiz.check("tail-error", 2) is None  # no Out: False under the cell
    assert quiz.grade("tail-error", 2) is False and quiz.grade("tail-error", 3) is True
    quiz.show("factor-rank-one")
    assert len(notebook) == 2
    for bundle in notebook:
        assert set(bundle) == {"text/html", "text/plain"}
        assert "`" not in bundle["text/plain"] and "`" not in bundle["text/html"]
    assert "<code>" in notebook[1]["text/html"]  # `code` becomes code font, not backticks
    assert "largest dropped singular value" in notebook[0]["text/plain"]  # the trap's feedback


def test_outside_a_notebook_check_returns_the_verdict(capsys):
    assert not quiz.in_notebook()
    assert quiz.check("tail-error", 2) is False and quiz.check("tail-error", 3) is True
    assert "`" not in capsys.readouterr().out


def test_html_keeps_lists_and_escapes():
    html = quiz.to_html("a < b and `x @ W.T`\n- one\n- two")
    assert "&lt;" in html and "<code>x @ W.T</code>" in html and html.count("<li>") == 2


@pytest.mark.parametrize("mistake, words", [
    (lambda W, A, B, alpha, r: W + alpha / r * B @ A, "the transposed merge"),
    (lambda W, A, B, alpha, r: W.T + alpha / r * B @ A, "nn.Linear's layout"),
    (lambda W, A, B, alpha, r: W + (B @ A).T, "off by exactly the factor α/r"),
    (lambda W, A, B, alpha, r: W + r / alpha * (B @ A).T, "upside down"),
    (lambda W, A, B, alpha, r: alpha / r * (B @ A).T, "only the update"),
    (lambda W, A, B, alpha, r: (W + alpha / r * (B @ A).T).T, "nn.Linear's layout"),  # the transpose of the answer
    (lambda W, A, B, alpha, r: 3 * (W + alpha / r * (B @ A).T), "exactly 3 times"),
])
def test_code_feedback_names_the_mistake_before_the_numbers(mistake, words):
    right, message = quiz.get("merge-conv1d").verdict(mistake)
    assert not right and words in message
    assert message.index(words) < message.index("hidden case")


def test_other_diagnoses():
    _, message = quiz.get("lora-param-grads").verdict(
        lambda x, gy, W, A, B, alpha, r: (B.T @ gy.T @ x, gy.T @ x @ A.T))
    assert "off by exactly α/r" in message
    _, message = quiz.get("rank-for-energy").verdict(
        lambda m, keep: int(np.searchsorted(np.cumsum(np.linalg.svd(m, compute_uv=False)) /
                                            np.sum(np.linalg.svd(m, compute_uv=False)), keep - 1e-12) + 1))
    assert "sum of their squares" in message
    _, message = quiz.get("factor-rank-one").verdict(lambda m: (m[:, :1] / m[0, 0], m[:1]))
    assert "divided by M[0, 0]" in message or "NaN" in message


def test_the_gradient_derivation_comes_after_a_right_answer_and_at_the_reveal(capsys, monkeypatch):
    from lora_edu.lora.fit import lora_param_grads

    derivation = "Outer layer, z = h Bᵀ"
    assert quiz.check("lora-param-grads", lora_param_grads) is True  # the package's version passes the exercise
    out = capsys.readouterr().out
    assert out.startswith("Correct: passed all") and derivation in out and "∂L/∂A = Bᵀ G and ∂L/∂B = G Aᵀ" in out
    quiz.check("lora-param-grads", lambda x, gy, W, A, B, alpha, r: (B.T @ gy.T @ x, gy.T @ x @ A.T))
    quiz.show("lora-param-grads")
    assert derivation not in capsys.readouterr().out  # not before a right answer
    monkeypatch.setenv("LORA_EDU_REVEAL", "1")
    quiz.show("lora-param-grads")
    out = capsys.readouterr().out
    solution = out.split("Instructor, model solution:")[1]
    assert derivation in solution and "def lora_param_grads(" in solution
    assert solution.index(derivation) < solution.index("def lora_param_grads(")


def test_every_code_exercise_of_01_to_07_has_a_readable_model_solution_that_passes():
    for ex_id, ex in lesson_exercises().items():
        if not isinstance(ex, CodeExercise):
            continue
        solution = ex.solution()
        assert solution.startswith("def ") and "lora_edu" not in solution and "package" not in solution, ex_id
        namespace = {"np": np}
        exec(solution, namespace)
        student = namespace[solution.split("(")[0][4:]]
        assert ex.verdict(student)[0], ex_id


def test_each_lesson_has_a_prediction_a_code_exercise_and_an_argument():
    from lora_edu.course.exercises import registered_by

    for lesson in LESSONS:
        kinds = {type(ex) for i, ex in quiz.all_exercises().items() if registered_by(i).endswith(lesson)}
        assert {PredictExercise, CodeExercise, WrittenExercise} <= kinds, lesson


def test_every_code_trap_of_05_to_07_is_named_on_the_hidden_cases():
    """A student who makes a trap's mistake is told that mistake, before any numbers."""
    code = {i: ex for i, ex in lesson_exercises(LATER).items() if isinstance(ex, CodeExercise)}
    assert set(code) == {"training-state-bytes", "wilson-interval", "welch-interval", "match-rates", "update-size", "intruder-count",
                         "subspace-phi", "dora-weight", "ring-allreduce-seconds", "batched-lora-rows", "ddp-accumulate"}
    for ex_id, ex in code.items():
        assert len(ex.traps) >= 3, ex_id
        for trap in ex.traps:  # the hidden cases alone: a trap may be built on the package's own rule
            right, message = ex.run_cases(trap.wrong)
            assert not right and trap.message in message, (ex_id, trap.message, message)
            assert message.index(trap.message) < message.index("hidden case"), ex_id


def test_every_prediction_trap_of_05_to_07_names_its_misconception():
    predictions = {i: ex for i, ex in lesson_exercises(LATER).items() if isinstance(ex, PredictExercise)}
    assert set(predictions) == {"predict-lora-all-count", "predict-sixteen-of-sixteen", "predict-random-cosine",
                                "predict-random-phi", "predict-adapter-layers", "predict-rslora-slope", "predict-nf4-shrink",
                                "predict-nf4-small-merge", "predict-fsdp-gathers"}
    for ex_id, ex in predictions.items():
        assert ex.verdict(ex.expected())[0], ex_id
        for trap in ex.traps:
            right, message = ex.verdict(trap.value())
            assert not right and message.startswith(trap.message), (ex_id, trap.message, message)


def test_the_predictions_of_05_to_07_are_the_numbers_their_cells_measure():
    """The measuring cells of NOTEBOOK_CELLS.md, on what each notebook has at that point; quiz.predict checks the value."""
    import copy

    import torch

    from lora_edu.gpt.model import GPT, GPT_SIZES
    from lora_edu.gpt.pretrain import load_pretrained
    from lora_edu.lora.layer import count_parameters, inject_lora, mark_only_lora_trainable
    from lora_edu.lora.quant import quantize_base_nf4, weight_bytes
    from lora_edu.paper.analysis import subspace_similarity

    with torch.device("meta"):
        tiny_meta = GPT(GPT_SIZES["tiny"])
    inject_lora(tiny_meta, "all-linear", r=8, alpha=16)
    mark_only_lora_trainable(tiny_meta)
    assert quiz.predict("predict-lora-all-count", 36_864, count_parameters(tiny_meta).trainable) is True

    draws = np.random.default_rng(0)
    phi_random_88 = [subspace_similarity(draws.standard_normal((8, 64)), draws.standard_normal((8, 64)))[7, 7] for _ in range(500)]
    assert abs(np.mean(phi_random_88) - 8 / 64) < 0.005  # the expected value for random subspaces, max(i, j) / d
    assert quiz.predict("predict-random-phi", 1 / 8, float(np.mean(phi_random_88))) is True

    from lora_edu.lora.layer import LoRALinear  # 06b, section 2b: γ² ‖A x‖² over r = 4 to 64, its slope on log-log axes

    torch.manual_seed(0)
    x, ranks, grown = torch.randn(256, 64), (4, 8, 16, 32, 64), {False: [], True: []}
    for r in ranks:
        for rs in grown:
            layer = LoRALinear(torch.nn.Linear(64, 64), r=r, alpha=16, use_rslora=rs)
            with torch.no_grad():
                grown[rs].append(layer.scaling**2 * float((x @ layer.lora_A.T).pow(2).sum(dim=1).mean()))
    slope = {rs: float(np.polyfit(np.log2(ranks), np.log2(values), 1)[0]) for rs, values in grown.items()}
    assert quiz.predict("predict-rslora-slope", -1, slope[False]) is True and abs(slope[True]) < 0.15

    directions = np.random.default_rng(0).standard_normal((1000, 64))  # 05c: random directions against 64 orthonormal ones
    chance = np.median(np.abs(directions @ np.eye(64)).max(axis=1) / np.linalg.norm(directions, axis=1))
    assert quiz.predict("predict-random-cosine", 0.3, chance) is True and 0.3 < chance < 0.34

    base, _ = load_pretrained("tiny", "cpu")  # what notebook 07 quantises
    nf4_probe = copy.deepcopy(base)
    probe_fp32 = weight_bytes(nf4_probe)
    quantize_base_nf4(nf4_probe)
    assert quiz.predict("predict-nf4-shrink", None, probe_fp32 / weight_bytes(nf4_probe)) is None
    assert quiz.predict("predict-nf4-shrink", 32 / 4.125, probe_fp32 / weight_bytes(nf4_probe)) is True


def test_lines_that_give_a_prediction_away_wait_for_it(capsys, monkeypatch):
    monkeypatch.setattr(quiz, "_attempts", {})
    monkeypatch.setattr(quiz, "revealing", lambda: False)
    computed = []
    with quiz.after_prediction("predict-nf4-shrink"):
        computed.append(7.63)
        print("NF4 / fp32 = 0.1311")
    out = capsys.readouterr().out
    assert computed == [7.63] and "0.1311" not in out and "Shown after your prediction" in out
    quiz.predict("predict-nf4-shrink", 8, 32 / 4.195)
    capsys.readouterr()
    with quiz.after_prediction("predict-nf4-shrink"):
        print("NF4 / fp32 = 0.1311")
    assert capsys.readouterr().out == "NF4 / fp32 = 0.1311\n"
    with pytest.raises(ZeroDivisionError), quiz.after_prediction("predict-nf4-small-merge"):
        print("the line before the error")
        raise ZeroDivisionError
    assert "the line before the error" in capsys.readouterr().out
    monkeypatch.setattr(quiz, "revealing", lambda: True)
    with quiz.after_prediction("predict-nf4-small-merge"):
        print("kept 0.01")
    assert "kept 0.01" in capsys.readouterr().out
    with pytest.raises(TypeError, match="not a predict"):
        with quiz.after_prediction("tail-error"):
            pass


def test_held_lines_wait_behind_a_click_in_a_notebook(notebook, monkeypatch):
    monkeypatch.setattr(quiz, "_attempts", {})
    monkeypatch.setattr(quiz, "revealing", lambda: False)
    with quiz.after_prediction("predict-nf4-shrink"):
        print("NF4 / fp32 = 0.1311")
    (bundle,) = notebook
    assert "<details><summary>the lines, for after you have predicted" in bundle["text/html"]
    assert "NF4 / fp32 = 0.1311</pre></details>" in bundle["text/html"]
    assert "0.1311" not in bundle["text/plain"]  # a plain-text reader is not shown them at all


def test_predict_hides_the_measurement_until_a_prediction_is_written(capsys):
    assert quiz.predict("predict-rotated-rank-one", None, 2.0) is None
    out = capsys.readouterr().out
    assert "No prediction yet" in out and "2.0" not in out
    assert quiz.predict("predict-rotated-rank-one", 3, 2.0) is False
    out = capsys.readouterr().out
    assert "measured 2" in out and "smaller direction" in out
    assert quiz.predict("predict-rotated-rank-one", 2, 2.0) is True
    with pytest.raises(AssertionError, match="differs"):
        quiz.predict("predict-rotated-rank-one", 2, 3.0)
    with pytest.raises(TypeError, match="not a predict"):
        quiz.predict("tail-error", 2, 2.0)


def test_written_answers_need_an_argument_and_then_show_the_points(capsys, monkeypatch):
    assert quiz.check("proof-rank-of-product", "rank is at most r") is False
    assert "too short" in capsys.readouterr().out
    with pytest.raises(TypeError, match="string"):
        quiz.check("proof-rank-of-product", 3)
    nonsense = "the cat sat on the mat and then it sat on the mat again for a while"
    assert quiz.check("proof-rank-of-product", nonsense) is True  # long enough to compare, not graded
    out = capsys.readouterr().out
    assert out.startswith("Not graded: compare your argument with these points.\n- ") and "Correct" not in out
    monkeypatch.setenv("LORA_EDU_REVEAL", "1")
    quiz.show("proof-rank-of-product")
    assert "Instructor, model solution: Column j of B A" in capsys.readouterr().out


def test_a_written_argument_is_shown_in_a_neutral_box_not_as_a_right_answer(notebook):
    quiz.check("init-swapped", "A is zero so B A is zero at the start and the gradient of A is not zero")
    quiz.check("tail-error", quiz.get("tail-error").expected())  # a right answer, whatever the exercise asks
    written, right = notebook
    assert written["text/plain"].startswith("Not graded: compare your argument with these points.")
    assert quiz.STYLES["right"] not in written["text/html"] and quiz.STYLES["ungraded"] in written["text/html"]
    assert quiz.STYLES["right"] in right["text/html"]
    assert quiz.STYLES["ungraded"] != quiz.STYLES["right"]


def test_lora_input_grad_names_the_transposed_w_on_the_first_hidden_case():
    ex = quiz.get("lora-input-grad")
    right, message = ex.verdict(lambda gy, W, A, B, alpha, r: gy @ W.T + alpha / r * (gy @ B) @ A)
    assert not right and "not grad_y Wᵀ" in message and "hidden case 1 of" in message
    assert message.index("not grad_y Wᵀ") < message.index("hidden case")
    first = next(iter(ex.cases(np.random.default_rng(ex.seed))))
    assert first[1].shape[0] == first[1].shape[1]  # square W, so the mistake runs instead of failing on a shape


def conv1d_merge_expected(W_stored, A, B, alpha, r):
    return W_stored + alpha / r * (B @ A).T


def test_merge_conv1d_is_checked_without_transformers(monkeypatch):
    import sys

    from lora_edu.course.exercises.nb04 import conv1d_cases, package_conv1d_merge

    monkeypatch.setitem(sys.modules, "transformers", None)  # as on a plain `pip install lora_edu`
    monkeypatch.setitem(sys.modules, "transformers.pytorch_utils", None)
    with pytest.raises(ImportError):
        import transformers.pytorch_utils  # noqa: F401
    for args in conv1d_cases(np.random.default_rng(0)):
        np.testing.assert_allclose(package_conv1d_merge(*args), conv1d_merge_expected(*args), rtol=1e-12, atol=1e-12)
    ex = quiz.get("merge-conv1d")
    namespace = {"np": np}
    exec(ex.solution(), namespace)
    assert quiz.check("merge-conv1d", namespace["merge_conv1d"]) is True
    right, message = ex.verdict(lambda W, A, B, alpha, r: W + alpha / r * B @ A)
    assert not right and "the transposed merge" in message


def test_merge_conv1d_uses_gpt2s_conv1d_when_transformers_is_installed(monkeypatch):
    pytest.importorskip("transformers")
    import transformers.pytorch_utils

    from lora_edu.course.exercises.nb04 import conv1d_cases, package_conv1d_merge

    built = []
    real = transformers.pytorch_utils.Conv1D

    class Counted(real):
        def __init__(self, *args, **kwargs):
            built.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(transformers.pytorch_utils, "Conv1D", Counted)
    for args in conv1d_cases(np.random.default_rng(0)):
        np.testing.assert_allclose(package_conv1d_merge(*args), conv1d_merge_expected(*args), rtol=1e-12, atol=1e-12)
    assert len(built) == len(conv1d_cases(np.random.default_rng(0)))


def test_widgets_leave_a_picture_of_their_starting_state(notebook):
    from lora_edu.course.widgets import RankSlider, fit_history_explorer, lora_calculator, product_rank_explorer

    lora_calculator()
    product_rank_explorer(16, 2)
    slider = RankSlider(np.random.default_rng(0).random((40, 30)), k=3, k_max=20)
    assert slider.slider.max == 20
    slider.show()
    from lora_edu import fit_lora_to_matrix

    fit_history_explorer(fit_lora_to_matrix(np.ones((2, 2)), np.eye(2) + 1, r=1, steps=3))
    assert len(notebook) == 4
    assert all("Starting state" in bundle["text/html"] for bundle in notebook)
    assert "<table" in notebook[0]["text/html"] and "rank(ΔW)" in notebook[1]["text/html"]
    assert notebook[2]["text/html"].count("data:image/png;base64") == 3


def test_rank_slider_k_max_is_checked():
    from lora_edu.course.widgets import RankSlider

    with pytest.raises(ValueError, match="above the slider's k_max"):
        RankSlider(np.ones((10, 10)), k=8, k_max=5)


def test_a_code_exercise_sends_back_a_function_that_calls_the_package_answer():
    from lora_edu.course.exercises import load_all
    from lora_edu.paper.analysis import subspace_similarity

    EXERCISES = load_all()

    ex = EXERCISES["subspace-phi"]

    def wrapped(A1, A2, i, j):
        return float(subspace_similarity(A1, A2)[i - 1, j - 1])

    ok, feedback = ex.verdict(wrapped)
    assert not ok and "`subspace_similarity`" in feedback and "yourself" in feedback
    assert not ex.verdict(lambda A1, A2, i, j: subspace_similarity(A1, A2)[i - 1, j - 1])[0]  # a lambda too
    assert "`subspace_similarity`" in ex.instructions()

    def by_hand(A1, A2, i, j):  # the model solution's route, with no package call
        import numpy as np
        u = np.linalg.svd(A1, full_matrices=False)[2][:i].T
        v = np.linalg.svd(A2, full_matrices=False)[2][:j].T
        return float(np.linalg.norm(u.T @ v) ** 2 / min(i, j))

    assert ex.verdict(by_hand)[0]
    from lora_edu.scale.distributed import ring_allreduce_seconds
    assert not EXERCISES["ring-allreduce-seconds"].verdict(ring_allreduce_seconds)[0]  # the package's own function, passed as is


def test_the_margin_verdict_exercise_computes_what_it_explains():
    import math
    import statistics

    from lora_edu.course import quiz  # noqa: F401 (loads every lesson's exercises)
    from lora_edu.course.exercises.core import registry
    from lora_edu.paper.experiments import t95

    ex = registry()["margin-verdict"]
    ratios = [1.05, 1.32, 1.18, 1.41, 1.09]  # the prompt's five seeds
    assert all(f"{r:.2f}" in ex.prompt for r in ratios)
    logs = [math.log(r) for r in ratios]
    half = t95(4) * statistics.stdev(logs) / math.sqrt(5)
    low, mid, high = (math.exp(statistics.fmean(logs) + k * half) for k in (-1, 0, 1))
    assert f"[{low:.2f}, {high:.2f}]" in ex.explanation and f"= {mid:.2f}" in ex.explanation and "t = 2.776" in ex.prompt
    assert low > 1 and low < 1.25 < high  # above 1, straddling the margin: "not resolved" is the right option
    assert ex.correct_letter() == "c" and ex.options["c"].startswith("not resolved")
