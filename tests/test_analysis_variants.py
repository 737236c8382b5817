import numpy as np
import pytest
import torch
from torch import nn

from lora_edu import GPT, GPTConfig, LoRALinear
from lora_edu.analysis import delta_w_alignment, subspace_similarity
from lora_edu.experiments import PAPER, LoRARun, batch1_latency_ms, summarize
from lora_edu.houlsby import HoulsbyAdapter, add_houlsby_adapters
from lora_edu.variants import column_norm, dora_weight, pissa_init, quantized_bytes, update_size_after_one_step


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
    m = column_norm(w)
    assert m.shape == (1, 6)
    torch.testing.assert_close(dora_weight(w, torch.zeros(8, 2), a, m), w)
    w2 = dora_weight(w, torch.randn(8, 2), a, 2 * m)
    torch.testing.assert_close(column_norm(w2), 2 * m)


def test_quantized_bytes_matches_qlora():
    assert 8 * quantized_bytes(10**6) / 10**6 == pytest.approx(4.127, abs=1e-3)
    assert 8 * quantized_bytes(10**6, double_quant=False) / 10**6 == pytest.approx(4.5)
    with pytest.raises(ValueError):
        quantized_bytes(10, block=0)


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
    added = add_houlsby_adapters(model, bottleneck=4)
    assert added == 2 * 2 * (16 * 4 + 4 + 4 * 16 + 16)
    assert torch.equal(model(x)[0], before)
    with pytest.raises(ValueError, match="already has adapter"):
        add_houlsby_adapters(model, 4)
    with pytest.raises(ValueError, match="bottleneck"):
        HoulsbyAdapter(8, 0)
    assert batch1_latency_ms(model, x, repeats=3) > 0


def test_summarize_and_paper_data():
    runs = [LoRARun(("q",), 8, s, em, loss, 0.0, None) for s, (em, loss) in enumerate([(0.5, 1.0), (1.0, 3.0)])]
    assert summarize(runs, "heldout_answer_loss") == {(("q",), 8): (2.0, 1.0)}
    assert set(PAPER["table5_wikisql"]) == set(PAPER["table5_rank"])
    budget = {t: len(t) * r for t, r in PAPER["table5_rank"].items()}
    assert len(set(budget.values())) == 1  # the paper's equal-budget design: r times the number of matrices
