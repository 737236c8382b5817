import pytest
import torch

from lora_edu import ARCHITECTURES, GPT, GPT_SIZES, GPTConfig, count_parameters, inject_lora, lora_parameter_count, memory_estimate
from lora_edu.maths.arch import format_bytes, weight_shapes

GPT2 = {"gpt2": "GPT-2 small", "gpt2-medium": "GPT-2 medium", "gpt2-large": "GPT-2 large", "gpt2-xl": "GPT-2 XL"}


@pytest.mark.parametrize("size, arch", GPT2.items())
def test_formula_matches_our_gpt_built_on_meta(size, arch):
    with torch.device("meta"):
        model = GPT(GPT_SIZES[size])
    assert count_parameters(model).total == ARCHITECTURES[arch].total_parameters()


def test_published_totals():
    # GPT-2 small's 124,439,808 and Llama 3's totals as published with the models.
    assert ARCHITECTURES["GPT-2 small"].total_parameters() == 124_439_808
    assert ARCHITECTURES["Llama 3 8B"].total_parameters() == 8_030_261_248
    assert ARCHITECTURES["Llama 3 70B"].total_parameters() == 70_553_706_496
    assert ARCHITECTURES["Llama 3.1 405B"].total_parameters() == 405_853_388_800
    assert 174e9 < ARCHITECTURES["GPT-3 175B"].total_parameters() < 176e9


def test_grouped_query_attention_shapes():
    shapes = weight_shapes(ARCHITECTURES["Llama 3 8B"])
    assert shapes["q"] == (4096, 4096) and shapes["k"] == (1024, 4096) and shapes["v"] == (1024, 4096)
    assert shapes["down"] == (4096, 14336)


def test_lora_counts_match_the_paper_and_our_model():
    gpt3 = ARCHITECTURES["GPT-3 175B"]
    n = lora_parameter_count(gpt3, 4, ("q", "v"))
    assert n == 96 * 2 * 4 * (12288 + 12288)
    assert 18e6 < n < 19e6  # the paper's "18M"
    # our GPT at GPT-2 small size, injected on the meta device, agrees with the formula
    with torch.device("meta"):
        model = GPT(GPT_SIZES["gpt2"])
    inject_lora(model, ["q_proj", "v_proj"], r=8, alpha=16)
    with torch.device("meta"):
        pass
    lora = sum(p.numel() for n_, p in model.named_parameters() if "lora_" in n_)
    assert lora == lora_parameter_count(ARCHITECTURES["GPT-2 small"], 8, ("q", "v"))


def test_lora_count_errors():
    with pytest.raises(ValueError, match="no matrix 'gate'"):
        lora_parameter_count(ARCHITECTURES["GPT-2 small"], 4, ("q", "gate"))
    with pytest.raises(ValueError, match="at least 1"):
        lora_parameter_count(ARCHITECTURES["GPT-2 small"], 0)


def test_memory_estimate_and_format():
    mem = memory_estimate(175_000_000_000, 175_000_000_000, "fp16", "fp16", "fp16")
    assert format_bytes(mem["weights"]) == "350.0 GB"
    assert mem["total"] == 175e9 * 8
    lora = memory_estimate(175_000_000_000, 18_874_368)
    assert lora["weights"] == 350e9 and lora["gradients"] == 18_874_368 * 2
    with pytest.raises(ValueError, match="Unknown dtype"):
        memory_estimate(1, 1, "fp8")


def test_gpt_forward_loss_and_generate():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=17, n_ctx=8, n_layer=1, n_head=2, d_model=16)
    model = GPT(cfg)
    idx = torch.randint(0, 17, (3, 8))
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 8, 17) and loss.ndim == 0
    assert model.lm_head.weight is model.wte.weight
    out = model.generate(idx[:, :2], 4)
    assert out.shape == (3, 6) and torch.equal(out[:, :2], idx[:, :2])
    with pytest.raises(ValueError, match="exceeds the context"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_gpt_is_causal():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, n_ctx=6, n_layer=2, n_head=2, d_model=8)).eval()
    a = torch.tensor([[1, 2, 3, 4, 5, 6]])
    b = torch.tensor([[1, 2, 3, 9, 9, 9]])
    torch.testing.assert_close(model(a)[0][:, :3], model(b)[0][:, :3])


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(d_model=10, n_head=3)
    assert GPTConfig(d_model=8, n_head=2).d_ff == 32


