import copy
import math

import pytest
import torch
from torch import nn

from lora_edu import (
    LoRALinear,
    count_parameters,
    disable_lora,
    inject_lora,
    lora_layers,
    mark_only_lora_trainable,
    merge_lora,
    remove_lora,
    unmerge_lora,
)


class Block(nn.Module):
    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.q_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.norm = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 2 * d)

    def forward(self, x):
        return self.fc(self.norm(self.q_proj(x) + self.v_proj(x)))


class Toy(nn.Module):
    def __init__(self, d: int = 16, vocab: int = 11) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(d), Block(2 * d)])
        self.mid = nn.Linear(2 * d, 2 * d)
        self.lm_head = nn.Linear(4 * d, vocab)

    def forward(self, x):
        return self.lm_head(self.blocks[1](self.mid(self.blocks[0](x))))


def trained_lora(d_in=12, d_out=7, r=3, seed=0) -> LoRALinear:
    torch.manual_seed(seed)
    layer = LoRALinear(nn.Linear(d_in, d_out), r=r, alpha=2 * r)
    with torch.no_grad():
        layer.lora_B.normal_()
    return layer


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_state(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k in before:
        assert torch.equal(after[k], before[k]), k


def test_output_equals_base_at_init():
    torch.manual_seed(0)
    base = nn.Linear(10, 6)
    x = torch.randn(4, 5, 10)
    expected = base(x)
    layer = LoRALinear(base, r=2, alpha=4)
    assert torch.equal(layer(x), expected)
    assert torch.count_nonzero(layer.delta_weight()) == 0
    assert layer.lora_A.shape == (2, 10) and layer.lora_B.shape == (6, 2)
    assert layer.lora_A.abs().sum() > 0  # A is random, so B receives a gradient from step one


@pytest.mark.parametrize("init", ["kaiming", "gaussian"])
def test_forward_matches_formula(init):
    layer = trained_lora()
    layer.init = init
    layer.reset_lora_parameters()
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 12)
    w = layer.base.weight + layer.scaling * layer.lora_B @ layer.lora_A
    torch.testing.assert_close(layer(x), x @ w.T + layer.base.bias, rtol=1e-5, atol=1e-6)


def test_gaussian_init_std_is_one_over_r():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(4000, 8), r=8, alpha=8, init="gaussian")
    assert abs(layer.lora_A.std().item() - 1 / 8) < 0.005


def test_scaling_and_rslora():
    assert LoRALinear(nn.Linear(8, 8), r=4, alpha=8).scaling == 2.0
    assert LoRALinear(nn.Linear(8, 8), r=4, alpha=8, use_rslora=True).scaling == 4.0


