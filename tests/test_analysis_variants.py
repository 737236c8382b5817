import copy
import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from lora_edu import ARCHITECTURES, GPT, GPTConfig, LoRALinear, inject_lora, mark_only_lora_trainable, remove_lora
from lora_edu.lora.variants import (
    dora_weight,
    loraplus_optimizer,
    loraplus_param_groups,
    pissa_init,
    qlora_base_bytes,
    quantized_bytes,
    row_norm,
    update_size_after_one_step,
)
from lora_edu.paper.analysis import delta_w_alignment, intruder_dimensions, intruder_similarity, subspace_similarity
from lora_edu.paper.experiments import (
    PAPER,
    LoRARun,
    batch1_latency_ms,
    loss_ratio,
    loss_verdict,
    loss_winner,
    ratio_winner,
    runs_by_config,
    runs_loss_ratio,
    summarize,
    t95,
    tally,
)
from lora_edu.paper.houlsby import HoulsbyAdapter, add_houlsby_adapters


def test_subspace_similarity_bounds_and_identities():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((8, 32))
    phi = subspace_similarity(a, a)
    assert phi.shape == (8, 8)
    assert np.allclose(np.diag(phi), 1.0)
    b = rng.standard_normal((16, 32))
    phi_ab = subspace_similarity(a, b)
    assert phi_ab.shape == (8, 16) and np.all(phi_ab >= -1e-12) and np.all(phi_ab <= 1 + 1e-12)
    # a subspace inside a bigger one: similarity 1 for all of the smaller one's directions
    big = np.vstack([a, rng.standard_normal((8, 32))])
    assert np.isclose(subspace_similarity(a, big)[7, 15], 1.0)
    assert subspace_similarity(a, big)[7, 15] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same input dimension"):
        subspace_similarity(a, rng.standard_normal((4, 31)))


def test_random_subspaces_have_the_expected_similarity():
    rng = np.random.default_rng(1)
    d, vals = 200, []
    for _ in range(50):
        vals.append(subspace_similarity(rng.standard_normal((10, d)), rng.standard_normal((20, d)))[9, 19])
    assert np.mean(vals) == pytest.approx(20 / d, rel=0.15)  # E = max(i, j) / d


def test_delta_w_alignment():
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((40, 40)))
    w = u @ np.diag(np.linspace(10, 0.1, 40)) @ u.T
    dw_top = 3.0 * np.outer(u[:, 0], u[:, 0])  # along W's top direction
    al = delta_w_alignment(w, dw_top, r=1)
    assert al["delta_w"] == pytest.approx(10.0) and al["w"] == pytest.approx(10.0)
    assert al["amplification"] == pytest.approx(0.3)
    dw_low = 3.0 * np.outer(u[:, -1], u[:, -1])  # along W's weakest direction: a large amplification
    assert delta_w_alignment(w, dw_low, r=1)["amplification"] == pytest.approx(30.0)
    with pytest.raises(ValueError):
        delta_w_alignment(w, np.ones((3, 3)), r=1)
    with pytest.raises(ValueError, match="draws must be"):
        delta_w_alignment(w, dw_top, r=1, draws=0)
    many = delta_w_alignment(w, dw_top, r=4, draws=400)["random"]  # the mean of 400 draws, one seed
    spread = np.std([delta_w_alignment(w, dw_top, r=4, seed=s, draws=1)["random"] for s in range(50)])
    assert abs(many - np.mean([delta_w_alignment(w, dw_top, r=4, seed=s, draws=1)["random"] for s in range(400, 800)])) < spread / 3
    as_tensors = delta_w_alignment(torch.tensor(w, requires_grad=True), torch.tensor(dw_top, dtype=torch.float32), r=1)
    assert as_tensors["amplification"] == pytest.approx(0.3, rel=1e-6)  # tensors are accepted too


def test_delta_w_alignment_refuses_a_full_rank_subspace():
    rng = np.random.default_rng(0)
    w, dw = rng.standard_normal((16, 24)), rng.standard_normal((16, 24))
    assert delta_w_alignment(w, dw, r=15)["w"] < np.linalg.norm(w)
    for r in (16, 24):  # r >= min(d_out, d_in): every projection would be ||W||_F
        with pytest.raises(ValueError, match=r"r=\d+ >= min\(d_out, d_in\) = 16.*Use r < 16"):
            delta_w_alignment(w, dw, r=r)
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="positive int"):
            delta_w_alignment(w, dw, r=bad)


