"""Device bugs caught on a CPU: weights on the meta device, code run under ``check_devices()``.

A tensor made without ``device=`` lands on the CPU; the mode flags the first op that meets it beside a
weight on another device, which on a GPU would fail only there.
"""

import numpy as np
import pytest
import torch
from torch import nn

from lora_edu import GPT, GPTConfig, LoRALinear, disable_lora, inject_lora, mark_only_lora_trainable, merge_lora, unmerge_lora
from lora_edu.devtools.devicecheck import DeviceMixError, check_devices
from lora_edu.lora.variants import dora_weight, first_step_delta_weight, loraplus_optimizer, pissa_init, row_norm
from lora_edu.paper.analysis import delta_w_alignment, intruder_dimensions, intruder_similarity, subspace_similarity
from lora_edu.paper.houlsby import add_houlsby_adapters

META = torch.device("meta")
DTYPES = [torch.float32, torch.bfloat16]


def test_plain_torch_misses_meta_matmul_cpu_and_the_mode_flags_it():
    w = torch.empty(8, 6, device=META)
    assert (w @ torch.ones(6, 2)).device == META  # PyTorch silently accepts this one
    with pytest.raises(RuntimeError, match="device"):
        w + torch.ones(8, 6)  # and catches this one
    with check_devices(), pytest.raises(DeviceMixError, match=r"matmul got tensors on more than one device: meta \(8, 6\) float32, cpu"):
        w @ torch.ones(6, 2)
    with check_devices(), pytest.raises(DeviceMixError, match=r"test_device_mixing.py:\d+\). Create new tensors with device=weight.device"):
        torch.matmul(torch.ones(2, 8), w)


def test_transfers_scalars_and_one_device_ops_pass():
    w = torch.ones(3, 3, device=META)
    with check_devices(raise_on_mix=False) as found:
        w * torch.tensor(2.0)  # a 0-dim CPU tensor, as PyTorch allows
        w.copy_(torch.ones(3, 3))  # explicit transfers
        y = torch.ones(3).to(META) + w[0]
        torch.ones(2, 2) @ torch.ones(2, 2)
        rows = w[torch.tensor([0, 2])]  # a CPU index tensor, as PyTorch allows on any device
        moved = nn.Linear(3, 2).to(META, torch.bfloat16)  # nn.Module.to checks and swaps tensors across devices
        w[torch.tensor([1])] = torch.zeros(1, 3, device=META)
    assert found.mixes == [] and y.device == META and rows.shape == (2, 3) and moved.weight.device == META
    with check_devices(), pytest.raises(DeviceMixError, match="__setitem__"):
        w[torch.tensor([1])] = torch.zeros(1, 3)  # the value still has to be on w's device
    with check_devices(allow_cpu_scalars=False), pytest.raises(DeviceMixError, match="cpu \\(\\) float32"):
        w * torch.tensor(2.0)


def test_record_mode_lists_every_mix_with_its_line():
    w = torch.empty(4, 4, device=META)
    with check_devices(raise_on_mix=False) as found:
        w @ torch.ones(4, 4)
        torch.ones(4, 4) @ w
        w @ w
    assert [m.op for m in found.mixes] == ["torch.Tensor.matmul", "torch.Tensor.matmul"]
    assert all(m.where.startswith("test_device_mixing.py:") for m in found.mixes)
    assert found.mixes[0].tensors == ("meta (4, 4) float32", "cpu (4, 4) float32")