def test_only_a_and_b_get_gradients_and_base_is_bitwise_unchanged():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(8, 5), r=2, alpha=2)
    w0, b0 = layer.base.weight.clone(), layer.base.bias.clone()
    opt = torch.optim.AdamW([p for p in layer.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        loss = layer(torch.randn(16, 8)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert layer.base.weight.grad is None and layer.base.bias.grad is None
    assert layer.lora_A.grad is not None and layer.lora_B.grad is not None
    assert torch.equal(layer.base.weight, w0) and torch.equal(layer.base.bias, b0)
    assert layer.lora_B.abs().sum() > 0


def gradients_both_ways(layer: LoRALinear, x: torch.Tensor, grad: torch.Tensor):
    """(output, x.grad, A.grad, B.grad) through the one-node backward and through autograd's op-by-op graph."""
    results = []
    for one_node in (True, False):
        layer.zero_grad(set_to_none=True)
        xi = x.detach().clone().requires_grad_(x.requires_grad)
        assert layer.one_node_applies(xi)
        if one_node:
            out = layer(xi)
        else:  # the same maths as autograd's own graph
            out = layer.base(xi) + layer.scaling * (xi @ layer.lora_A.T) @ layer.lora_B.T
        out.backward(grad)
        results.append((out.detach(), xi.grad, layer.lora_A.grad, layer.lora_B.grad))
    return results


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("rslora", [False, True])  # alpha / sqrt(r) = 3 / sqrt(3) is not a power of two
@pytest.mark.parametrize("x_needs_grad", [True, False])
def test_one_node_backward_equals_autograds(bias, rslora, x_needs_grad):
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(12, 7, bias=bias, dtype=torch.float64), r=3, alpha=3, use_rslora=rslora)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(2, 5, 12, dtype=torch.float64, requires_grad=x_needs_grad)  # (batch, seq, d_in)
    grad = torch.randn(2, 5, 7, dtype=torch.float64)
    (out, gx, ga, gb), (out_ref, gx_ref, ga_ref, gb_ref) = gradients_both_ways(layer, x, grad)
    torch.testing.assert_close(out, out_ref)
    torch.testing.assert_close(ga, ga_ref)
    torch.testing.assert_close(gb, gb_ref)
    if x_needs_grad:
        torch.testing.assert_close(gx, gx_ref)
    else:
        assert gx is None and gx_ref is None
    assert layer.base.weight.grad is None


def test_one_node_forward_is_the_op_by_op_forward_bit_for_bit():
    layer = trained_lora()
    x = torch.randn(4, 6, 12)
    with torch.no_grad():
        xa = x.reshape(-1, 12) @ layer.lora_A.T
        expected = torch.addmm(layer.base(x).reshape(-1, 7), xa * layer.scaling, layer.lora_B.T).view(4, 6, 7)
    assert torch.equal(layer(x), expected)


def test_the_op_by_op_path_serves_what_one_node_does_not():
    layer = LoRALinear(nn.Linear(12, 7), r=3, alpha=6, dropout=0.1)
    x = torch.randn(4, 12)
    assert not layer.one_node_applies(x)  # dropout at work in training
    assert layer.eval().one_node_applies(x)  # ... and not in eval
    assert not layer.one_node_applies(x.double())  # a dtype the weights do not have
    layer.base.weight.requires_grad_(True)
    assert not layer.one_node_applies(x)  # W trains too: autograd must compute its gradient
    layer.base.weight.requires_grad_(False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not layer.one_node_applies(x)
        assert layer(x).dtype == torch.bfloat16


def test_merge_equals_unmerged_and_unmerge_restores():
    layer = trained_lora()
    x = torch.randn(5, 12)
    w0 = layer.base.weight.clone()
    y = layer(x)
    layer.merge()
    assert layer.merged
    torch.testing.assert_close(layer(x), y, rtol=0, atol=1e-6)
    torch.testing.assert_close(layer.base.weight, w0 + layer.delta_weight(), rtol=0, atol=1e-6)
    layer.unmerge()
    torch.testing.assert_close(layer.base.weight, w0, rtol=0, atol=1e-6)
    torch.testing.assert_close(layer(x), y, rtol=0, atol=1e-6)


def test_merge_twice_and_unmerge_unmerged_are_errors():
    layer = trained_lora()
    with pytest.raises(ValueError, match="not merged"):
        layer.unmerge()
    layer.merge()
    w = layer.base.weight.clone()
    with pytest.raises(ValueError, match="already merged"):
        layer.merge()
    assert torch.equal(layer.base.weight, w)


def test_half_precision_merge_is_computed_in_fp32():
    layer = trained_lora()
    half = copy.deepcopy(layer).to(torch.bfloat16)
    half.merge()
    expected = (layer.base.weight.to(torch.bfloat16).float() + half.delta_weight()).to(torch.bfloat16)
    assert torch.equal(half.base.weight, expected)
    assert half.base.weight.dtype == torch.bfloat16


def test_bias_untouched_by_merge():
    layer = trained_lora()
    b = layer.base.bias.clone()
    layer.merge()
    assert torch.equal(layer.base.bias, b)


@pytest.mark.parametrize(
    "kwargs, error, text",
    [
        ({"r": 0, "alpha": 1}, ValueError, "at least 1"),
        ({"r": 2.5, "alpha": 1}, TypeError, "positive int"),
        ({"r": 9, "alpha": 1}, ValueError, "exceeds min"),
        ({"r": 2, "alpha": 0}, ValueError, "alpha"),
        ({"r": 2, "alpha": 1, "dropout": 1.0}, ValueError, "dropout"),
        ({"r": 2, "alpha": 1, "init": "zeros"}, ValueError, "init"),
    ],
)
def test_bad_layer_arguments(kwargs, error, text):
    with pytest.raises(error, match=text):
        LoRALinear(nn.Linear(8, 12), **kwargs)


def test_wrapping_a_non_linear_is_a_type_error():
    with pytest.raises(TypeError, match="nn.Linear"):
        LoRALinear(nn.Conv1d(3, 3, 1), r=1, alpha=1)


def test_inject_by_suffix_returns_names_and_keeps_output():
    torch.manual_seed(0)
    model = Toy()
    x = torch.randn(2, 3, 16)
    y = model(x)
    names = inject_lora(model, ["q_proj", "v_proj"], r=2, alpha=4)
    assert names == ["blocks.0.q_proj", "blocks.0.v_proj", "blocks.1.q_proj", "blocks.1.v_proj"]
    assert all(isinstance(model.get_submodule(n), LoRALinear) for n in names)
    assert torch.equal(model(x), y)


def test_inject_by_regex_and_all_linear():
    model = Toy()
    assert inject_lora(model, r"blocks\.1\..*_proj", r=1, alpha=1) == ["blocks.1.q_proj", "blocks.1.v_proj"]
    model = Toy()
    names = inject_lora(model, "all-linear", r=1, alpha=1)
    assert "lm_head" not in names
    assert len(names) == 7


def test_bad_targets_leave_model_unchanged():
    model = Toy()
    before = state(model)
    with pytest.raises(ValueError, match="'k_proj' matches no module"):
        inject_lora(model, ["q_proj", "k_proj"], r=2, alpha=2)
    with pytest.raises(TypeError, match="not an nn.Linear"):
        inject_lora(model, ["q_proj", "norm"], r=2, alpha=2)
    with pytest.raises(ValueError, match="matches no module name"):
        inject_lora(model, r"attn\..*", r=2, alpha=2)
    with pytest.raises(ValueError, match="exceeds min"):
        inject_lora(model, ["q_proj"], r=17, alpha=2)  # fine for blocks.1 (32), too big for blocks.0 (16)
    with pytest.raises(TypeError, match="targets must be"):
        inject_lora(model, [], r=2, alpha=2)
    assert not lora_layers(model)
    assert_same_state(model, before)


def test_inject_twice_is_an_error():
    model = Toy()
    inject_lora(model, ["q_proj"], r=2, alpha=2)
    before = state(model)
    with pytest.raises(ValueError, match="already injected"):
        inject_lora(model, ["q_proj", "v_proj"], r=2, alpha=2)
    assert_same_state(model, before)


def test_mark_only_lora_trainable():
    model = Toy()
    inject_lora(model, ["q_proj"], r=2, alpha=2)
    mark_only_lora_trainable(model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    with pytest.raises(ValueError, match="no LoRA layers"):
        mark_only_lora_trainable(Toy())


def randomize_b(model: nn.Module) -> None:
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.normal_()


def test_merge_unmerge_and_disable_on_a_model():
    torch.manual_seed(0)
    model = Toy()
    x = torch.randn(2, 3, 16)
    base_out = model(x)
    inject_lora(model, "all-linear", r=2, alpha=4)
    randomize_b(model)
    lora_out = model(x)
    assert not torch.allclose(lora_out, base_out)
    with disable_lora(model):
        assert torch.equal(model(x), base_out)
    assert torch.equal(model(x), lora_out)
    merge_lora(model)
    torch.testing.assert_close(model(x), lora_out, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="already merged"):
        merge_lora(model)
    with pytest.raises(ValueError, match="already merged"):
        with disable_lora(model):
            pass
    unmerge_lora(model)
    with pytest.raises(ValueError, match="not merged"):
        unmerge_lora(model)
    with disable_lora(model):
        torch.testing.assert_close(model(x), base_out, rtol=0, atol=1e-5)


def test_disable_restores_even_after_an_exception():
    model = Toy()
    inject_lora(model, ["q_proj"], r=1, alpha=1)
    with pytest.raises(RuntimeError):
        with disable_lora(model):
            raise RuntimeError("boom")
    assert not any(layer.disabled for layer in lora_layers(model).values())


def test_remove_lora_with_and_without_merge():
    torch.manual_seed(0)
    model = Toy()
    x = torch.randn(2, 16)
    base_out = model(x)
    inject_lora(model, ["q_proj", "fc"], r=2, alpha=2)
    randomize_b(model)
    lora_out = model(x)
    merged = copy.deepcopy(model)
    assert remove_lora(merged, merge=True)
    assert not lora_layers(merged)
    torch.testing.assert_close(merged(x), lora_out, rtol=0, atol=1e-5)
    remove_lora(model)
    assert not lora_layers(model)
    assert torch.equal(model(x), base_out)


@pytest.mark.parametrize("d_in, d_out, r", [(4, 4, 1), (768, 768, 8), (4096, 1024, 16), (1000, 3000, 5)])
def test_count_parameters_matches_hand_count(d_in, d_out, r):
    layer = LoRALinear(nn.Linear(d_in, d_out), r=r, alpha=r)
    count = count_parameters(layer)
    assert count.trainable == r * (d_in + d_out)
    if d_in == d_out:
        assert count.trainable == 2 * r * d_in
    assert count.total == d_in * d_out + d_out + r * (d_in + d_out)
    assert math.isclose(count.fraction, count.trainable / count.total)
    assert f"{count.trainable:,}" in count.summary and "trainable%" in count.summary


def test_count_parameters_on_injected_model():
    model = Toy(d=16)
    total_before = count_parameters(model).total
    inject_lora(model, ["q_proj", "v_proj"], r=4, alpha=4)
    mark_only_lora_trainable(model)
    count = count_parameters(model)
    assert count.trainable == 2 * (2 * 4 * 16) + 2 * (2 * 4 * 32)
    assert count.total == total_before + count.trainable


@pytest.mark.parametrize("alpha", [float("inf"), float("nan"), -1.0, 0])
def test_alpha_must_be_positive_and_finite(alpha):
    with pytest.raises(ValueError, match="alpha must be a positive finite number"):
        LoRALinear(nn.Linear(4, 4), r=1, alpha=alpha)
    model = Toy()
    with pytest.raises(ValueError, match="positive finite"):
        inject_lora(model, ["q_proj"], r=1, alpha=alpha)
    assert not lora_layers(model)


def test_all_linear_without_a_layer_besides_the_head_is_an_error():
    model = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5))
    with pytest.raises(ValueError, match="all-linear.*no other Linear layer"):
        inject_lora(model, "all-linear", r=1, alpha=1)
    assert not lora_layers(model)


def test_lora_on_a_head_tied_to_the_embedding_is_refused():
    model = Toy()
    emb = nn.Embedding(11, 64)
    model.emb = emb
    model.lm_head.weight = emb.weight  # tied, as in GPT-2
    before = state(model)
    with pytest.raises(ValueError, match="'lm_head' is tied to 'emb.weight'.*untie it first"):
        inject_lora(model, ["q_proj", "lm_head"], r=2, alpha=2)
    assert not lora_layers(model)
    assert_same_state(model, before)
    layer = model.get_submodule("lm_head")
    layer.weight = nn.Parameter(layer.weight.detach().clone())  # the fix the message gives
    assert inject_lora(model, ["lm_head"], r=2, alpha=2) == ["lm_head"]


def test_a_failed_injection_leaves_every_layer_trainable_as_it_was():
    model = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 2))  # r = 4 fits the first layer, not the second
    with pytest.raises(ValueError, match=r"exceeds min\(d_in, d_out\) = min\(16, 2\).*layer '1'; the model is unchanged"):
        inject_lora(model, ["0", "1"], r=4, alpha=8)
    assert all(p.requires_grad for p in model.parameters())  # the first base was frozen, then thawed again
    assert [type(m) for m in model] == [nn.Linear, nn.Linear]


