"""The NF4 base (torchao) for QLoRA, and many adapters served in one batch."""

import copy

import pytest
import torch
from torch import nn

from lora_edu.gpt.data import task_data
from lora_edu.lora.layer import inject_lora, lora_layers, mark_only_lora_trainable
from lora_edu.lora.quant import (
    NF4Linear,
    dequantized_weight,
    merge_and_requantize,
    merge_requantization_error,
    quantization_error,
    quantize_base_nf4,
    tensor_bytes,
    weight_bytes,
)
from lora_edu.scale.serving import (
    SERVING_STRATEGIES,
    MultiLoRALinear,
    compare_serving,
    multi_adapter_model,
    random_adapters,
    serve_batched,
    serve_merge_swap,
    serve_one_at_a_time,
    serving_throughput,
    strategies_agree,
    use_adapters,
)


def test_nf4_linear_computes_with_the_dequantised_weight():
    torch.manual_seed(0)
    lin = nn.Linear(64, 128)
    q = NF4Linear.from_linear(lin)
    x = torch.randn(3, 5, 64)
    w = dequantized_weight(q)
    torch.testing.assert_close(q(x), x @ w.T + lin.bias, rtol=1e-5, atol=1e-5)
    err = quantization_error(lin.weight)
    assert 0.03 < err < 0.15  # 16 levels per block of 64
    assert float((w - lin.weight.detach()).norm() / lin.weight.detach().norm()) == pytest.approx(err, rel=1e-6)
    # 4 bits per weight plus one 8-bit scale per 64 weights and a few floats: about 1/7.5 of fp32
    assert 64 * 128 * 4 / 8 < tensor_bytes(q.weight) < 64 * 128 * 4 / 7


def test_quantize_base_then_lora_trains_only_the_factors(tiny):
    base, world = tiny
    model = copy.deepcopy(base)
    fp32_bytes = weight_bytes(model)
    names = quantize_base_nf4(model)
    assert len(names) == 6 * base.config.n_layer and all(isinstance(model.get_submodule(n), NF4Linear) for n in names)
    assert fp32_bytes / weight_bytes(model) > 7
    inject_lora(model, "all-linear", r=4, alpha=8)
    mark_only_lora_trainable(model)
    x, y = task_data(world, "json", world.animals[:4], base.config.n_ctx)
    _, loss = model(x, y)
    loss.backward()
    assert all(m.lora_A.grad is not None and m.base.weight.grad is None for m in lora_layers(model).values())
    copied = copy.deepcopy(model)  # exact copy of the 4-bit codes (torchao's clone would re-quantise)
    with torch.no_grad():
        assert torch.equal(copied(x)[0], model(x)[0])


def test_quantize_bad_inputs_leave_the_model_unchanged(tiny):
    base, _ = tiny
    model = copy.deepcopy(base)
    inject_lora(model, ["q_proj"], r=2, alpha=4)
    with pytest.raises(ValueError, match="quantise the base first"):
        quantize_base_nf4(model)
    odd = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 3), nn.Linear(3, 5))
    with pytest.raises(ValueError, match="not a multiple of 64"):
        quantize_base_nf4(odd, ["1", "2"])
    assert type(odd[0]) is nn.Linear and type(odd[1]) is nn.Linear
    quantize_base_nf4(odd, ["0"])
    with pytest.raises(ValueError, match="already NF4"):
        quantize_base_nf4(odd, ["0"])
    with pytest.raises(TypeError, match="plain nn.Linear"):
        NF4Linear.from_linear(odd[0])


def test_merge_into_nf4_is_not_exact():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64))
    quantize_base_nf4(model, ["0"])
    inject_lora(model, ["0"], r=4, alpha=8)
    layer = model[0]
    with torch.no_grad():
        layer.lora_B.normal_(std=0.01)
    report = merge_requantization_error(layer)
    assert report["update_norm"] > 0 and report["rounding_norm"] > 0.05 * report["update_norm"]
    merged = merge_and_requantize(model)
    assert isinstance(merged[0], NF4Linear) and isinstance(model[0], type(layer))  # the original is untouched
    x = torch.randn(2, 64)
    with torch.no_grad():
        assert not torch.allclose(merged(x), model(x), atol=1e-6)
    with pytest.raises(TypeError, match="NF4Linear"):
        merge_requantization_error(inject_lora(nn.Sequential(nn.Linear(8, 8)), ["0"], r=1, alpha=1) and None)