def test_notebook_06_dora_cell_bug_is_flagged():
    # Notebook 06's DoRA cell made B and A with torch.zeros / torch.randn, i.e. on the CPU whatever device W was on.
    w = torch.empty(16, 12, device=META)
    b_, a_ = torch.zeros(w.shape[0], 4), torch.randn(4, w.shape[1])
    with check_devices(), pytest.raises(DeviceMixError, match=r"add got tensors .* meta \(16, 12\) float32, cpu \(16, 12\)"):
        dora_weight(w, b_, a_, row_norm(w))
    with check_devices():  # the fix: make them on W's device, in W's dtype
        b_ = torch.zeros(w.shape[0], 4, device=w.device, dtype=w.dtype)
        a_ = torch.randn(4, w.shape[1], device=w.device, dtype=w.dtype)
        out = dora_weight(w, b_, a_, row_norm(w))
    assert out.device == META and out.shape == w.shape


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_variants_and_analysis_follow_the_weights(dtype):
    w = torch.empty(16, 12, device=META, dtype=dtype)
    with check_devices():
        m = row_norm(w)
        out = dora_weight(w, torch.empty(16, 4, device=META, dtype=dtype), torch.empty(4, 12, device=META, dtype=dtype), m)
        layer = LoRALinear(nn.Linear(12, 16, device=META, dtype=dtype), r=4, alpha=8)
        pissa_init(layer)
        delta = first_step_delta_weight(4, 8, True, d=32, device=META, dtype=dtype)
        sim = intruder_similarity(w, torch.empty_like(w), k=5)
    assert (m.shape, m.device, m.dtype) == ((16, 1), META, dtype)
    assert (out.device, out.dtype) == (META, dtype)
    assert {p.device for p in layer.parameters()} == {META} and layer.base.weight.dtype == dtype
    assert (delta.shape, delta.device) == ((32, 32), META)
    assert (sim.shape, sim.device) == ((5,), META)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_lora_layer_forward_and_merge_on_meta(dtype):
    layer = LoRALinear(nn.Linear(12, 16, device=META, dtype=dtype), r=4, alpha=8)
    x = torch.empty(2, 5, 12, device=META, dtype=dtype)
    with check_devices():
        y = layer(x)
        layer.merge()
        layer(x)
        layer.unmerge()
    assert (y.shape, y.device, y.dtype) == ((2, 5, 16), META, dtype)


def test_lora_gpt_trains_one_step_on_meta():
    cfg = GPTConfig(vocab_size=11, n_ctx=8, n_layer=2, n_head=2, d_model=16)
    with torch.device(META):
        model = GPT(cfg)
    idx = torch.randint(0, 11, (2, 6), device=META)
    with check_devices():
        names = inject_lora(model, "all-linear", r=2, alpha=4)
        mark_only_lora_trainable(model)
        opt = loraplus_optimizer(model, lr=1e-3)
        logits, loss = model(idx, targets=idx)
        loss.backward()
        opt.step()
        with disable_lora(model):
            model(idx)
        merge_lora(model)
        model(idx)
        unmerge_lora(model)
        add_houlsby_adapters(model, bottleneck=4)
        after, _ = model(idx)
    assert len(names) == 2 * 6 and logits.shape == (2, 6, 11) and after.device == META
    assert {p.device for p in model.parameters()} == {META}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; the meta-device tests above stand in for it")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_on_a_gpu_the_old_cell_fails_and_the_package_runs(dtype):
    cuda = torch.device("cuda")
    w = torch.randn(16, 12, device=cuda, dtype=dtype)
    with pytest.raises(RuntimeError, match="device"):  # notebook 06's old DoRA cell: B and A made on the CPU
        dora_weight(w, torch.zeros(16, 4), torch.randn(4, 12), row_norm(w))
    with check_devices(), pytest.raises(DeviceMixError, match="cuda:0 .* cpu"):
        dora_weight(w, torch.zeros(16, 4), torch.randn(4, 12), row_norm(w))
    with check_devices():
        out = dora_weight(w, torch.randn(16, 4, device=cuda, dtype=dtype), torch.randn(4, 12, device=cuda, dtype=dtype), row_norm(w))
        layer = LoRALinear(nn.Linear(12, 16, device=cuda, dtype=dtype), r=4, alpha=8)
        pissa_init(layer)
        delta = first_step_delta_weight(4, 8, True, d=32, device=cuda, dtype=dtype)
        found = intruder_dimensions(w, w + 0.01 * torch.randn_like(w), k=5)
        phi = subspace_similarity(layer.lora_A, layer.lora_A)
        table7 = delta_w_alignment(layer.base.weight, layer.delta_weight(), r=2)
        model = GPT(GPTConfig(vocab_size=11, n_ctx=8, n_layer=2, n_head=2, d_model=16)).to(cuda, dtype)
        inject_lora(model, "all-linear", r=2, alpha=4)
        mark_only_lora_trainable(model)
        opt = loraplus_optimizer(model, lr=1e-3)
        idx = torch.randint(0, 11, (2, 6), device=cuda)
        _, loss = model(idx, targets=idx)
        loss.backward()
        opt.step()
        merge_lora(model)
        add_houlsby_adapters(model, bottleneck=4)
        logits, _ = model(idx)
    assert (out.device.type, out.dtype) == ("cuda", dtype) and torch.allclose(row_norm(out).float(), row_norm(w).float(), rtol=2e-2)
    assert delta.device.type == "cuda" and found.max_similarity.device.type == "cuda" and found.count == 0
    assert np.isclose(phi[-1, -1], 1.0) and table7["norm_w"] > 0
    assert (logits.device.type, logits.dtype) == ("cuda", dtype) and torch.isfinite(loss)