def spectrum_matrix(d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """W0 = U diag(10 ... 1) V^T with random orthogonal U, V (well separated singular values)."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return u @ torch.diag(torch.linspace(10, 1, d, dtype=torch.float64)) @ v.T, u, v


def test_intruder_dimensions_find_an_injected_direction():
    d = 64
    w0, u, v = spectrum_matrix(d, 0)
    g = torch.Generator().manual_seed(1)
    new_u = torch.randn(d, generator=g, dtype=torch.float64)
    new_v = torch.randn(d, generator=g, dtype=torch.float64)
    new_u, new_v = new_u / new_u.norm(), new_v / new_v.norm()
    assert (u.T @ new_u).abs().max() < 0.5  # a random direction is far from every singular vector of W0

    w = w0 + 30 * torch.outer(new_u, new_v)  # a LoRA-like rank-1 update in a new direction, larger than W0's top
    found = intruder_dimensions(w0, w, k=10, threshold=0.5)
    assert found.count == 1 and bool(found.is_intruder[0]) and not found.is_intruder[1:].any()
    assert found.max_similarity.shape == (10,) and float(found.max_similarity[0]) < 0.5
    assert intruder_dimensions(w0, w, k=10, threshold=0.5, side="right").count == 1

    small = w0 + 1e-3 * torch.randn(d, d, generator=g, dtype=torch.float64)  # a small full fine-tune-like change
    assert intruder_dimensions(w0, small, k=10).count == 0
    assert intruder_similarity(w0, small, k=10).min() > 0.99
    along_top = w0 + 30 * torch.outer(u[:, 0], v[:, 0])  # a big update along W0's own top direction is no intruder
    assert intruder_dimensions(w0, along_top, k=10, threshold=0.9).count == 0
    assert intruder_dimensions(w0, w0.float(), k=3).max_similarity.dtype == torch.float32  # follows the weights' dtype
    from_numpy = intruder_dimensions(w0.numpy(), w.numpy(), k=10)  # NumPy arrays (LoRARun.delta_weight) work too
    assert from_numpy.count == 1 and torch.equal(from_numpy.max_similarity, found.max_similarity)


def test_intruder_dimensions_bad_input():
    w0 = torch.eye(6)
    for kwargs, match in [({"k": 0}, "k must be an int"), ({"k": 7}, r"\[1, 6\]"), ({"threshold": 0}, "threshold"),
                          ({"threshold": 1.5}, "threshold"), ({"side": "up"}, "side must be")]:
        with pytest.raises(ValueError, match=match):
            intruder_dimensions(w0, w0, **({"k": 3} | kwargs))
    with pytest.raises(ValueError, match="same shape"):
        intruder_dimensions(w0, torch.eye(5))
    with pytest.raises(TypeError, match="tensors or NumPy arrays"):
        intruder_dimensions([[1.0]], w0)
    with pytest.raises(ValueError, match="W0 is on meta and W on cpu"):
        intruder_dimensions(w0.to("meta"), w0)


def test_pissa_keeps_the_model_and_leaves_the_svd_tail():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(24, 16), r=4, alpha=8).double()
    x = torch.randn(5, 24, dtype=torch.float64)
    before = layer(x)
    s = torch.linalg.svdvals(layer.base.weight.detach())
    pissa_init(layer)
    torch.testing.assert_close(layer(x), before)
    assert torch.linalg.svdvals(layer.base.weight.detach())[:12].allclose(s[4:], atol=1e-10)
    layer.merge()
    with pytest.raises(ValueError, match="Unmerge"):
        pissa_init(layer)


def test_dora_weight_magnitude_and_direction():
    torch.manual_seed(0)
    w, a = torch.randn(8, 6), torch.randn(2, 6)
    m = row_norm(w)
    assert m.shape == (8, 1)  # one magnitude per output unit
    torch.testing.assert_close(m[:, 0], torch.stack([row.norm() for row in w]))
    torch.testing.assert_close(dora_weight(w, torch.zeros(8, 2), a, m), w)
    w2 = dora_weight(w, torch.randn(8, 2), a, 2 * m)
    torch.testing.assert_close(row_norm(w2), 2 * m)
    torch.testing.assert_close(dora_weight(w, torch.zeros(8, 2), a, m[:, 0]), w)  # m as (d_out,), as PEFT stores it
    with pytest.raises(ValueError, match="one entry per output unit"):
        dora_weight(w, torch.zeros(8, 2), a, torch.ones(1, 6))  # the old per-column (1, d_in) magnitude
    with pytest.raises(ValueError, match=r"B must be \(d_out, r\)"):
        dora_weight(w, torch.zeros(6, 2), a, m)
    with pytest.raises(ValueError, match="2-D"):
        row_norm(torch.ones(3))
    with pytest.raises(ValueError, match="2-D weight W"):
        dora_weight(torch.ones(2, 3, 4), torch.zeros(8, 2), a, m)


def test_dora_matches_peft():
    from peft import LoraConfig, get_peft_model

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(12, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(x)

    torch.manual_seed(0)
    config = LoraConfig(r=2, lora_alpha=6, target_modules=["proj"], use_dora=True, init_lora_weights=False)
    model = get_peft_model(Tiny().double(), config)
    layer = model.base_model.model.proj
    w, s = layer.base_layer.weight.detach().clone(), layer.scaling["default"]
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    assert s == 3.0 and b.abs().min() > 0  # init_lora_weights=False: B is not zero, so the norm sees s B A
    magnitude = layer.lora_magnitude_vector["default"].weight
    assert magnitude.shape == (8,)  # d_out, not d_in = 12
    torch.testing.assert_close(magnitude.detach(), row_norm(w + s * b.detach() @ a.detach())[:, 0])

    with torch.no_grad():  # known values for A, B and m
        a.copy_(torch.arange(24, dtype=torch.float64).reshape(2, 12) / 24 - 0.5)
        b.copy_(torch.linspace(-1, 1, 16, dtype=torch.float64).reshape(8, 2))
        magnitude.copy_(torch.linspace(0.5, 2.0, 8, dtype=torch.float64))
    ours = dora_weight(w, b.detach(), a.detach(), magnitude.detach(), scaling=s)
    x = torch.randn(5, 12, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), x @ ours.T + layer.base_layer.bias)
        merged = model.merge_and_unload()
    torch.testing.assert_close(merged.proj.weight.detach(), ours)


def test_quantized_bytes_matches_qlora():
    assert 8 * quantized_bytes(10**6) / 10**6 == pytest.approx(4.127, abs=1e-3)
    assert 8 * quantized_bytes(10**6, double_quant=False) / 10**6 == pytest.approx(4.5)
    with pytest.raises(ValueError):
        quantized_bytes(10, block=0)


def test_quantized_bytes_matches_torchao_nf4_storage():
    from torchao.quantization import to_nf4

    w = torch.randn(256, 1024, dtype=torch.bfloat16)
    nf4 = to_nf4(w, block_size=64, scaler_block_size=256)
    parts = (nf4.quantized_data, nf4.quantized_scalers, nf4.quantization_factor)  # codes, 8-bit constants, their factors
    stored = sum(t.numel() * t.element_size() for t in parts)
    assert nf4.quantized_data.numel() == w.numel() // 2  # two 4-bit codes per byte
    # torchao keeps the second-level factors in bf16 where QLoRA counts fp32: 4.126 vs 4.127 bits per weight
    assert quantized_bytes(w.numel()) == pytest.approx(stored, rel=1e-3)


def test_qlora_keeps_embeddings_and_head_in_bf16_for_llama3_8b():
    # An independent count from Llama 3 8B's published config (hidden 4096, MLP 14336, 32 layers, 8 KV heads of 128,
    # vocabulary 128256, untied head): its 8,030,261,248 parameters split into block Linears and the rest.
    per_block_linear = 4096 * 4096 + 2 * (4096 * 1024) + 4096 * 4096 + 3 * (4096 * 14336)
    linear, embed_and_head, norms = 32 * per_block_linear, 2 * 128256 * 4096, (2 * 32 + 1) * 4096
    assert linear + embed_and_head + norms == 8_030_261_248
    mem = qlora_base_bytes("Llama 3 8B")
    assert mem.n_quantized == linear and mem.n_kept == embed_and_head + norms
    assert embed_and_head == pytest.approx(1.05e9, rel=1e-3)
    assert mem.kept == 2 * (embed_and_head + norms)  # bf16
    assert mem.quantized == pytest.approx(linear * 4.127 / 8, rel=1e-4)
    assert mem.total == mem.quantized + mem.kept
    assert mem.total / 1e9 == pytest.approx(5.70, abs=0.01)  # not 4.1 GB: 4.127 bits for every parameter
    assert quantized_bytes(8_030_261_248) / 1e9 == pytest.approx(4.14, abs=0.01)
    assert qlora_base_bytes(ARCHITECTURES["Llama 3 8B"]) == mem
    assert qlora_base_bytes("Llama 3 8B", kept_dtype="fp32").kept == 2 * mem.kept


def test_qlora_base_bytes_for_a_tied_gpt2_and_bad_input():
    arch = ARCHITECTURES["GPT-2 small"]
    mem = qlora_base_bytes(arch)
    assert mem.n_quantized == 12 * (4 * 768 * 768 + 2 * 768 * 3072)
    assert mem.n_quantized + mem.n_kept == arch.total_parameters() == 124_439_808  # GPT-2's count, head tied
    with pytest.raises(ValueError, match="Unknown architecture 'Llama 9'"):
        qlora_base_bytes("Llama 9")
    with pytest.raises(TypeError, match="Architecture or a name"):
        qlora_base_bytes(8)
    with pytest.raises(ValueError, match="kept_dtype"):
        qlora_base_bytes(arch, kept_dtype="bfloat16")


def small_lora_gpt() -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, n_ctx=8, n_layer=2, n_head=2, d_model=16))
    inject_lora(model, ["q_proj", "v_proj"], r=2, alpha=4)
    mark_only_lora_trainable(model)
    return model


def test_loraplus_gives_b_a_larger_learning_rate():
    model = small_lora_gpt()
    groups = loraplus_param_groups(model, lr=1e-3)
    assert [(g["name"], g["lr"], len(g["params"])) for g in groups] == [("lora_A", 1e-3, 4), ("lora_B", 16e-3, 4)]
    assert all(p.shape[0] == 2 for p in groups[0]["params"]) and all(p.shape[1] == 2 for p in groups[1]["params"])

    model.ln_f.weight.requires_grad_(True)  # another trainable parameter: at lr
    groups = loraplus_param_groups(model, lr=1e-3, ratio=4, weight_decay=0.1)
    assert [(g["name"], g["lr"], g["weight_decay"]) for g in groups] == [("lora_A", 1e-3, 0.1), ("lora_B", 4e-3, 0.1), ("other", 1e-3, 0.1)]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(trainable)  # each exactly once

    # one AdamW step with equal gradients: B moves `ratio` times as far as A
    opt = loraplus_optimizer(model, lr=1e-3)
    layer = model.blocks[0].attn.q_proj
    a0, b0 = layer.lora_A.detach().clone(), layer.lora_B.detach().clone()
    for p in model.parameters():
        p.grad = torch.ones_like(p) if p.requires_grad else None
    opt.step()
    step_a = (layer.lora_A.detach() - a0).abs().mean()
    step_b = (layer.lora_B.detach() - b0).abs().mean()
    assert float(step_b / step_a) == pytest.approx(16, rel=1e-3)


def test_loraplus_bad_input():
    model = small_lora_gpt()
    for kwargs in ({"ratio": 0}, {"ratio": -2}, {"ratio": True}, {"ratio": float("inf")}, {"lr": 0}, {"lr": "1e-3"}, {"lr": float("nan")}):
        with pytest.raises(ValueError, match="LoRA\\+ needs a positive finite"):
            loraplus_param_groups(model, **({"lr": 1e-3} | kwargs))
    with pytest.raises(ValueError, match="no LoRA layers.*inject_lora"):
        loraplus_param_groups(GPT(GPTConfig(vocab_size=11, n_ctx=8, n_layer=1, n_head=2, d_model=16)), lr=1e-3)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="frozen"):
        loraplus_param_groups(model, lr=1e-3)


def test_rslora_keeps_the_first_update_size():
    plain = [update_size_after_one_step(r, 16, False, d=256) for r in (1, 16)]
    rs = [update_size_after_one_step(r, 16, True, d=256) for r in (1, 16)]
    assert plain[1] < plain[0] / 2
    assert rs[1] == pytest.approx(rs[0], rel=0.2)


def test_houlsby_adapters_start_as_identity_and_add_layers():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, n_ctx=8, n_layer=2, n_head=2, d_model=16)).eval()
    x = torch.randint(0, 11, (1, 5))
    before = model(x)[0]
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    merged = copy.deepcopy(model)
    inject_lora(merged, ["q_proj", "v_proj"], r=4, alpha=8)
    remove_lora(merged, merge=True)  # merged LoRA runs the base model's own layers, with the same shapes
    assert sum(isinstance(m, nn.Linear) for m in merged.modules()) == n_linear
    assert [p.shape for p in merged.parameters()] == [p.shape for p in model.parameters()]
    added = add_houlsby_adapters(model, bottleneck=4)
    assert added == 2 * 2 * (16 * 4 + 4 + 4 * 16 + 16)
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == n_linear + 4 * 2  # down and up, two sites per block
    assert torch.equal(model(x)[0], before)
    with pytest.raises(ValueError, match="already has adapter"):
        add_houlsby_adapters(model, 4)
    half = GPT(GPTConfig(vocab_size=11, n_ctx=8, n_layer=1, n_head=2, d_model=16)).to(torch.bfloat16)
    add_houlsby_adapters(half, 4)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}  # adapters follow the layer's dtype
    assert half(x)[0].dtype == torch.bfloat16
    with pytest.raises(ValueError, match="bottleneck"):
        HoulsbyAdapter(8, 0)
    assert batch1_latency_ms(model, x, repeats=3) > 0


def lora_run_record(seed: int, exact_match: float, loss: float) -> LoRARun:
    """A LoRARun with the fields summarize reads; every other field (scores, timings, factors) left None."""
    given = {"targets": ("q",), "r": 8, "seed": seed, "test_exact_match": exact_match, "test_answer_loss": loss}
    return LoRARun(**{f.name: given.get(f.name) for f in dataclasses.fields(LoRARun)})


def test_summarize_and_paper_data():
    runs = [lora_run_record(s, em, loss) for s, (em, loss) in enumerate([(0.5, 1.0), (1.0, 3.0)])]
    summary = summarize(runs, "test_answer_loss")
    stat = summary[(("q",), 8)]
    assert list(summary) == [(("q",), 8)] and (stat.mean if hasattr(stat, "mean") else stat[0]) == 2.0  # (mean, std) or Interval
    assert set(PAPER["table5_wikisql"]) == set(PAPER["table5_rank"])
    budget = {t: len(t) * r for t, r in PAPER["table5_rank"].items()}
    assert len(set(budget.values())) == 1  # the paper's equal-budget design: r times the number of matrices


def test_sweep_runs_every_configuration_and_seed_on_the_task_it_is_given(monkeypatch):
    from lora_edu.paper import experiments

    calls = []
    monkeypatch.setattr(experiments, "lora_run", lambda base, world, t, r, steps, s, task, lr: calls.append((t, r, s, task, lr)))
    experiments.sweep(None, None, [(("q", "v"), 32)], (0, 1), 10, lr=0.01, progress=False, task="card")
    assert calls == [(("q", "v"), 32, 0, "card", 0.01), (("q", "v"), 32, 1, "card", 0.01)]


def test_tuned_sweep_chooses_each_rate_on_validation_never_on_test(monkeypatch):
    from lora_edu.paper import experiments

    def fake_run(base, world, targets, r, steps, seed, lr=None):
        val = {0.01: 1.0, 0.03: 0.5}[lr] if targets == ("q",) else {0.01: 0.5, 0.03: 0.5}[lr]  # ("v",): a tie
        test = {0.01: 0.1, 0.03: 9.0}[lr]  # the test set would choose 0.01 everywhere
        given = {"targets": targets, "r": r, "seed": seed, "val_answer_loss": val + 0.01 * seed, "test_answer_loss": test,
                 "lr": lr}
        return LoRARun(**{f.name: given.get(f.name) for f in dataclasses.fields(LoRARun)})

    monkeypatch.setattr(experiments, "lora_run", fake_run)
    tuned = experiments.tuned_sweep(None, None, [(("q",), 8), (("v",), 8)], (0, 1, 2), 10, lrs=(0.03, 0.01), progress=False)
    assert tuned.grids == {(("q",), 8): (0.01, 0.03), (("v",), 8): (0.01, 0.03)} and len(tuned.all_runs) == 12
    assert tuned.chosen_lr == {(("q",), 8): 0.03, (("v",), 8): 0.01}  # validation; a tie goes to the smaller rate
    assert {(run.targets, run.lr) for run in tuned.runs} == {(("q",), 0.03), (("v",), 0.01)} and len(tuned.runs) == 6
    assert tuned.val_loss((("q",), 8), 0.03) == pytest.approx(0.51)
    assert tuned.at_grid_edge((("q",), 8))
    table = tuned.table(64, paper={("q",): 70.4, ("v",): 73.0}).splitlines()
    assert len(table) == 5 and table[1].startswith("Wq ") and "1,024" in table[1]  # r (d_in + d_out) = 8 * 128
    assert "0.01: 1.010   0.03: 0.510<*" in table[1] and table[1].endswith("70.4")  # validation at each rate, the chosen one
    assert table[-2] == "< the rate validation chose"
    assert table[-1].startswith("* the rate chosen is the largest or smallest tried")
    assert "9.000 [9.000, 9.000]" in table[1] and "0.100 [0.100, 0.100]" in table[2]  # the test loss at the chosen rate only
    labelled = tuned.table(64, paper={("q",): 70.4, ("v",): 73.0}, paper_label="paper, WikiSQL % (seeds' s.d. 0.5)")
    assert labelled.splitlines()[0].endswith("paper, WikiSQL % (seeds' s.d. 0.5)") and labelled.splitlines()[1].endswith("70.4")
    with pytest.raises(ValueError, match="positive finite"):
        experiments.tuned_sweep(None, None, [(("q",), 8)], (0,), 10, lrs=(0.0,))
    with pytest.raises(ValueError, match="extend must be"):
        experiments.tuned_sweep(None, None, [(("q",), 8)], (0,), 10, lrs=(0.01,), extend=-1)


def test_tuned_sweep_scores_the_chosen_rates_on_seeds_that_chose_nothing(monkeypatch):
    from lora_edu.paper import experiments

    def fake_run(base, world, targets, r, steps, seed, lr=None):
        given = {"targets": targets, "r": r, "seed": seed, "lr": lr, "val_answer_loss": {0.01: 1.0, 0.03: 0.5}[lr] + 0.01 * seed,
                 "test_answer_loss": 0.2 if seed >= 5 else 9.0}  # the fresh seeds' test scores are the ones kept
        return LoRARun(**{f.name: given.get(f.name) for f in dataclasses.fields(LoRARun)})

    monkeypatch.setattr(experiments, "lora_run", fake_run)
    tuned = experiments.tuned_sweep(None, None, [(("q",), 8)], (0, 1), 10, lrs=(0.01, 0.03), progress=False, score_seeds=(5, 6, 7))
    assert tuned.chosen_lr == {(("q",), 8): 0.03} and len(tuned.all_runs) == 4  # two seeds chose, at two rates
    assert [(run.seed, run.lr) for run in tuned.runs] == [(5, 0.03), (6, 0.03), (7, 0.03)] and tuned.runs is tuned.scored
    assert tuned.val_loss((("q",), 8), 0.03) == pytest.approx(0.505)  # validation: the choosing seeds only
    assert "0.200 [0.200, 0.200]" in tuned.table(64).splitlines()[1]  # the test column reads the fresh seeds
    with pytest.raises(ValueError, match="share seeds"):
        experiments.tuned_sweep(None, None, [(("q",), 8)], (0, 1), 10, lrs=(0.01,), progress=False, score_seeds=(1, 2))


def test_the_sweep_table_prints_how_far_each_configuration_moved_its_weights(monkeypatch):
    from torch import nn

    from lora_edu.paper import experiments

    base = nn.Module()
    base.q_proj, base.v_proj = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        base.q_proj.weight.copy_(2 * torch.eye(4))  # ‖W‖_F = 4
        base.v_proj.weight.copy_(torch.eye(4))  # ‖W‖_F = 2

    def fake_run(base_, world, targets, r, steps, seed, lr=None):
        a = np.zeros((1, 4))
        a[0, 0] = 1.0
        b = np.zeros((4, 1))
        b[0, 0] = 0.4 * (1 + 2 * seed)  # ΔW = scaling B A has one entry: 0.4, then 1.2, at scaling 1
        given = {"targets": targets, "r": r, "seed": seed, "lr": lr, "val_answer_loss": 1.0, "test_answer_loss": 1.0,
                 "factors": {f"{t}_proj": (a, b, 1.0) for t in targets}}
        return LoRARun(**{f.name: given.get(f.name) for f in dataclasses.fields(LoRARun)})

    monkeypatch.setattr(experiments, "lora_run", fake_run)
    tuned = experiments.tuned_sweep(None, None, [(("q", "v"), 1)], (0, 1), 10, lrs=(0.01,), progress=False)
    first = tuned.runs[0]  # q: 0.4 / 4 = 0.1, v: 0.4 / 2 = 0.2; the median of two is their mean
    assert experiments.update_to_weight(first, base) == pytest.approx(0.15)
    table = tuned.table(8, base=base).splitlines()
    assert table[0].endswith("| ‖ΔW‖/‖W‖") and table[1].endswith("|     0.30")  # seeds 0 and 1: 0.15 and 0.45
    assert "the median over a run's adapted weights" in table[2]
    assert "‖ΔW‖" not in tuned.table(8)  # without a base, no column

def test_tuned_sweep_extends_a_grid_beyond_the_edge_validation_chose(monkeypatch):
    from lora_edu.paper import experiments

    best = {("q",): 0.1, ("v",): 1e-3, ("k",): 0.03}  # where each configuration's validation loss is lowest
    calls = []

    def fake_run(base, world, targets, r, steps, seed, lr=None):
        calls.append((targets, lr))
        given = {"targets": targets, "r": r, "seed": seed, "lr": lr, "test_answer_loss": 1.0,
                 "val_answer_loss": abs(math.log(lr / best[targets])) + 0.01 * seed}
        return LoRARun(**{f.name: given.get(f.name) for f in dataclasses.fields(LoRARun)})

    monkeypatch.setattr(experiments, "lora_run", fake_run)
    configs = [(("q",), 8), (("v",), 8), (("k",), 8)]
    tuned = experiments.tuned_sweep(None, None, configs, (0, 1), 10, lrs=(0.01, 0.03), extend=1, progress=False)
    assert tuned.grids[(("q",), 8)] == (0.01, 0.03, 0.1) and tuned.chosen_lr[(("q",), 8)] == 0.1  # up, and still at the edge
    assert tuned.grids[(("v",), 8)] == (0.003, 0.01, 0.03) and tuned.chosen_lr[(("v",), 8)] == 0.003
    assert tuned.grids[(("k",), 8)] == (0.01, 0.03, 0.1) and tuned.chosen_lr[(("k",), 8)] == 0.03  # now inside its grid
    assert not tuned.at_grid_edge((("k",), 8)) and tuned.at_grid_edge((("q",), 8))
    assert len(calls) == len(tuned.all_runs) == 3 * 3 * 2  # every configuration: one rate more, every seed
    twice = experiments.tuned_sweep(None, None, configs, (0,), 10, lrs=(0.01, 0.03), extend=2, progress=False)
    assert twice.grids[(("v",), 8)] == (0.001, 0.003, 0.01, 0.03) and twice.chosen_lr[(("v",), 8)] == 0.001
    assert twice.grids[(("k",), 8)] == (0.01, 0.03, 0.1)  # inside after one extension: no second one


def test_next_rate_walks_the_one_three_ten_ladder():
    from lora_edu.paper.experiments import next_rate

    assert [next_rate(lr, up=True) for lr in (1e-3, 3e-3, 1e-2, 3e-2)] == [3e-3, 1e-2, 3e-2, 1e-1]
    assert [next_rate(lr, up=False) for lr in (1e-1, 3e-2, 1e-2, 3e-3)] == [3e-2, 1e-2, 3e-3, 1e-3]
    with pytest.raises(ValueError, match="1-3-10 ladder"):
        next_rate(2e-2, up=True)


def test_paper_tiers_split_at_the_largest_gap():
    from lora_edu.paper.experiments import PAPER, paper_tiers

    tiers = paper_tiers(PAPER["table5_wikisql"])  # Table 5: 70.0-71.4 against 73.0-73.7
    assert tiers.lower == [("q",), ("k",), ("q", "k")]
    assert tiers.upper == [("v",), ("o",), ("q", "v"), ("q", "k", "v", "o")]
    assert tiers.gap == pytest.approx(73.0 - 71.4)
    assert paper_tiers({"a": 2.0, "b": 1.0}) == (["b"], ["a"], 1.0)
    with pytest.raises(ValueError, match="no gap to split"):
        paper_tiers({"a": 1.0, "b": 1.0})
    with pytest.raises(ValueError, match="at least 2 scores"):
        paper_tiers({"a": 1.0})


def test_latency_is_compared_round_by_round():
    from lora_edu.paper.experiments import Latency

    base = Latency(1.0, 1.0, 100.0, (1.0, 1.1, 100.0))  # one round stalled: the ranges overlap
    slow = Latency(1.6, 1.5, 160.0, (1.5, 1.7, 160.0))  # ... but the same stall hit both models in that round
    assert slow.low < base.high and slow.versus(base).endswith("slower in every round")
    assert slow.versus(base).startswith("1.55 times (rounds 1.50 to 1.60)")
    assert base.versus(slow).endswith("faster in every round")
    same = Latency(1.0, 0.9, 1.1, (0.9, 1.1, 1.0))
    assert same.versus(base).endswith("no difference these rounds can resolve")
    twin = Latency(1.0, 0.98, 0.99, (0.99, 1.089, 99.0))  # 1% faster in every round: the same layers, a gap too small to name
    assert twin.versus(base).endswith("within 5% of each other in every round: too close to call")
    from lora_edu.maths.timing import round_by_round, sign_test
    assert round_by_round([0.99, 0.98], [1.0, 1.0], "slower", "faster", floor=0.0).endswith("faster in every round")
    stalled = [1.7] * 10 + [0.97]  # one of 11 rounds stalled on the base alone: the other 10 still decide
    assert round_by_round(stalled, [1.0] * 11, "slower", "faster").endswith(
        "slower in 10 of 11 rounds, more often than chance allows (a sign test)")
    six_of_seven = round_by_round([1.7] * 6 + [0.97], [1.0] * 7, "slower", "faster")  # 6 of 7: p = 0.125, not enough
    assert six_of_seven.endswith("no difference these rounds can resolve")
    assert slow.slower_than(base) and not base.slower_than(slow) and not same.slower_than(base)
    assert sign_test(10, 11) == pytest.approx(24 / 2048) and sign_test(6, 7) == pytest.approx(0.125) and sign_test(0, 3) == 1.0
    with pytest.raises(ValueError, match="floor is a share"):
        round_by_round([1.0], [1.0], "slower", "faster", floor=1.5)
    with pytest.raises(ValueError, match="same interleaved rounds"):
        Latency(1.0, 1.0, 1.0).versus(base)
    assert slow.extra(base) == "+55%" and base.extra(slow) == "-35%"  # the middle of the rounds, where they decide
    assert same.extra(Latency(1.0, 1.0, 1.0, (1.0, 1.0, 1.0))) == "at most +10% (not resolved)"  # else a bound: the slowest round
    with pytest.raises(ValueError, match="same interleaved rounds"):
        Latency(1.0, 1.0, 1.0).extra(base)


def test_the_share_a_model_adds_falls_with_the_pass_only_when_the_rounds_say_so_beyond_chance():
    from lora_edu.paper.experiments import PAPER, Latency, falls_with_size

    def timed(base_rounds, adapter_rounds):
        return {"base": Latency(1.0, 1.0, 1.0, tuple(base_rounds)), "adapters": Latency(1.0, 1.0, 1.0, tuple(adapter_rounds))}

    short = timed([1.0, 2.0, 1.0, 1.0], [1.6, 3.4, 1.8, 1.7])  # adds 60 to 80%, round by round, whatever the round's own speed
    long = timed([10.0, 10.0, 30.0, 10.0], [11.0, 11.5, 33.0, 11.2])  # adds 10 to 15%: 4 rounds a side in full order, p = 1/70
    assert falls_with_size(short, long) and not falls_with_size(long, short)
    overlapping = timed([10.0, 10.0, 10.0, 10.0], [11.0, 11.0, 17.0, 17.5])  # two rounds add 70% or more
    assert not falls_with_size(short, overlapping)  # 11 of 16 pairs in order: p = 17/70, far from 0.05
    three = timed([1.0] * 3, [1.1] * 3)
    assert not falls_with_size(timed([1.0] * 3, [1.6] * 3), three)  # 3 rounds a side: even a clean split has p = 1/20
    eleven = timed([1.0] * 11, [1.6 + 0.01 * i for i in range(11)])
    one_stall = timed([1.0] * 11, [1.1] * 10 + [1.7])  # one stalled round above eleven's lowest: a rank-sum test still decides
    assert falls_with_size(eleven, one_stall) and not falls_with_size(eleven, timed([1.0] * 11, [1.6 + 0.01 * i for i in range(11)]))
    from lora_edu.maths.timing import rank_sum_p
    assert rank_sum_p([1, 2, 3], [4, 5, 6]) == pytest.approx(1 / 20) and rank_sum_p([4, 5, 6], [1, 2, 3]) == 1.0
    assert rank_sum_p([1.0] * 11, [2.0] * 11) == pytest.approx(1 / 705432)  # C(22, 11) splits, one in full order
    assert rank_sum_p([1, 2], [2, 3]) == pytest.approx(2 / 6)  # a tie counts half: 3.5 pairs, rounded down; 2 of 6 splits have 3+
    with pytest.raises(ValueError, match="at least one value"):
        rank_sum_p([], [1.0])
    ms = PAPER["table1_latency_ms"]  # the paper's AdapterH share shrinks with the pass, as its Table 1 prints it
    assert [round(ms[size][2] / ms[size][0] - 1, 3) for size in ((1, 128), (16, 256), (32, 512))] == [0.303, 0.084, 0.030]
    assert [round(ms[size][1] / ms[size][0] - 1, 3) for size in ((1, 128), (16, 256), (32, 512))] == [0.207, 0.050, 0.022]
    assert PAPER["table1_adapter_latency_increase"] == (0.207, 0.303)  # batch 1: AdapterL, AdapterH


def test_table_1_is_read_as_a_trend_with_both_halves():
    from lora_edu.paper.experiments import AdapterLatencyTrend, Latency

    def timed(added):  # 11 rounds of a base at 1 ms and adapters adding ``added`` (a share), a little noise per round
        return {"base": Latency(1.0, 1.0, 1.0, (1.0,) * 11),
                "adapters": Latency(1.0, 1.0, 1.0, tuple(1.0 + added + 0.001 * (i - 5) for i in range(11)))}

    trend = AdapterLatencyTrend({"batch 1 x 4": timed(0.6), "batch 1 x 64": timed(0.35), "batch 16 x 64": timed(0.1)},
                                "batch 1 x 64", "ours, a 64-wide GPT on the cpu")
    assert trend.slower and trend.falls and trend.word == "agrees"
    assert trend.ours() == "batch 1 x 4 +60%, batch 1 x 64 +35%, batch 16 x 64 +10%"
    assert trend.paper() == "batch 1 x 128 +30.3%, batch 16 x 256 +8.4%, batch 32 x 512 +3.0%"  # largest share first
    assert trend.reading().startswith("agrees: adapters add +35% at batch 1 x 64 tokens, and their share falls")
    lines = str(trend).splitlines()
    assert lines[1] == "  ours, a 64-wide GPT on the cpu:".ljust(38) + "batch 1 x 4 +60% | batch 1 x 64 +35% | batch 16 x 64 +10%"
    assert lines[3].endswith("ours falls too, from the smallest pass to the largest (a rank-sum test over the rounds)")
    assert trend.shares()[64] == pytest.approx((0.35, 0.345, 0.355)) and sorted(trend.shares()) == [4, 64, 1024]
    assert trend.paper_shares()[128] == pytest.approx(0.303, abs=1e-3)  # batch 1 x 128: 19.8 ms -> 25.8
    flat = AdapterLatencyTrend({"batch 1 x 4": timed(0.3), "batch 1 x 64": timed(0.3), "batch 16 x 64": timed(0.3)}, "batch 1 x 64")
    assert flat.slower and not flat.falls and flat.word == "partly" and "was not shown to fall" in flat.reading()
    same = {"base": Latency(1.0, 1.0, 1.0, (1.0,) * 11), "adapters": Latency(1.0, 1.0, 1.0, (1.0, 1.02, 0.98) * 3 + (1.0, 1.0))}
    assert AdapterLatencyTrend({"a": same, "b": same}, "a").word == "not resolved"


def test_merged_lora_adds_no_latency_is_counted_on_the_models_not_timed():
    """Section 4.1's claim is read from the layers a merged model runs; a timing is only shown beside the count."""
    from torch import nn

    from lora_edu.lora.layer import inject_lora, remove_lora
    from lora_edu.paper.experiments import Latency, merged_latency_finding

    base = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    merged = copy.deepcopy(base)
    inject_lora(merged, "all-linear", r=2, alpha=4)
    remove_lora(merged, merge=True)
    timing = Latency(1.0, 0.9, 1.1, (1.0,) * 11)
    claim, word, evidence = merged_latency_finding(base, merged, timing, timing)
    assert claim == "The LoRA paper (Section 4.1): merged, LoRA adds no inference latency"
    assert word.startswith("agrees: ") and evidence.startswith("counted: merged LoRA runs 2 linear layers, the base model 2, with the same")
    widened = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    assert merged_latency_finding(base, widened, timing, timing)[1].startswith("disagrees: ")


def test_interleaved_timers_take_turns_at_running_first():
    """A timer that always ran first (or last) in a round would carry that position's bias into "every round"."""
    from lora_edu.maths.timing import interleave

    calls: list[str] = []
    timers = {name: (lambda name=name: calls.append(name) or float(len(calls))) for name in ("a", "b", "c")}
    results = interleave(timers, rounds=3)
    firsts = [calls[i] for i in range(0, 9, 3)]
    assert sorted(firsts) == ["a", "b", "c"] and calls[:3] == ["a", "b", "c"]  # each one first once; every round has all
    assert all(sorted(calls[i:i + 3]) == ["a", "b", "c"] for i in range(0, 9, 3))
    assert {name: len(t) for name, t in results.items()} == {"a": 3, "b": 3, "c": 3}
    assert results["b"][1] == 4.0  # round 2 runs b, c, a: b is the fourth call
    with pytest.raises(ValueError, match="at least one timer and one round"):
        interleave(timers, rounds=0)


def test_training_steps_are_timed_interleaved_on_copies():
    from lora_edu.gpt.model import GPT, GPTConfig
    from lora_edu.lora.layer import inject_lora, mark_only_lora_trainable
    from lora_edu.paper.experiments import compare_step_time

    torch.manual_seed(0)
    full = GPT(GPTConfig(vocab_size=11, n_ctx=8, n_layer=1, n_head=1, d_model=8))
    lora = GPT(GPTConfig(vocab_size=11, n_ctx=8, n_layer=1, n_head=1, d_model=8))
    inject_lora(lora, ["q_proj", "v_proj"], r=2, alpha=4)
    mark_only_lora_trainable(lora)
    before = {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in (("full", full), ("lora", lora))}
    x = torch.randint(0, 11, (4, 8))
    times = compare_step_time({"full": full, "lora": lora}, x, x, rounds=3, repeats=2)
    assert set(times) == {"full", "lora"} and all(len(t.rounds) == 3 and t.low <= t.median <= t.high for t in times.values())
    assert "times (rounds" in times["lora"].versus(times["full"])
    for name, m in (("full", full), ("lora", lora)):  # timed on copies: nothing trained
        assert all(torch.equal(v, before[name][k]) for k, v in m.state_dict().items()) and m.training
    frozen = GPT(GPTConfig(vocab_size=11, n_ctx=8, n_layer=1, n_head=1, d_model=8)).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable weights"):
        compare_step_time({"frozen": frozen}, x, x)


def test_a_family_of_verdicts_is_tallied_for_one_side():
    from lora_edu.paper.experiments import config_name, interval, tally, verdict

    good, bad, wide = interval([0.9, 1.0, 1.1]), interval([1.9, 2.0, 2.1]), interval([0.5, 1.5, 2.5])
    lines = {1: verdict("A", good, "B", bad, False), 2: verdict("A", bad, "B", good, False), 4: verdict("A", wide, "B", good, False)}
    assert tally(lines, "A") == "A resolved better: 1 | resolved worse: 2 | not resolved: 4"
    assert tally({}, "A") == "A resolved better: none | resolved worse: none | not resolved: none"
    from lora_edu.paper.experiments import tally_word, verdict_word
    assert tally_word(lines, "A") == "disagrees" and tally_word({1: lines[1]}, "A") == "agrees"
    assert tally_word({1: lines[1], 4: lines[4]}, "A") == "partly" and tally_word({4: lines[4]}, "A") == "not resolved"
    assert [verdict_word(w, "A") for w in ("A", "B", None)] == ["agrees", "disagrees", "not resolved"]
    from lora_edu.paper.experiments import Interval, interval_word, within_noise_word
    pos, neg, tie = Interval(1.0, 0.5, ()), Interval(-1.0, 0.5, ()), Interval(0.0, 0.5, ())
    assert [interval_word(iv, "above") for iv in (pos, neg, tie)] == ["agrees", "disagrees", "not resolved"]
    assert [interval_word(iv, "below") for iv in (pos, neg, tie)] == ["disagrees", "agrees", "not resolved"]
    with pytest.raises(ValueError, match="above"):
        interval_word(pos, "up")
    assert [within_noise_word(w, None) for w in ("A", None)] == ["disagrees", "not resolved"]  # the paper reports a tie
    assert [within_noise_word(w, "A") for w in ("A", "B", None)] == ["agrees", "disagrees", "not resolved"]
    from lora_edu.paper.experiments import better
    assert better("A", good, "B", bad, False) == "A" and better("A", good, "B", bad, True) == "B"
    assert better("A", wide, "B", good, False) is None
    from lora_edu.paper.experiments import Interval, difference_interval, log_interval
    a, b = interval([1.0, 1.2, 1.1]), interval([1.5, 1.7, 1.6, 1.4, 1.8])  # Welch: unequal seeds and spreads
    diff = difference_interval(a, b)
    se = math.sqrt(np.var(a.values, ddof=1) / 3 + np.var(b.values, ddof=1) / 5)
    df = se**4 / ((np.var(a.values, ddof=1) / 3) ** 2 / 2 + (np.var(b.values, ddof=1) / 5) ** 2 / 4)
    assert diff.mean == pytest.approx(-0.5) and diff.half_width == pytest.approx(t95(df) * se)
    apart = (interval([1.0, 1.3, 1.6]), interval([1.9, 2.2, 2.5]))  # the two intervals overlap, the difference excludes 0
    assert apart[0].high > apart[1].low and better("A", apart[0], "B", apart[1], False) == "A"
    assert verdict("A", apart[0], "B", apart[1], False).startswith("A beats B (")
    ratio = difference_interval(log_interval([1.0, 2.0, 4.0]), log_interval([2.0, 4.0, 8.0]))  # a ratio of 1/2, on logs
    assert ratio.mean == pytest.approx(math.log(0.5))
    with pytest.raises(ValueError, match="per-seed values"):
        better("A", Interval(1.0, 0.1, ()), "B", bad, False)
    assert config_name(("q", "v")) == "Wq+Wv"


def test_the_first_step_lowers_the_loss_by_s_times_r():
    from lora_edu.lora.variants import loss_drop_after_one_step, update_size_after_one_step

    fixed = [loss_drop_after_one_step(r, 16, False, d=128) for r in (1, 4, 16)]
    rslora = [loss_drop_after_one_step(r, 4, True, d=128) for r in (1, 4, 16)]
    double = [loss_drop_after_one_step(r, 2 * r, False, d=128) for r in (1, 4, 16)]
    assert max(fixed) / min(fixed) < 1.3  # alpha / r with a fixed alpha: the same fall at every rank
    assert 3 < rslora[2] / rslora[0] < 5.5 and 12 < double[2] / double[0] < 20  # like sqrt(r) and like r
    sizes = [update_size_after_one_step(r, 4, True, d=128) for r in (1, 4, 16)]
    assert max(sizes) / min(sizes) < 1.2  # while rsLoRA keeps the size of the update
    assert all(x > 0 for x in fixed + rslora + double)  # every first step goes downhill


def test_phi_is_judged_against_random_subspaces_of_the_same_sizes():
    from lora_edu.paper.experiments import phi_chance, phi_verdicts

    chance = phi_chance(2, 4, 16, draws=300)
    assert chance.mean.shape == (2, 4) and 0.05 < chance.top < 0.2  # about max(i, j) / d = 1/16 at (1, 1)
    assert chance.mean[1, 3] == pytest.approx(4 / 16, abs=0.05) and chance.top95 > chance.top
    shared = np.zeros((2, 4))
    shared[0, 0], shared[1, 1] = 0.9, 0.3
    lines = phi_verdicts([shared, shared + 0.01, shared + 0.02], chance)
    assert lines[0][0].startswith("Section 7.2: the top direction is shared")
    assert lines[0][1] == "agrees" and lines[0][2].endswith("shared above the paper's 0.5")
    assert "per seed 0.90, 0.91, 0.92, mean 0.910 [" in lines[0][2]
    between = [np.eye(2, 4) * x for x in (0.35, 0.40, 0.45)]  # above chance, below 0.5, too spread to exclude it
    word, why = phi_verdicts(between, chance)[0][1:]
    assert word == "agrees that it is shared (above chance), not resolved above 0.5"
    assert why.endswith("not told apart from the paper's 0.5; below 0.5 in every seed")
    assert "drops off" in lines[1][0] and lines[1][1] == "agrees"
    assert lines[1][2].startswith("the overlap above chance") and "above 0" in lines[1][2]
    def with_drop(d):  # φ whose overlap above chance is d higher at (1, 1) than at (2, 2)
        p = np.full((2, 4), 0.3)
        p[0, 0] = p[1, 1] - chance.mean[1, 1] + chance.mean[0, 0] + d
        return p

    assert phi_verdicts([with_drop(d) for d in (-0.1, 0.0, 0.1)], chance)[1][1] == "not resolved"  # seeds disagree
    assert phi_verdicts([with_drop(d) for d in (-0.2, -0.21, -0.19)], chance)[1][1] == "disagrees"  # tail above top
    flat = [np.full((2, 4), chance.top) + 0.001 * k for k in range(3)]
    assert phi_verdicts(flat, chance)[0][2].endswith("below the paper's 0.5") and phi_verdicts(flat, chance)[0][1] == "disagrees"
    near = [shared.copy() for _ in range(3)]
    for p, top in zip(near, (0.48, 0.55, 0.45), strict=True):
        p[0, 0] = top  # above chance in every seed, above the paper's 0.5 (a bound, not a level) in one
    word, line = phi_verdicts(near, chance)[0][1:]
    assert word.startswith("agrees that it is shared")  # above chance, by an interval over seeds; against 0.5 the interval includes it
    assert line.endswith("shared more than by chance, but not told apart from the paper's 0.5")
    spread = [shared.copy() for _ in range(3)]
    for p, top in zip(spread, (0.05, 0.55, 0.95), strict=True):
        p[0, 0] = top
    assert phi_verdicts(spread, chance)[0][1] == "not resolved"


def test_a_loss_ratio_counts_the_seeds_and_the_animals():
    rng = np.random.default_rng(0)
    hardness = rng.lognormal(0, 1, 16)  # some animals are much harder than others, for both configurations
    a = 0.5 * hardness * rng.lognormal(0, 0.05, (5, 16))
    b = 1.0 * hardness * rng.lognormal(0, 0.05, (5, 16))
    ab = loss_ratio(a, b)
    assert ab.ratio == pytest.approx(np.exp(np.log(a.mean(1)).mean() - np.log(b.mean(1)).mean()))
    assert ab.low < ab.ratio < ab.high < 1 and ratio_winner("A", "B", ab) == "A"  # paired by animal: resolved
    assert ratio_winner("B", "A", loss_ratio(b, a)) == "A"
    noisy = b * rng.lognormal(0, 0.6, (5, 1))  # seeds that disagree by factors: the interval widens to include 1
    assert ratio_winner("A", "B", loss_ratio(a, noisy)) is None
    one_hard_animal = np.ones((3, 16))
    one_hard_animal[:, 0] = 50.0  # a ratio driven by one animal: redrawing the animals must show it
    few = loss_ratio(one_hard_animal * 0.5 * np.array([[1.0], [1.01], [0.99]]), np.ones((3, 16)) * np.array([[1.0], [1.01], [0.99]]))
    assert few.low < 1 < few.high
    with pytest.raises(ValueError, match="same animals"):
        loss_ratio(a, b[:, :8])
    with pytest.raises(ValueError, match="positive"):
        loss_ratio(a, -b)


def test_redrawing_the_animals_never_narrows_the_seeds_interval():
    from lora_edu.maths.intervals import welch_half_width
    from lora_edu.paper.experiments import seeds_and_animals

    rng = np.random.default_rng(3)
    hardness = rng.lognormal(0, 1.5, 16)  # animals that differ a lot: a large variance from redrawing them
    a = hardness * rng.lognormal(0, 0.1, (3, 1))  # three seeds a side: few degrees of freedom
    b = 1.2 * hardness * rng.lognormal(0, 0.5, 16) * rng.lognormal(0, 0.1, (3, 1))  # B's edge differs by animal
    per_run = lambda m: np.log(m.mean(axis=-1))  # noqa: E731
    _, half = seeds_and_animals(a, b, per_run)
    seeds_only = welch_half_width([(per_run(a).var(ddof=1) / 3, 2), (per_run(b).var(ddof=1) / 3, 2)])
    assert half > seeds_only  # more variance and no more degrees of freedom: wider, never narrower
    assert welch_half_width([(0.0, 2), (0.0, 2)], extra_variance=1.0) == pytest.approx(4.303, abs=1e-3)  # t(2) when seeds agree


def test_a_loss_verdict_reads_per_animal_losses_of_runs():
    rng = np.random.default_rng(1)
    def run(targets, seed, scale):
        given = {"targets": targets, "r": 8, "seed": seed, "test_answer_losses": tuple(scale * rng.lognormal(0, 0.05, 16))}
        return LoRARun(**{f.name: given.get(f.name) for f in dataclasses.fields(LoRARun)})

    groups = runs_by_config([run(("q",), s, 1.0) for s in range(3)] + [run(("v",), s, 0.3) for s in range(3)])
    assert list(groups) == [(("q",), 8), (("v",), 8)] and all(len(g) == 3 for g in groups.values())
    line = loss_verdict("Wq", groups[(("q",), 8)], "Wv", groups[(("v",), 8)])
    assert line.startswith("Wv beats Wq on test answer loss (loss ratio Wv / Wq 0.3") and line.endswith("])")
    flipped = loss_verdict("Wv", groups[(("v",), 8)], "Wq", groups[(("q",), 8)])  # the winner named first either way
    assert flipped.startswith("Wv beats Wq on test answer loss (loss ratio Wv / Wq 0.3")
    assert flipped[flipped.index("0.3"):] == line[line.index("0.3"):]
    in_order = loss_verdict("Wq", groups[(("q",), 8)], "Wv", groups[(("v",), 8)], winner_first=False)
    assert in_order.startswith("Wv beats Wq on test answer loss (loss ratio Wq / Wv 3.")  # A / B as called, above 1
    same = loss_verdict("Wq", groups[(("q",), 8)], "Wq'", groups[(("q",), 8)])
    assert same.startswith("Wq vs Wq' on test answer loss: not resolved (loss ratio Wq / Wq' ")
    assert tally({"x": line, "y": same}, "Wv") == "Wv resolved better: x | resolved worse: none | not resolved: y"
    assert loss_winner("Wq", groups[(("q",), 8)], "Wv", groups[(("v",), 8)]) == "Wv"  # the winner the line names
    assert loss_winner("Wq", groups[(("q",), 8)], "Wq'", groups[(("q",), 8)]) is None


def test_initial_factor_is_the_a_a_run_starts_from():
    from lora_edu.gpt.data import make_world
    from lora_edu.paper.experiments import initial_factor, lora_run

    world = make_world()
    torch.manual_seed(0)
    base = GPT(GPTConfig(vocab_size=len(world.tokenizer), n_ctx=64, n_layer=1, n_head=2, d_model=16))
    layer = "blocks.0.attn.q_proj"
    a0, other_seed = (initial_factor(base, ("q", "v"), 4, seed=s, layer=layer) for s in (3, 4))
    assert a0.shape == (4, 16) and not np.allclose(a0, other_seed)
    run = lora_run(base, world, ("q", "v"), 4, steps=1, seed=3, lr=1e-9)  # one step of Adam moves A by about 1e-9
    assert np.allclose(run.factor(layer), a0, atol=1e-6) and not np.allclose(run.factor(layer), other_seed)
    assert len(run.test_right) == len(world.test_animals) and run.test_exact_match == sum(run.test_right) / len(run.test_right)


def test_the_random_direction_null_keeps_the_spectrum_and_draws_the_directions():
    """The null that 05c sets beside LoRA's intruder count: an update with the run's own singular values (so its rank,
    size and spectrum) in random directions, blind to W."""
    from lora_edu.paper.experiments import intruder_count, random_direction_intruders, update_spectra

    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64))
    names = ["0", "1"]
    scale = {n: float(torch.linalg.matrix_norm(base.get_submodule(n).weight.detach())) for n in names}
    assert random_direction_intruders(base, {n: [0.0] * 8 for n in names}, seed=0) == 0  # no update, no new direction
    tiny = random_direction_intruders(base, {n: [0.001 * scale[n]] * 8 for n in names}, seed=0)
    huge = random_direction_intruders(base, {n: [10 * scale[n]] * 8 for n in names}, seed=0)
    assert tiny == 0 and 12 <= huge <= 16  # eight directions each ten times W's size: they top each spectrum
    assert random_direction_intruders(base, {n: [10 * scale[n]] * 8 for n in names}, seed=0) == huge  # the seed fixes the draw
    one_big = random_direction_intruders(base, {n: [10 * scale[n]] + [0.001 * scale[n]] * 7 for n in names}, seed=0)
    assert one_big <= 4 < huge  # the same rank, but one large direction: the shape of the spectrum matters
    with pytest.raises(ValueError, match="at most 64 singular values"):
        random_direction_intruders(base, {"0": [1.0] * 65}, seed=0)
    averaged = random_direction_intruders(base, {n: [0.6 * scale[n]] * 8 for n in names}, seed=0, draws=8)
    assert 0 < averaged < 20 and averaged * 8 == round(averaged * 8)  # the mean of 8 whole-number counts
    with pytest.raises(ValueError, match="draws must be a whole number"):
        random_direction_intruders(base, {"0": [1.0]}, seed=0, draws=0)
    gpt = GPT(GPTConfig(vocab_size=11, n_ctx=8, n_layer=1, n_head=1, d_model=64))
    moved = copy.deepcopy(gpt)
    with torch.no_grad():
        moved.get_submodule("blocks.0.attn.q_proj").weight.mul_(1.5)  # ΔW = 0.5 W
    names = ["blocks.0.attn.q_proj", "blocks.0.attn.v_proj"]
    spectra = update_spectra(gpt, moved, names)
    w = gpt.get_submodule(names[0]).weight.detach().double()
    assert np.allclose(spectra[names[0]], 0.5 * torch.linalg.svdvals(w).numpy()) and max(spectra[names[1]]) == 0.0
    assert intruder_count(gpt, moved, names) == 0  # a rescaled W keeps its directions ...
    assert random_direction_intruders(gpt, spectra, seed=0) > 0  # ... the same spectrum in random directions does not


