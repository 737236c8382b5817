"""No host sync inside a training step: found on a CPU by recording the ops that read a value back."""

import collections

import pytest
import torch

from lora_edu.devtools.synccheck import record_host_syncs
from lora_edu.gpt.device import configure_threads
from lora_edu.gpt.model import GPT, GPTConfig, trusted_token_ids
from lora_edu.gpt.pretrain import PRETRAIN_SIZES
from lora_edu.gpt.train import TrainConfig, train
from lora_edu.lora.layer import inject_lora, mark_only_lora_trainable

CPU = torch.device("cpu")


def gpu_width_lora_model() -> GPT:
    """The gpu size's width and heads, 2 layers and a small vocabulary: seconds on a CPU."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**PRETRAIN_SIZES["gpu"].model.to_dict(), "n_layer": 2, "vocab_size": 64}))
    inject_lora(model, ["q_proj", "v_proj"], r=8, alpha=16)
    mark_only_lora_trainable(model)
    return model


def syncs_of_a_run(steps: int, precision: str) -> collections.Counter:
    """Host syncs of a run on the GPU path (fused AdamW), taken on the CPU: ``gpu_path_on_cpu``."""
    x = torch.randint(1, 64, (32, 16))
    cfg = TrainConfig(steps=steps, batch_size=8, eval_every=10**6, precision=precision, gpu_path_on_cpu=True)
    with record_host_syncs() as found:
        train(gpu_width_lora_model(), x, x.roll(-1, dims=1), cfg, progress=False, device=CPU)
    return collections.Counter(str(s) for s in found.syncs)


def test_the_recorder_names_the_op_and_the_line():
    t = torch.ones(3)
    with record_host_syncs() as found:
        t.sum().item()
        bool(t.any())
        t.nonzero()
        t * 2  # no sync
    assert found.ops == ["aten._local_scalar_dense.default"] * 2 + ["aten.nonzero.default"]
    assert all(s.where.startswith("test_host_syncs.py:") for s in found.syncs)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_a_training_step_never_waits_for_the_device(precision):
    """The GPU path (fused AdamW, autocast, fp16's scaler) run on a CPU: 12 steps wait as often as 2 (setup and the end only)."""
    configure_threads(1)
    few, many = syncs_of_a_run(2, precision), syncs_of_a_run(12, precision)
    assert many == few, f"syncs that grow with the number of steps: {many - few}"
    assert sum(few.values()) <= 6


def test_the_forward_pass_checks_ids_unless_trusted():
    model = GPT(GPTConfig(vocab_size=11, n_ctx=8, n_layer=1, n_head=1, d_model=8))
    idx = torch.randint(0, 11, (2, 8))
    with record_host_syncs() as checked:
        model(idx)
    with record_host_syncs() as trusted, trusted_token_ids():
        model(idx)
    assert checked.ops == ["aten._local_scalar_dense.default"] and trusted.ops == []
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(idx + 11)


def test_train_checks_every_row_before_the_first_step():
    model = GPT(GPTConfig(vocab_size=11, n_ctx=8, n_layer=1, n_head=1, d_model=8))
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.randint(0, 11, (16, 8))
    x[15, 3] = 11  # one bad id in the last row: a step might never draw it
    with pytest.raises(ValueError, match="Token id 11 is outside the vocabulary"):
        train(model, x, x, TrainConfig(steps=3, batch_size=2), progress=False, device=CPU)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
