"""Fixtures shared by the test modules."""

import pytest
import torch

from lora_edu.gpt.pretrain import load_pretrained


@pytest.fixture(scope="module")
def tiny():
    """The shipped tiny GPT and its world, on the CPU, with one thread (the tests that use it time nothing)."""
    torch.set_num_threads(1)
    return load_pretrained("tiny", "cpu")