def test_training_flops_are_split_by_where_they_go():
    from lora_edu.gpt.train import training_flops_parts, training_flops_per_token

    cfg = GPTConfig(vocab_size=11, n_ctx=8, n_layer=2, n_head=1, d_model=8)
    full = GPT(cfg)
    linear = sum(m.weight.numel() for m in full.modules() if isinstance(m, nn.Linear))
    assert training_flops_parts(full, seq=8) == {"frozen layers": 0, "trained layers": 6 * linear, "adapters": 0,
                                                 "attention": 12 * 2 * 8 * 8}
    lora = GPT(cfg)
    inject_lora(lora, ["q_proj", "v_proj"], r=2, alpha=4)
    mark_only_lora_trainable(lora)
    parts = training_flops_parts(lora, seq=8)
    assert parts["trained layers"] == 0 and parts["frozen layers"] == 4 * linear  # frozen: forward and input gradient only
    assert parts["adapters"] == 6 * 2 * 2 * (2 * 2 * 8)  # 2 blocks x (Wq, Wv) x (A and B: 2 r d entries), all trained
    assert training_flops_per_token(lora, 8) == sum(parts.values())


def test_still_learning_reads_the_validation_curve_only():
    from lora_edu.paper.experiments import LoRARun, still_learning

    def run(curve):
        return LoRARun(("q",), 1, 0, 0.0, curve[-1][1], 0.0, 9.9, 0.0, {}, val_curve=tuple(curve))

    falling = [(100, 1.0), (200, 0.8), (300, 0.6), (400, 0.4)]
    flat = [(100, 1.0), (200, 0.5), (300, 0.41), (400, 0.40)]
    assert still_learning([run(falling), run(falling)]) == (True, 0.6, 0.4)  # the eval at 3/4 of the run, then the last
    assert still_learning([run(flat)])[0] is False  # levelled off: under a tenth in the last quarter
    with pytest.raises(ValueError, match="validation curve"):
        still_learning([run([(400, 0.4)])])


