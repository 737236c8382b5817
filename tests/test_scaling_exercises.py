"""Notebook 07's exercises (lora_edu/course/exercises/nb07.py): right answers pass, predictable wrong ones fail."""

import pytest

from lora_edu import quiz
from lora_edu.course.exercises import ChoiceExercise, CodeExercise, WrittenExercise, registered_by


def allreduce_seconds(n_trainable, bytes_per_number, world_size, gbytes_per_s):
    return 2 * (world_size - 1) / world_size * n_trainable * bytes_per_number / (gbytes_per_s * 1e9)


def batched_lora(x, W, A, B, scaling, ids):
    out = x @ W.T
    for i, k in enumerate(ids):  # a loop over rows is slower but right
        if k >= 0:
            out[i] += scaling[k] * (x[i] @ A[k].T) @ B[k].T
    return out


def accumulate_under_ddp(ddp, x, y, k):  # written another way: one loop, the context chosen per micro-batch
    import contextlib

    for p in ddp.parameters():
        p.grad = None
    total = (y != -100).sum()
    for i, (xs, ys) in enumerate(zip(x.chunk(k), y.chunk(k), strict=True)):
        with ddp.no_sync() if i < k - 1 else contextlib.nullcontext():
            _, loss = ddp(xs, ys)
            (loss * (ys != -100).sum() / total).backward()


def accumulate_sending_every_time(ddp, x, y, k):  # no no_sync: k all-reduces a step
    for p in ddp.parameters():
        p.grad = None
    total = (y != -100).sum()
    for xs, ys in zip(x.chunk(k), y.chunk(k), strict=True):
        _, loss = ddp(xs, ys)
        (loss * (ys != -100).sum() / total).backward()


def accumulate_forward_outside(ddp, x, y, k):  # the forward pass outside no_sync: DDP still syncs that backward pass
    for p in ddp.parameters():
        p.grad = None
    total = (y != -100).sum()
    for i, (xs, ys) in enumerate(zip(x.chunk(k), y.chunk(k), strict=True)):
        _, loss = ddp(xs, ys)
        if i < k - 1:
            with ddp.no_sync():
                (loss * (ys != -100).sum() / total).backward()
        else:
            (loss * (ys != -100).sum() / total).backward()


def accumulate_mean_of_means(ddp, x, y, k):  # no_sync right, each mean loss divided by k
    chunks = list(zip(x.chunk(k), y.chunk(k), strict=True))
    for xs, ys in chunks[:-1]:
        with ddp.no_sync():
            (ddp(xs, ys)[1] / k).backward()
    (ddp(*chunks[-1])[1] / k).backward()


ARGUMENT = ("L is the mean over all N tokens, so L = sum over m of (N_m / N) L_m, and the gradient is linear; with "
            "equal token counts every weight is 1/k.")