def test_batched_adapters_equal_each_row_with_its_own_adapter(tiny):
    base, world = tiny
    adapters = random_adapters(base, 3)
    x = task_data(world, "json", world.animals[:7], base.config.n_ctx)[0][:, :12]
    ids = [0, 2, 1, 1, 0, 2, 2]
    multi = multi_adapter_model(adapters)
    ref = serve_one_at_a_time(adapters, x, ids)
    torch.testing.assert_close(serve_batched(multi, x, ids), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(serve_merge_swap(copy.deepcopy(adapters[0]), adapters, x, ids), ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(strategies_agree(adapters, x, ids, multi=multi), ref, rtol=0, atol=0)
    changed = [copy.deepcopy(a) for a in adapters]  # one adapter changed after the batched model was built: caught, and named
    with torch.no_grad():
        changed[1].blocks[0].attn.q_proj.lora_B.add_(1.0)
    with pytest.raises(ValueError, match="batched serving differs"):
        strategies_agree(changed, x, ids, multi=multi)
    with torch.no_grad():  # id -1: the base model
        torch.testing.assert_close(serve_batched(multi, x[:2], [-1, 1])[0], base(x[:1])[0][0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ref[0], ref[1])  # the adapters differ, so the check means something
    for strategy in SERVING_STRATEGIES:
        assert serving_throughput(strategy, adapters, x, ids, repeats=1, multi=multi) > 0
    side_by_side = compare_serving(adapters, x, ids, rounds=3, multi=multi)
    assert list(side_by_side) == list(SERVING_STRATEGIES)
    assert all(0 < t.low <= t.median <= t.high for t in side_by_side.values())
    assert str(side_by_side["batched"]).count("-") == 1  # "median (low-high)"
    assert all(len(t.rounds) == 3 and min(t.rounds) == t.low for t in side_by_side.values())


def test_throughputs_are_compared_round_by_round():
    from lora_edu.scale.serving import Throughput

    fast = Throughput(400.0, 100.0, 410.0, (400.0, 100.0, 410.0))  # one slow round for both: the ranges overlap ...
    slow = Throughput(200.0, 60.0, 210.0, (200.0, 60.0, 210.0))
    assert fast.low < slow.high and fast.versus(slow).endswith("faster in every round")  # ... but every round agrees
    assert slow.versus(fast).startswith("0.51 times (rounds 0.50 to 0.60)") and slow.versus(fast).endswith("slower in every round")
    mixed = Throughput(300.0, 150.0, 450.0, (150.0, 300.0, 450.0))
    assert mixed.versus(slow).endswith("no difference these rounds can resolve")
    edge = Throughput(93.0, 84.0, 96.0, (84.0, 96.0, 93.0))  # slower in every round, by under 5% in one
    assert edge.versus(Throughput(100.0, 100.0, 100.0, (100.0, 100.0, 100.0))).endswith(
        "slower in every round, but in some by 5% or less: not called")
    assert fast.faster_than(slow) and not slow.faster_than(fast) and not edge.faster_than(Throughput(100.0, 100.0, 100.0, (100.0,) * 3))
    with pytest.raises(ValueError, match="same interleaved rounds"):
        Throughput(1.0, 1.0, 1.0).versus(fast)


def test_the_serving_table_reads_the_rounds():
    from lora_edu.scale.serving import Throughput, serving_table

    def mix(batched, swap):
        return {"batched": Throughput(sorted(batched)[1], min(batched), max(batched), batched),
                "merge-swap": Throughput(sorted(swap)[1], min(swap), max(swap), swap),
                "one-at-a-time": Throughput(10.0, 9.0, 11.0, (10.0, 9.0, 11.0))}

    text = serving_table({1: mix((90.0, 95.0, 92.0), (100.0, 104.0, 101.0)), 8: mix((90.0, 95.0, 92.0), (30.0, 31.0, 29.0))})
    assert text.startswith("requests per second: the median of 3 interleaved rounds")
    assert "1 adapter  in the batch: 0.91 times (rounds 0.90 to 0.91): slower in every round" in text
    assert "8 adapters in the batch: 3.06 times (rounds 3.00 to 3.17): faster in every round" in text
    assert text.endswith("faster than merge-swap, by the rounds, with 8 of the mixes tried (1, 8 adapters in the batch)")


def test_multi_adapter_bad_inputs(tiny):
    base, world = tiny
    adapters = random_adapters(base, 2)
    multi = multi_adapter_model(adapters)
    x = task_data(world, "json", world.animals[:2], base.config.n_ctx)[0][:, :8]
    with pytest.raises(ValueError, match="use_adapters"):
        multi(x)
    with pytest.raises(ValueError, match="values in -1..1"):
        with use_adapters(multi, [0, 5]):
            pass
    with pytest.raises(ValueError, match="one entry per row"):
        with use_adapters(multi, [0, 1, 1]):
            multi(x)
    other = random_adapters(base, 1, targets=["k_proj"])[0]
    with pytest.raises(ValueError, match="other layers"):
        multi_adapter_model([adapters[0], other])
    with pytest.raises(ValueError, match="Unknown strategy"):
        serving_throughput("magic", adapters, x, [0, 1])
    with pytest.raises(ValueError, match="do not fit"):
        MultiLoRALinear(nn.Linear(8, 4), torch.zeros(2, 1, 8), torch.zeros(2, 5, 1), torch.ones(2))


def test_nf4_levels_are_normal_quantiles_and_the_picture_marks_them(tiny):
    import matplotlib

    matplotlib.use("Agg")
    from lora_edu.course.plots import plot_nf4_levels
    from lora_edu.lora.quant import nf4_levels

    levels = nf4_levels()
    assert levels.shape == (16,) and levels[0] == -1 and levels[-1] == 1 and 0.0 in levels.tolist()
    gaps = levels.diff()
    assert (gaps > 0).all() and gaps[7] < gaps[0] / 3  # dense near 0, sparse in the tails, like a normal's quantiles
    w = tiny[0].blocks[0].attn.q_proj.weight.detach()
    deq = dequantized_weight(NF4Linear.from_linear(tiny[0].blocks[0].attn.q_proj))
    scale = w.reshape(-1, 64).abs().amax(dim=1, keepdim=True)
    codes = (deq.reshape(-1, 64) / scale).reshape(-1, 1)  # every stored weight is one of the 16 levels, times its block's scale
    assert (codes - levels).abs().min(dim=1).values.max() < 0.02  # (the scale itself is stored in 8 bits)
    fig = plot_nf4_levels(w.numpy(), levels.numpy())
    assert len(fig.axes[0].lines) == 16


def test_nf4_storage_is_split_into_codes_scales_and_the_level_table():
    from lora_edu.lora.quant import nf4_storage_bytes

    model = nn.Sequential(nn.Linear(128, 64), nn.Linear(64, 64), nn.Linear(64, 8))
    with pytest.raises(ValueError, match="no NF4 weights"):
        nf4_storage_bytes(model)
    assert len(quantize_base_nf4(model)) == 2  # the last layer, the output, stays in full precision
    parts = nf4_storage_bytes(model)
    weights = 128 * 64 + 64 * 64
    assert parts["codes"] == weights // 2  # 4 bits each
    assert parts["block scales"] == weights // 64  # one int8 per block of 64
    assert parts["level table"] == 2 * 16 * 4  # 16 fp32 levels stored with each weight
    assert parts["scales of the scales"] == 2 * (4 + 4)  # here one fp32 factor per weight (few blocks) and one fp32 mean
    assert sum(parts.values()) == weight_bytes(model) - 64 * 8 * 4  # the fp32 output layer aside