def test_rank_penalty_pairs_each_seed_with_its_own_run():
    from lora_edu.paper.experiments import LoRARun, rank_penalty, runs_by_config

    def run(r, seed, loss):
        return LoRARun(("q",), r, seed, 0.0, 0.0, 0.0, loss, 0.0, {})

    groups = runs_by_config([run(1, 0, 2.0), run(1, 1, 3.0), run(8, 1, 1.0), run(8, 0, 1.0)])  # seeds in another order at r = 8
    penalty = rank_penalty(groups, ("q",), 1, 8)
    assert penalty.values == (2.0, 3.0) and penalty.mean == pytest.approx(6 ** 0.5)  # geometric mean of the two ratios
    with pytest.raises(ValueError, match="No runs of"):
        rank_penalty(groups, ("q",), 2, 8)
    with pytest.raises(ValueError, match="pair the same seeds"):
        rank_penalty(runs_by_config([run(1, 0, 2.0), run(1, 1, 3.0), run(8, 0, 1.0), run(8, 2, 1.0)]), ("q",), 1, 8)


def test_pairing_by_seed_removes_the_luck_both_arms_share():
    rng = np.random.default_rng(5)
    hardness = rng.lognormal(0, 0.3, 16)
    seed_luck = rng.lognormal(0, 0.5, (10, 1))  # a seed that suits one arm suits the other: strongly correlated runs
    a = 0.8 * hardness * seed_luck * rng.lognormal(0, 0.02, (10, 16))
    b = hardness * seed_luck * rng.lognormal(0, 0.02, (10, 16))
    unpaired, paired = loss_ratio(a, b), loss_ratio(a, b, paired=True)
    assert unpaired.ratio == pytest.approx(paired.ratio)  # the same estimate ...
    assert unpaired.low < 1 < unpaired.high and paired.high < 1  # ... but only pairing sees past the seeds' shared luck
    assert paired.high - paired.low < (unpaired.high - unpaired.low) / 5
    with pytest.raises(ValueError, match="same seeds"):
        loss_ratio(a, b[:9], paired=True)
    runs = lambda table, seeds: [SimpleNamespace(seed=s, test_answer_losses=tuple(row)) for s, row in zip(seeds, table, strict=True)]  # noqa: E731
    shuffled = runs(b, range(10))[::-1]  # runs_loss_ratio pairs by seed number, whatever the order they come in
    assert runs_loss_ratio(runs(a, range(10)), shuffled, paired=True) == paired
    with pytest.raises(ValueError, match="same seeds"):
        runs_loss_ratio(runs(a, range(10)), runs(b, range(1, 11)), paired=True)
    assert loss_verdict("A", runs(a, range(10)), "B", shuffled, paired=True).startswith("A beats B")
    assert loss_winner("A", runs(a, range(10)), "B", shuffled) is None  # unpaired: not resolved


