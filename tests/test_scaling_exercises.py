"""Notebook 07's exercises (lora_edu/course/exercises/nb07.py): right answers pass, predictable wrong ones fail."""

import pytest

from lora_edu import quiz
from lora_edu.course.exercises import ChoiceExercise, CodeExercise, WrittenExercise, registered_by


def allreduce_seconds(n_trainable, bytes_per_number, world_size, gbytes_per_s):
    return 2 * (world_size - 1) / world_size * n_trainable * bytes_per_number / (gbytes_per_s * 1e9)


ARGUMENT = ("L is the mean over all N tokens, so L = sum over m of (N_m / N) L_m, and the gradient is linear; with "
            "equal token counts every weight is 1/k.")
CORRECT = {
    "predict-nf4-shrink": 32 / (4 + 8 / 64),  # 4 bits per code and an 8-bit scale per 64 weights
    "accumulation-weights": ARGUMENT,
    "allreduce-bytes-gpt2-medium": 24 * 2 * 8 * (1024 + 1024) * 4,
    "ring-allreduce-seconds": allreduce_seconds,
    "serve-mixed-adapters": "b",
    "serve-one-adapter": "c",
    "nf4-merge": "b",
}
WRONG = {
    "predict-nf4-shrink": [8.0, 32 / 4.5, 4.0, 16.0],
    "accumulation-weights": ["the gradients add up", "because of linearity"],
    "allreduce-bytes-gpt2-medium": [24 * 2 * 8 * (1024 + 1024), 2 * 8 * (1024 + 1024) * 4, 24 * 2 * 8 * 1024 * 4],
    "ring-allreduce-seconds": [
        lambda n, b, w, g: n * b / (g * 1e9),  # the ring's 2 (N - 1) / N forgotten
        lambda n, b, w, g: 2 * (w - 1) / w * n * b / g,  # GB/s taken as bytes/s
    ],
}


def test_notebook_07_has_these_exercises_and_a_code_one():
    mine = {i: ex for i, ex in quiz.all_exercises().items() if registered_by(i).endswith(".nb07")}
    assert set(mine) == set(CORRECT)
    assert any(isinstance(ex, CodeExercise) for ex in mine.values())


@pytest.mark.parametrize("exercise_id", sorted(CORRECT))
def test_right_answer_passes_and_wrong_ones_fail(exercise_id, capsys):
    ex = quiz.get(exercise_id)
    assert quiz.check(exercise_id, CORRECT[exercise_id]) is True
    assert capsys.readouterr().out.startswith("Not graded: " if isinstance(ex, WrittenExercise) else "Correct: ")
    wrong = [o for o in ex.options if o != CORRECT[exercise_id]] if isinstance(ex, ChoiceExercise) else WRONG[exercise_id]
    assert wrong
    for answer in wrong:
        assert quiz.check(exercise_id, answer) is False
        assert capsys.readouterr().out.startswith("Not yet.")
    if isinstance(ex, ChoiceExercise):  # every wrong option explains itself
        assert set(ex.feedback) == set(wrong)


def test_unanswered_and_bad_answers():
    assert quiz.check("serve-one-adapter", None) is None
    with pytest.raises((TypeError, ValueError)):
        quiz.check("serve-one-adapter", "z")
    with pytest.raises((TypeError, ValueError)):
        quiz.check("allreduce-bytes-gpt2-medium", "many")