def test_fit_lora_to_matrix_follows_the_hand_derived_gradient_steps():
    """Notebook 04 trains a rank-1 LoRA with ∂L/∂A = Bᵀ G, ∂L/∂B = G Aᵀ by hand; the package's autograd fit is the same path."""
    import numpy as np

    from lora_edu import fit_lora_to_matrix

    w = np.ones((4, 4)) + np.eye(4)
    target = np.array([[2, 1, 1, 1], [1, 2, 1, 1], [2, 3, 5, 5], [3, 5, 7, 10]], dtype=float)
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(64, 4, generator=g, dtype=torch.float64)  # the notebook's inline data
    x, y = x_t.numpy(), (x_t @ torch.from_numpy(target).T).numpy()
    a, b = np.random.default_rng(0).uniform(-0.5, 0.5, size=(1, 4)), np.zeros((4, 1))
    a0, losses = a.copy(), []
    for _ in range(300):
        pred = x @ (w + b @ a).T
        grad_y = (pred - y) / len(x)
        big_g = grad_y.T @ x
        a, b = a - 0.05 * b.T @ big_g, b - 0.05 * big_g @ a.T
        losses.append(0.5 * np.mean(np.sum((pred - y) ** 2, axis=1)))
    fit = fit_lora_to_matrix(w, target, r=1, alpha=1.0, steps=300, lr=0.05, a_init=a0)
    np.testing.assert_allclose(fit.losses, losses, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(fit.delta_weight, b @ a, atol=1e-10)
    np.testing.assert_allclose(b @ a, target - w, atol=1e-4)