def test_table7_study_sets_each_update_against_random_directions_and_another_task(tiny):
    from lora_edu.paper.experiments import initial_factor
    from lora_edu.paper.table7 import table7_study

    base, _ = tiny
    layer = "blocks.3.attn.q_proj"
    w = base.get_submodule(layer).weight.detach().double().numpy()
    u, s, vt = np.linalg.svd(w)

    def run(seed, r, size, along_w, loss=0.5):  # ΔW of a given size, in W's own top directions or in random ones
        a0 = initial_factor(base, ("q", "v"), r, seed, layer)
        rng = np.random.default_rng(seed)
        left, a = (u[:, :r], vt[:r]) if along_w else (rng.standard_normal((w.shape[0], r)), rng.standard_normal((r, w.shape[1])))
        b = left * size * np.linalg.norm(w) / np.linalg.norm(left @ a)  # ΔW = B A, of the size asked for
        return LoRARun(("q", "v"), r, seed, 1.0, 0.1, 1.0, loss, 0.0, {layer: (a, b, 1.0)}), np.linalg.norm(a - a0) / np.linalg.norm(a0)

    seeds = (0, 1, 2)
    large = [run(s, 4, 4.0, True) for s in seeds]
    study = table7_study(base, layer, [r for r, _ in large], [run(s, 8, 4.0, True)[0] for s in seeds],
                         [run(s, 4, 0.1, True, 0.7)[0] for s in seeds], [run(s, 4, 4.0, False)[0] for s in seeds], small_rate=1e-3)
    assert study.large.size == pytest.approx(4.0) and study.small.size == pytest.approx(0.1)
    assert study.large.a_moved == pytest.approx(tuple(moved for _, moved in large))  # ‖A − A₀‖ / ‖A₀‖ from each seed's own start
    assert study.small.test_loss == (0.7, 0.7, 0.7)
    assert study.large.above_random == 3 and math.exp(study.large.over_random.low) > 3  # W's own directions: far above random
    assert study.card.over_random.mean < study.large.over_random.mean and study.json_minus_card.low > 0  # random directions
    claim, word, evidence = study.finding()
    assert claim.startswith("Table 7 (Section 7.3)")
    assert word == ("agrees against random directions with a smaller update (0.10 of W; GPT-3's 0.11) (the same at section 1's rate); "
                    "agrees against another task's update (the stricter baseline)")
    assert "JSON, rate 0.001 (update 0.10 of W)" in evidence
    text = str(study)
    assert text.splitlines()[0].split()[:3] == ["update", "r", "‖ΔW‖/‖W‖"] and "the paper, GPT-3 Wq" in text
    assert "paired by seed" in text and "above 0: the JSON update's directions catch more of W" in text
    ours = np.mean([al["norm_delta_w"] / al["w"] for al in study.large.alignments])  # each seed's own ratio, then the mean
    assert f"at section 1's rate {ours:.2f} (the mean of each seed's own ratio" in study.top_part()
    paper = PAPER["table7_norms"]["delta_w"][4] / PAPER["table7_projections"][4]["w"]
    assert study.top_part().endswith(f"ours is {ours / paper:.1f} times the paper's")
    with pytest.raises(ValueError, match="Pair the card runs"):
        _ = table7_study(base, layer, study_runs := [run(s, 4, 4.0, True)[0] for s in seeds], study_runs, study_runs,
                         [run(s, 4, 4.0, False)[0] for s in (3, 4, 5)], 1e-3).json_minus_card