CORRECT = {
    "predict-nf4-shrink": 32 / (4 + 8 / 64),  # 4 bits per code and an 8-bit scale per 64 weights
    "accumulation-weights": ARGUMENT,
    "allreduce-bytes-gpt2-medium": 24 * 2 * 8 * (1024 + 1024) * 4,
    "ring-allreduce-seconds": allreduce_seconds,
    "predict-nf4-small-merge": 0.0,  # rounding to 16 levels erases an update far below the gap between two levels
    "branch-cost-per-token": 16 * (4096 + 4096) / (4096 * 4096),
    "serve-mixed-adapters": "b",
    "predict-fsdp-gathers": 1.94,
    "batched-lora-rows": batched_lora,
    "ddp-accumulate": accumulate_under_ddp,
}
WRONG = {
    "predict-nf4-shrink": [8.0, 32 / 4.5, 4.0, 16.0],
    "accumulation-weights": ["the gradients add up", "because of linearity"],
    "allreduce-bytes-gpt2-medium": [24 * 2 * 8 * (1024 + 1024), 2 * 8 * (1024 + 1024) * 4, 24 * 2 * 8 * 1024 * 4],
    "ring-allreduce-seconds": [
        lambda n, b, w, g: n * b / (g * 1e9),  # the ring's 2 (N - 1) / N forgotten
        lambda n, b, w, g: 2 * (w - 1) / w * n * b / g,  # GB/s taken as bytes/s
    ],
    "predict-nf4-small-merge": [1.0, 0.9, 0.8, 0.5],
    "predict-fsdp-gathers": [1.0, 0.5, 3.0, 1.5],
    "branch-cost-per-token": [16 * 4096 / 4096**2, 16.0, 128.0, 0.78125, 1 + 1 / 128],
    "batched-lora-rows": [
        lambda x, W, A, B, s, ids: x @ W.T + s[ids][:, None, None] * ((x @ A[ids].transpose(0, 2, 1)) @ B[ids].transpose(0, 2, 1)),
        lambda x, W, A, B, s, ids: x @ W.T,  # the adapters forgotten
    ],
    "ddp-accumulate": [accumulate_sending_every_time, accumulate_forward_outside, accumulate_mean_of_means],
}
MISCONCEPTIONS = {  # what the feedback must name, for answers that follow from a usual wrong idea
    ("predict-nf4-small-merge", 1.0): "16 levels",
    ("predict-nf4-small-merge", 0.9): "relative to W, not to the update",
    ("branch-cost-per-token", 16 * 4096 / 4096**2): "x Aᵀ only",
    ("branch-cost-per-token", 16.0): "you formed each row's B A",
    ("branch-cost-per-token", 128.0): "base's cost over the branch's",
    ("branch-cost-per-token", 0.78125): "percentage",
    ("serve-mixed-adapters", "a"): "a merged model is always the fastest",
    ("serve-mixed-adapters", "c"): "cannot share a matrix product",
    ("serve-mixed-adapters", "d"): "adapters add up like features",
    ("predict-fsdp-gathers", 1.0): "counts the forward pass only",
    ("predict-fsdp-gathers", 0.5): "needs the layer's whole W",
    ("predict-fsdp-gathers", 3.0): "the optimizer step needs no gather",
    ("ddp-accumulate", accumulate_sending_every_time): "once per micro-batch",
    ("ddp-accumulate", accumulate_forward_outside): "its forward pass included",
    ("ddp-accumulate", accumulate_mean_of_means): "the same say",
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


@pytest.mark.parametrize("exercise_id, answer", sorted(MISCONCEPTIONS, key=str))
def test_feedback_names_the_misconception(exercise_id, answer):
    right, message = quiz.get(exercise_id).verdict(answer)
    assert not right and MISCONCEPTIONS[exercise_id, answer] in message


def test_notebook_07_keeps_at_most_one_multiple_choice():
    mine = [ex for i, ex in quiz.all_exercises().items() if registered_by(i).endswith(".nb07")]
    assert sum(isinstance(ex, ChoiceExercise) for ex in mine) <= 1


def test_the_small_update_prediction_is_what_its_cell_measures():
    """Notebook 07's cell: a pretrained layer on NF4 whose update is 1% of its weight; a merge keeps almost none of it."""
    import copy

    import torch

    from lora_edu.course.exercises.nb07 import small_update_layer
    from lora_edu.gpt.pretrain import load_pretrained
    from lora_edu.lora.layer import LoRALinear
    from lora_edu.lora.quant import NF4Linear, dequantized_weight, merge_kept_fraction

    base, _ = load_pretrained("tiny", "cpu")
    torch.manual_seed(0)  # the notebook's cell, as a student runs it
    pretrained = copy.deepcopy(base.get_submodule("blocks.3.mlp.fc_in"))
    small = LoRALinear(NF4Linear.from_linear(pretrained), r=8, alpha=16)
    with torch.no_grad():
        small.lora_B.normal_()
        small.lora_B.mul_(0.01 * dequantized_weight(small).norm() / small.delta_weight().norm())
    kept = merge_kept_fraction(small)
    assert abs(kept) < 0.05
    assert kept == merge_kept_fraction(small_update_layer())
    assert quiz.predict("predict-nf4-small-merge", 0.0, kept) is True
    with torch.no_grad():
        small.lora_B.mul_(30)  # an update of 30% of W is kept, with an error on top
    assert 0.9 < merge_kept_fraction(small) < 1.1


def test_unanswered_and_bad_answers():
    assert quiz.check("serve-mixed-adapters", None) is None
    with pytest.raises((TypeError, ValueError)):
        quiz.check("serve-mixed-adapters", "z")
    with pytest.raises((TypeError, ValueError)):
        quiz.check("allreduce-bytes-gpt2-medium", "many")


def test_the_reveal_shows_the_reasoning_not_only_the_number(capsys, monkeypatch):
    monkeypatch.setenv("LORA_EDU_REVEAL", "1")
    quiz.show("branch-cost-per-token")
    solution = capsys.readouterr().out.split("Instructor, model solution:")[1]
    assert solution.startswith(" 0.0078125. Why: x Aᵀ costs r d_in")
    quiz.check("serve-mixed-adapters", None)
    solution = capsys.readouterr().out.split("Instructor, model solution:")[1]
    assert solution.startswith(" b) batched: run the base product") and "Why: the base product" in solution