def test_all_linear_excludes_the_tied_head():
    model = GPT(GPTConfig(vocab_size=11, n_ctx=4, n_layer=2, n_head=2, d_model=8))
    names = inject_lora(model, "all-linear", r=2, alpha=2)
    assert len(names) == 2 * 6 and "lm_head" not in names


@pytest.mark.parametrize(
    "kwargs, error, text",
    [
        ({"n_head": 0}, ValueError, "n_head must be at least 1, got 0"),
        ({"n_layer": -1}, ValueError, "n_layer must be at least 1"),
        ({"vocab_size": 0}, ValueError, "vocab_size must be at least 1"),
        ({"d_ff": -4}, ValueError, "d_ff must be at least 0"),
        ({"d_model": 64.0}, TypeError, "d_model must be an int, got 64.0 \\(float\\)"),
        ({"n_ctx": True}, TypeError, "n_ctx must be an int"),
        ({"n_head": "4"}, TypeError, "n_head must be an int"),
        ({"dropout": 1.0}, ValueError, "dropout must be a probability"),
        ({"bias": 1}, TypeError, "bias must be True or False"),
    ],
)
def test_config_sizes_are_checked(kwargs, error, text):
    with pytest.raises(error, match=text):
        GPTConfig(**kwargs)


def test_token_ids_outside_the_vocabulary_are_named():
    model = GPT(GPTConfig(vocab_size=17, n_ctx=8, n_layer=1, n_head=2, d_model=16))
    with pytest.raises(ValueError, match="Token id 17 is outside the vocabulary: ids must be in \\[0, 17\\)"):
        model(torch.tensor([[1, 2, 17]]))
    with pytest.raises(ValueError, match="Token id -1"):
        model(torch.tensor([[-1, 2]]))
    with pytest.raises(TypeError, match="integer tensor"):
        model(torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="shape \\(batch, seq\\), got shape \\(3,\\)"):
        model(torch.tensor([1, 2, 3]))
    assert model(torch.tensor([[0, 16]]))[0].shape == (1, 2, 17)


def test_lora_count_is_r_times_the_sides_of_each_matrix():
    for arch in ARCHITECTURES.values():
        for name, (d_out, d_in) in weight_shapes(arch).items():
            assert lora_parameter_count(arch, 8, (name,)) == arch.n_layer * 8 * (d_out + d_in)


def test_the_papers_gpt3_and_gpt2_budgets():
    gpt3 = ARCHITECTURES["GPT-3 175B"]
    assert lora_parameter_count(gpt3, 1, ("q", "v")) == 4_718_592  # Table 4's 4.7 M
    assert lora_parameter_count(gpt3, 8, ("q", "v")) == 37_748_736  # Table 4's 37.7 M
    assert lora_parameter_count(gpt3, 4, ("q", "v")) == lora_parameter_count(gpt3, 2, ("q", "k", "v", "o"))
    assert round(100 * 18_874_368 / gpt3.total_parameters(), 4) == 0.0108
    # Table 3 lists 0.35 M and 0.77 M; r = 4 on Wq, Wv gives neither
    assert lora_parameter_count(ARCHITECTURES["GPT-2 medium"], 4, ("q", "v")) == 393_216
    assert lora_parameter_count(ARCHITECTURES["GPT-2 large"], 4, ("q", "v")) == 737_280


def test_training_memory_bytes_per_parameter_and_the_gpt3_checkpoint():
    from lora_edu.maths.arch import training_memory

    gpt3 = ARCHITECTURES["GPT-3 175B"].total_parameters()
    n = lora_parameter_count(ARCHITECTURES["GPT-3 175B"], 4, ("q", "v"))
    full = training_memory(gpt3, gpt3, "bf16")
    assert full["total"] == 16 * gpt3 and full["adam states"] == 8 * gpt3 and full["fp32 master weights"] == 4 * gpt3
    lora = training_memory(gpt3 + n, n, "bf16")
    assert lora["total"] == 2 * (gpt3 + n) + 14 * n and format_bytes(lora["total"]) == "349.5 GB"
    assert training_memory(10, 10, "fp32")["total"] == 160
    assert format_bytes(2 * gpt3) == "349.2 GB" and format_bytes(2 * n) == "37.7 MB"
    assert round(2 * n / 2**20, 1) == 36.0  # MiB
    with pytest.raises(ValueError, match="Unknown training precision"):
        training_memory(1, 1, "nf4")