def test_rank_tie_reads_the_tie_against_its_margin_and_the_plain_question_apart():
    from lora_edu.paper.experiments import LoRARun
    from lora_edu.paper.rank_tie import RankTie

    def run(r, seed, loss, right):  # one scored run: 16 test animals, the first ``right`` answered exactly
        losses = tuple(loss * (1 + 0.05 * ((seed + a) % 3)) for a in range(16))
        return LoRARun(("q", "v"), r, seed, 0.5, loss, right / 16, float(np.mean(losses)), 1.0, {}, 0.03, losses,
                       ((300, loss * 1.01), (400, loss)), tuple(a < right for a in range(16)))

    seeds = range(5)
    runs = {1: [run(1, s, 0.30 * (1 + 0.1 * s), 4 + s % 2) for s in seeds], 2: [run(2, s, 0.16, 15) for s in seeds],
            4: [run(4, s, 0.15, 15 + s % 2) for s in seeds]}
    tie = RankTie(runs, {1: 0.03, 2: 0.03, 4: 0.03}, reference=4, margin=1.25, em_margin=1 / 16, steps=400)
    assert tie.smaller == [1, 2]
    assert tie.ratios[1].low > 1.25 and tie.tie_word(1) == "disagrees"  # twice r = 4's loss: no tie
    assert tie.ratios[2].high < 1.25 and tie.tie_word(2) == "agrees"  # within the margin throughout
    assert tie.exact_match_gaps[1].low > 1 / 16 and tie.em_tie_word(1) == "disagrees"  # ten animals behind
    assert tie.em_tie_word(2) == "not resolved"  # level with r = 4, but 16 animals cannot pin the lead under one animal
    assert tie.better() == "r = 4 is better than r = 1 on both measures: a lower loss and a higher exact match"
    text = str(tie).splitlines()
    assert text[3].startswith("r = 1's loss / r = 4's ") and text[3].endswith(
        "above 1.25 throughout: no tie; above 1 throughout: r = 4's loss is lower")
    assert "below 1.25 throughout: a tie; above 1" in text[4]
    assert text[5].startswith("test exact match, r = 4 minus r = 1") and text[5].endswith("above 0.062 throughout: no tie")
    assert text[6].endswith("the interval straddles 0.062: the tie is not resolved")
    assert text[-1] == "so: " + tie.better()
    claim, word, evidence = tie.finding(64)
    assert claim == "Table 6 (Section 7.2): r = 1 is already enough for Wq+Wv (73.4% against 73.7% at r = 4)"
    assert word == ("disagrees at r = 1, not resolved at r = 2 on exact match, the measure nearest the paper's accuracy "
                    "(r = 4's lead at most 0.062, one test animal); disagrees at r = 1, agrees at r = 2 on the answer loss "
                    "(within 1.25 times r = 4's), after 400 steps")
    assert evidence[-1] == "on a 64-wide model, where the paper's is 12,288 wide" and "so: " + tie.better() in evidence
    even = RankTie({1: runs[4], 4: runs[4]}, {1: 0.03, 4: 0.03}, reference=4, margin=1.25, em_margin=1 / 16, steps=400)
    assert even.tie_word(1) == "agrees" and even.better() == "r = 4 is not shown better than r = 1 on either measure"
    with pytest.raises(ValueError, match="reference rank 8"):
        RankTie(runs, {}, reference=8, margin=1.25, em_margin=1 / 16, steps=400)
    with pytest.raises(ValueError, match="a ratio above 1"):
        RankTie(runs, {}, reference=4, margin=0.8, em_margin=1 / 16, steps=400)
    with pytest.raises(ValueError, match="between 0 and 1"):
        RankTie(runs, {}, reference=4, margin=1.25, em_margin=2, steps=400)


