import numpy as np
import pytest

import lora_edu.exercises  # noqa: F401  (registers them)
from lora_edu import fit_lora_to_matrix, quiz
from lora_edu.arch import ARCHITECTURES
from lora_edu.linalg import SVDReconstructor
from lora_edu.widgets import RankSlider, calculator_table, lora_calculator, product_rank_explorer, product_rank_report, rank_caption

CORRECT = {
    "rank-of-product": "d",
    "eckart-young": "b",
    "recommender": "c",
    "query-cost": "d",
    "which-matrices": "e",
    "why-b-zero": "b",
    "gradient-of-a": "b",
    "rank-of-123": 1,
    "rank-one-storage": 8,
    "image-storage": 51_250,
    "gpt2-qv-r8": 294_912,
    "llama-all-linear-r5": 13_107_200,
    "tiny-gpt-lora-qv": 8192,
    "disable-lora": "b",
}


def test_every_exercise_has_a_known_answer():
    assert set(CORRECT) == set(quiz.EXERCISES)


@pytest.mark.parametrize("exercise_id, answer", CORRECT.items())
def test_correct_answers_pass_and_wrong_ones_fail(exercise_id, answer, capsys):
    assert quiz.check(exercise_id, answer) is True
    assert "Correct" in capsys.readouterr().out
    ex = quiz.EXERCISES[exercise_id]
    wrong = [o for o in ex.options if o != answer] if ex.options else [answer + 1, answer * 2]
    for w in wrong:
        assert quiz.check(exercise_id, w) is False
    assert quiz.check(exercise_id, None) is None


def test_answers_are_not_stored_in_plain_text():
    for ex in quiz.EXERCISES.values():
        if ex.options:
            assert len(ex.answer_digest) == 16 and ex.answer_digest not in ex.options


def test_bad_answers_are_clear_errors():
    with pytest.raises(ValueError, match="one of the letters"):
        quiz.check("query-cost", "z")
    with pytest.raises(TypeError, match="wants a number"):
        quiz.check("gpt2-qv-r8", "many")
    with pytest.raises(ValueError, match="Unknown exercise"):
        quiz.check("nope", "a")


def test_rank_slider_callback_updates_image_and_caption():
    rng = np.random.default_rng(0)
    img = rng.random((64, 48))
    slider = RankSlider(img, k=3)
    svd = SVDReconstructor(img)
    assert slider.caption.value == rank_caption(svd, 3)
    first = slider.image.value
    slider.slider.value = 10
    assert slider.caption.value == rank_caption(svd, 10)
    assert f"error {svd.error(10):.4f}" in slider.caption.value
    assert slider.image.value != first and bytes(slider.image.value).startswith(b"\x89PNG")
    assert len(slider.latencies_ms) == 1


def test_calculator_table_numbers_come_from_the_arithmetic():
    html = calculator_table("GPT-3 175B", 4, ("q", "v"), "fp16")
    assert "18,874,368" in html and "37.7 MB" in html and "0.0108%" in html
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


def test_product_rank_report_and_explorer():
    text = product_rank_report(32, 5)
    assert "rank(AB) = 5" in text and "1,024" in text and "320" in text
    box = product_rank_explorer(16, 2)
    box.children[1].value = 3
    assert "rank(AB) = 3" in box.children[2].value
    with pytest.raises(ValueError):
        product_rank_report(4, 5)


def test_fit_reaches_the_rank_one_target():
    w = np.ones((4, 4))
    target = w.copy()
    target[2:] = [[2, 3, 4, 5], [3, 5, 7, 9]]
    fit = fit_lora_to_matrix(w, target, r=1, steps=400, lr=0.05)
    assert fit.losses[-1] < 1e-8 < fit.losses[0]
    np.testing.assert_allclose(fit.delta_weight, target - w, atol=1e-4)
    np.testing.assert_allclose(fit.deltas[-1], fit.delta_weight)
    with pytest.raises(ValueError, match="same shape"):
        fit_lora_to_matrix(w, np.ones((3, 4)))


def test_fit_history_explorer_shows_each_step():
    from lora_edu.widgets import fit_history_explorer, fit_step_html

    w, target = np.ones((2, 2)), np.array([[1.0, 1.0], [2.0, 3.0]])
    fit = fit_lora_to_matrix(w, target, r=1, steps=5, lr=0.1, a_init=np.array([[0.3, -0.2]]))
    assert f"loss {fit.losses[2]:.6f}" in fit_step_html(fit, 3)
    box = fit_history_explorer(fit)
    box.children[0].value = 2
    assert box.children[1].value == fit_step_html(fit, 2)
    with pytest.raises(ValueError, match="step must be"):
        fit_step_html(fit, 0)
    with pytest.raises(ValueError, match="a_init"):
        fit_lora_to_matrix(w, target, r=1, a_init=np.zeros((2, 2)))
