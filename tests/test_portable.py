"""The portable-check rule: trained figures compared within a declared tolerance, everything else exactly."""

import pytest

from lora_edu.devtools.portable import Tolerance, compare_trained_outputs, numbers_and_text, output_ignored, trained_tolerance


def stream(text: str) -> dict:
    return {"output_type": "stream", "name": "stdout", "text": text}


def test_the_cell_metadata_declares_the_tolerance():
    def meta(declared):
        return {"lora_edu": {"trained_figures": declared}}

    assert trained_tolerance(meta({"rel": 0.02, "abs": 0.005, "why": "measured spread"})) == Tolerance(0.02, 0.005)
    assert trained_tolerance(meta({"abs": 0.1})) == Tolerance(0.0, 0.1)
    assert trained_tolerance({}) is None and trained_tolerance({"tags": ["nbval-ignore-output"]}) is None
    for bad in ({}, {"why": "no numbers"}, {"rel": "0.1"}, {"abs": -1}, {"rel": True}, 0.1):
        with pytest.raises(ValueError, match="needs a tolerance"):
            trained_tolerance(meta(bad))
    assert output_ignored({"tags": ["nbval-ignore-output"]}) and not output_ignored({}) and not output_ignored(meta({"abs": 1}))


def test_numbers_are_split_from_the_text():
    nums, rest = numbers_and_text("trainable 8,192 of 212,928 (3.70%)   loss 5.73e-1, phi(1, 2) -0.5")
    assert nums == [8192, 212928, 3.70, 0.573, 1, 2, -0.5]
    assert rest[0] == "trainable " and rest[-3] == ", "


@pytest.mark.parametrize(
    ("stored", "new", "ok"),
    [
        ("loss 5.74, EM 1.000\n", "loss 5.73, EM 1.000\n", True),  # a last digit that differs between CPU kernels
        ("loss   9.99 |\n", "loss  10.01 |\n", True),  # a wider number changes a column's padding only
        ("loss 5.74\n", "loss 6.74\n", False),  # beyond the tolerance: a real change
        ("loss 5.74\n", "lass 5.74\n", False),  # the text is compared exactly
        ("r = 4: 1.0\n", "r = 4: 1.0 2.0\n", False),  # a number more
    ],
)
def test_trained_figures_within_tolerance(stored, new, ok):
    assert compare_trained_outputs([stream(new)], [stream(stored)], Tolerance(rel=0.01, abs=0.01))[0] is ok


def test_images_are_not_compared_but_text_outputs_are():
    fig = {"output_type": "display_data", "data": {"image/png": "AAAA", "text/plain": "<Figure size 640x480 with 1 Axes>"}}
    other = {"output_type": "display_data", "data": {"image/png": "BBBB", "text/plain": "<Figure size 640x480 with 1 Axes>"}}
    assert compare_trained_outputs([other], [fig], Tolerance())[0]
    two_axes = {"output_type": "display_data", "data": {"image/png": "AAAA", "text/plain": "<Figure size 640x480 with 2 Axes>"}}
    ok, report = compare_trained_outputs([two_axes], [fig], Tolerance(abs=0.5))
    assert not ok and "number" in report[0]


def test_a_missing_output_fails():
    ok, report = compare_trained_outputs([], [stream("EM 1.0\n")], Tolerance(abs=1))
    assert not ok and "output kinds differ" in report[0]


def test_streams_split_into_several_messages_are_joined():
    assert compare_trained_outputs([stream("loss 1.00"), stream("1\n")], [stream("loss 1.001\n")], Tolerance(abs=1e-3))[0]