def test_phi_study_sets_the_overlap_beside_chance_two_seeds_the_start_and_another_task(tiny):
    from lora_edu.paper.experiments import initial_factor
    from lora_edu.paper.phi import phi_study

    base, _ = tiny
    layer, d = "blocks.3.attn.q_proj", base.config.d_model
    shared = np.eye(d)[0]  # the one direction every JSON adapter learns

    def run(r, seed, learned_direction):  # A: its start plus a large step along the learned direction (or none)
        a = initial_factor(base, ("q", "v"), r, seed, layer).copy()
        if learned_direction is not None:
            a[0] += 20 * np.linalg.norm(a[0]) * learned_direction
        return LoRARun(("q", "v"), r, seed, 1.0, 0.1, 1.0, 0.5, 0.0, {layer: (a, np.zeros((d, r)), 1.0)})

    seeds = (0, 1, 2)
    small, high = ([run(r, s, shared) for s in seeds] for r in (8, 32))
    card = [run(32, s, np.eye(d)[1 + s]) for s in seeds]  # the other task learns a direction of its own, per seed
    study = phi_study(base, small, high, card, layer, start_seeds=20)
    assert len(study.many_starts) == 20 and study.at_start == pytest.approx([study.many_starts[s] for s in seeds])
    assert all(p.shape == (8, 32) and p[0, 0] > 0.99 for p in study.per_seed)  # the shared direction tops both
    assert study.between_seeds.shape == (32, 32) and study.between_seeds[0, 0] > 0.99
    assert all(p[0, 0] < 0.01 for p in study.card) and study.json_minus_card.low > 0.9
    assert study.moved(study.learned_card) == pytest.approx(study.moved(study.learned_high), rel=0.2)  # as far as each other
    text = str(study).splitlines()
    assert text[0].startswith("φ(A8, A32, 1, 1) per seed: ") and "; random subspaces: 0.02 on average" in text[0]
    assert "two seeds at r = 32: " in text[1] and "(3 pairs)" in text[1] and "a rough interval" in text[2]
    assert study.starts().startswith("before any step, from the same seeds: φ(A8, A32, 1, 1) ")
    assert "Over 20 seeds the mean is" in study.starts()
    assert study.raised.low > 0.8 and "training added to it in every seed" in study.starts()  # φ ≈ 1 learned, from ≈ 0
    assert 0 <= study.start_luck() <= 1 and study.start_luck() == study.start_luck()  # a fixed draw
    assert ("rare luck" in study.starts()) == (study.start_luck() < 0.05)
    rows = study.findings()
    assert rows[0][1] == "descriptive" and len(rows) == 3
    assert rows[1][0] == "Section 7.2: the top direction is shared (φ(1, 1) above 0.5 on GPT-3)"
    assert rows[1][1] == ("agrees: shared, above chance, above the seeds' own starts and above 0.5 (0.5 is a size, which depends "
                          "on the width and the update: compare it as a description)")
    assert "minus the same seed's start (" + ", ".join(f"{p:.2f}" for p in study.at_start) + ")" in rows[1][2]
    assert rows[2][0] == "Section 7.2: the overlap drops off beyond the top directions"
    card_lines = study.card_report().splitlines()
    assert card_lines[1].endswith("(95% interval above 0)") and card_lines[-1].startswith("so in this layer and these seeds")
    with pytest.raises(ValueError, match="same seed order"):
        phi_study(base, small, high[::-1], card, layer, start_seeds=2)


def test_a_loss_ratio_never_prints_a_bound_of_one_that_is_not_one():
    from lora_edu.paper.experiments import LossRatio

    assert str(LossRatio(0.66, 0.43, 0.9979)) == "0.660 [0.430, 0.998]"  # resolved below 1: shown, not hidden by rounding
    assert str(LossRatio(0.66, 0.43, 1.0)) == "0.66 [0.43, 1.00]"  # a bound of exactly 1
    assert str(LossRatio(1.83, 1.12, 2.98)) == "1.83 [1.12, 2.98]"


def test_a_random_direction_matches_a_basis_less_well_in_more_dimensions():
    from lora_edu.paper.analysis import random_best_cosine

    assert 0.3 < random_best_cosine(64, n=1000) < 0.34  # notebook 05c's prediction: about 0.32 at its width
    assert random_best_cosine(4096) < 0.1 < random_best_cosine(16)
    assert random_best_cosine(1) == 1.0  # one dimension: every direction is the basis vector or its opposite


def test_a_ratio_carries_the_p_value_of_its_own_interval():
    from lora_edu.maths.intervals import T95
    from lora_edu.paper.experiments import loss_ratio, t_two_sided_p

    assert t_two_sided_p(T95[4], 4) == pytest.approx(0.05, abs=2e-4) and t_two_sided_p(T95[2], 2.7) == pytest.approx(0.05, abs=2e-4)
    assert t_two_sided_p(0.0, 4) == 1.0 and t_two_sided_p(-3.0, 8) == t_two_sided_p(3.0, 8) < 0.05
    rng = np.random.default_rng(0)
    for shift in (0.0, 0.3, 0.6, 1.2):  # from no gap to a clear one: p below 0.05 exactly when the interval leaves out 1
        a = np.exp(rng.normal(shift, 0.3, (5, 16)))
        ratio = loss_ratio(a, np.exp(rng.normal(0.0, 0.3, (5, 16))))
        assert (ratio.p < 0.05) == (ratio.low > 1 or ratio.high < 1)
    flat = np.ones((3, 4))  # every seed and animal alike: no spread, so a gap is certain and no gap is none
    assert loss_ratio(2 * flat, flat).p == 0.0 and loss_ratio(flat, flat).p == 1.0


def test_holm_corrects_a_family_of_comparisons():
    from lora_edu.paper.experiments import holm

    assert holm({"a": 0.01, "b": 0.04, "c": 0.3}) == {"a"}  # 0.01 < 0.05 / 3; then 0.04 > 0.05 / 2 stops it
    assert holm({"a": 0.01, "b": 0.02, "c": 0.04}) == {"a", "b", "c"}
    assert holm({"a": 0.03, "b": 0.04}) == set()  # each below 0.05 on its own, but the smallest is above 0.025
    assert holm({}) == set()


def test_family_verdicts_keep_only_what_holm_keeps():
    from lora_edu.paper.experiments import LossRatio, holm_verdicts, tally_word

    ratios = {"Wv": LossRatio(0.78, 0.52, 1.17, 0.2), "Wo": LossRatio(0.657, 0.433, 0.997, 0.048), "all": LossRatio(0.93, 0.54, 1.58, 0.7)}
    lines = holm_verdicts("Wq+Wv", ratios)
    assert lines["Wo"] == ("Wq+Wv vs Wo on test answer loss: not resolved after Holm's correction for 3 tests "
                           "(loss ratio Wq+Wv / Wo 0.657 [0.433, 0.997], p = 0.048, resolved on its own)")
    assert lines["Wv"].startswith("Wq+Wv vs Wv on test answer loss: not resolved (loss ratio")
    assert tally_word(lines, "Wq+Wv") == "not resolved"
    clear = holm_verdicts("Wq+Wv", {**ratios, "Wo": LossRatio(0.3, 0.2, 0.45, 0.001), "all": LossRatio(2.0, 1.5, 2.6, 0.004)})
    assert clear["Wo"].startswith("Wq+Wv beats Wo") and clear["all"].startswith("all beats Wq+Wv")
    assert tally_word(clear, "Wq+Wv") == "disagrees"


def test_qpissa_quantises_a_smaller_residual_and_its_error_is_read_weight_by_weight():
    """PiSSA's abstract: QPiSSA starts with a smaller quantisation error than QLoRA. A weight with a strong top part
    leaves a small residual; a flat random one leaves most of itself."""
    from lora_edu.lora.quant import quantization_error, residual_nf4_error
    from lora_edu.paper.experiments import qpissa_finding

    g = torch.Generator().manual_seed(0)
    flat = torch.randn(64, 64, generator=g) / 8
    strong = flat + 4 * torch.randn(64, 2, generator=g) @ torch.randn(2, 64, generator=g) / 8  # rank-2 top part
    qlora, qpissa, share = residual_nf4_error(strong, 2)
    assert qlora == pytest.approx(quantization_error(strong) * float(strong.norm()), rel=1e-5)  # QLoRA's is the usual error
    assert qpissa < 0.5 * qlora  # the residual is the small flat part
    assert share == pytest.approx(float(torch.linalg.svdvals(strong)[2:].norm() / strong.norm()), rel=1e-5)  # ‖W − W_r‖ / ‖W‖
    weights = {f"w{i}": strong + 0.01 * i * flat for i in range(6)}
    errors = {name: residual_nf4_error(w, 2) for name, w in weights.items()}
    claim, word, evidence = qpissa_finding(errors, 2)
    assert claim.startswith("Meng et al. 2024, PiSSA (abstract): ")
    assert word == "agrees on the 6 block weights of our GPT, r = 2" and "smaller in 6 of 6" in evidence
    assert evidence.endswith(f"median {np.median([e.residual_share for e in errors.values()]):.2f}")
    swapped = {name: e._replace(qlora=e.qpissa, qpissa=e.qlora) for name, e in errors.items()}  # had the residual cost more everywhere
    assert qpissa_finding(swapped, 2)[1].startswith("disagrees")
    mixed = dict(list(errors.items())[:3] + list(swapped.items())[3:])
    assert qpissa_finding(mixed, 2)[1].startswith("not resolved")
    with pytest.raises(ValueError, match="r must lie between 1 and 63"):
        residual_nf4_error(strong, 64)
    with pytest.raises(ValueError, match="at least one weight"):
        qpissa_finding({}, 2)
