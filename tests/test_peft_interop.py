"""lora_edu <-> PEFT: adapters written by one are opened by the other, with identical outputs and merged weights.

Models are built from configs with random weights (nothing is downloaded): lora_edu's GPT and a tiny
transformers Llama.
"""

import copy
import os
import subprocess
import sys
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from lora_edu import GPT, GPTConfig, inject_lora, load_adapter, lora_layers, merge_lora, read_adapter_config, save_adapter  # noqa: E402
from lora_edu.lora.layer import LoRALinear  # noqa: E402
from lora_edu.lora.peft_bridge import lora_edu_layers, peft_lora_layers  # noqa: E402
from lora_edu.lora.peft_format import selected  # noqa: E402


def gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=31, n_ctx=8, n_layer=3, n_head=2, d_model=16)).eval()


def llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=16, tie_word_embeddings=False,
    )  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


def randomize(model: torch.nn.Module, seed: int = 1) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.normal_(std=0.5)


def logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(x)
    return out[0] if isinstance(out, tuple) else out.logits


def peft_open(base: torch.nn.Module, directory) -> PeftModel:
    """PEFT's loader, failing the test on any warning it raises."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")  # transformers' own deprecations
        return PeftModel.from_pretrained(base, str(directory)).eval()


def assert_same_merge(theirs: PeftModel, ours: torch.nn.Module) -> None:
    """PEFT's merge_and_unload and lora_edu's merge_lora give bit-identical weights."""
    merged = theirs.merge_and_unload()
    merge_lora(ours)
    for name, layer in lora_layers(ours).items():
        assert torch.equal(merged.get_submodule(name).weight, layer.base.weight), name


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_peft_opens_a_lora_edu_gpt_adapter(tmp_path):
    base = gpt()
    ours = copy.deepcopy(base)
    inject_lora(ours, ["q_proj", "v_proj"], r=4, alpha=8)
    inject_lora(ours, ["fc_in"], r=2, alpha=3)
    randomize(ours)
    save_adapter(ours, tmp_path / "a")
    theirs = peft_open(copy.deepcopy(base), tmp_path / "a")
    assert type(theirs) is PeftModel  # task_type null, as PEFT writes it for a plain torch module
    assert peft_lora_layers(theirs) == lora_edu_layers(ours)
    x = torch.randint(0, 31, (2, 8))
    assert torch.equal(logits(theirs, x), logits(ours, x))
    assert_same_merge(theirs, ours)


def test_peft_reduces_the_intruders_of_a_lora_edu_gpt_adapter(tmp_path):
    """Notebook 05b scales intruder dimensions down with PEFT's reduce_intruder_dimension on our GPT's adapters:
    lambda = 1 keeps the model, lambda = 0 removes every intruder it finds, and the original adapter stays as it was."""
    from peft.tuners.lora.intruders import reduce_intruder_dimension

    from lora_edu.paper.analysis import intruder_dimensions, scale_updates, update_norm_ratios

    base = gpt()
    ours = copy.deepcopy(base)
    inject_lora(ours, ["q_proj", "v_proj"], r=4, alpha=8)
    randomize(ours)  # a large random update: new top directions in every adapted weight
    save_adapter(ours, tmp_path / "a")
    theirs = peft_open(copy.deepcopy(base), tmp_path / "a")
    x = torch.randint(0, 31, (2, 8))
    reduce_intruder_dimension(theirs, new_adapter_name="kept 1", mitigation_lambda=1.0, logging_sink=None)
    assert torch.allclose(logits(theirs, x), logits(ours, x), atol=1e-4)  # lambda = 1: the same model, refactored
    names = list(lora_layers(ours))
    before = sum(intruder_dimensions(base.get_submodule(n).weight, ours.get_submodule(n).base.weight
                                     + ours.get_submodule(n).delta_weight(), k=10).count for n in names)
    reduce_intruder_dimension(theirs, new_adapter_name="kept 0", mitigation_lambda=0.0, logging_sink=None)
    assert theirs.active_adapter == "kept 0"
    after = 0
    for n in names:
        layer = theirs.base_model.model.get_submodule(n)
        w = layer.get_base_layer().weight + layer.get_delta_weight("kept 0")
        after += intruder_dimensions(base.get_submodule(n).weight, w, k=10).count
    assert before > 0 and after < before
    theirs.set_adapter("default")
    assert torch.equal(logits(theirs, x), logits(ours, x))  # the original adapter is untouched
    # the control: each update scaled evenly, to end as far from the base weight as scaling its intruders left it
    ratios = update_norm_ratios(theirs, "kept 0")
    assert set(ratios) == set(names) and min(ratios.values()) < 1 and all(r >= 0 for r in ratios.values())
    assert update_norm_ratios(theirs, "kept 1") == pytest.approx(dict.fromkeys(names, 1.0), abs=1e-5)
    control = copy.deepcopy(ours)
    scale_updates(control, ratios)
    for n in names:
        edited = theirs.base_model.model.get_submodule(n).get_delta_weight("kept 0").norm()
        assert float(control.get_submodule(n).delta_weight().norm()) == pytest.approx(float(edited), rel=1e-4)
        direction = [m.get_submodule(n).delta_weight().flatten() for m in (ours, control)]  # the same direction, rescaled
        assert float(torch.nn.functional.cosine_similarity(*direction, dim=0)) == pytest.approx(1.0, abs=1e-5) or ratios[n] == 0
    with pytest.raises(ValueError, match="No LoRALinear named"):
        scale_updates(control, {"blocks.0.mlp.fc_in": 0.5})
    with pytest.raises(ValueError, match="0 or more"):
        scale_updates(control, {names[0]: -0.5})
    with pytest.raises(ValueError, match="holds both adapters"):
        update_norm_ratios(theirs, "no such adapter")


def test_lora_edu_opens_what_peft_saves_with_suffixes_and_patterns(tmp_path):
    base = gpt()
    torch.manual_seed(2)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], rank_pattern={"v_proj": 2},
        alpha_pattern={"blocks.1.attn.q_proj": 3}, init_lora_weights=False,
    )  # fmt: skip
    theirs = get_peft_model(copy.deepcopy(base), config).eval()
    theirs.save_pretrained(tmp_path / "p")
    assert (tmp_path / "p" / "README.md").exists()
    ours = copy.deepcopy(base)
    names = load_adapter(ours, tmp_path / "p")
    assert lora_edu_layers(ours) == peft_lora_layers(theirs)
    assert names == [f"blocks.{i}.attn.{p}" for i in range(3) for p in ("q_proj", "v_proj")]
    assert lora_layers(ours)["blocks.1.attn.q_proj"].alpha == 3 and lora_layers(ours)["blocks.2.attn.v_proj"].r == 2
    x = torch.randint(0, 31, (3, 8))
    assert torch.equal(logits(ours, x), logits(theirs, x))
    assert_same_merge(theirs, ours)


@pytest.mark.parametrize(
    "targets",
    [
        {"target_modules": ["attn.q_proj", "fc_out"]},  # dotted suffixes
        {"target_modules": ["blocks.0.attn.k_proj", "blocks.2.mlp.fc_in"]},  # full names
        {"target_modules": r"blocks\.[12]\.attn\.(q|o)_proj"},  # one regex, matched against the whole name
        {"target_modules": ["q_proj", "v_proj"], "exclude_modules": ["blocks.1.attn.v_proj"]},
        {"target_modules": ["q_proj", "v_proj"], "layers_to_transform": [0, 2], "layers_pattern": "blocks"},
        {"target_modules": ["q_proj", "fc_in"], "rank_pattern": {r"blocks\.\d\.mlp\.fc_in": 3}, "alpha_pattern": {"q_proj": 5}},
    ],
)
def test_every_way_peft_selects_layers_selects_the_same_in_lora_edu(tmp_path, targets):
    base = gpt()
    torch.manual_seed(3)
    theirs = get_peft_model(copy.deepcopy(base), LoraConfig(r=2, lora_alpha=4, init_lora_weights=False, **targets)).eval()
    theirs.save_pretrained(tmp_path / "p")
    ours = copy.deepcopy(base)
    load_adapter(ours, tmp_path / "p")
    assert lora_edu_layers(ours) == peft_lora_layers(theirs)
    x = torch.randint(0, 31, (2, 8))
    assert torch.equal(logits(ours, x), logits(theirs, x))


class Nested(torch.nn.Module):
    """A plain module where one layer's full name ("q") is also the suffix of another's ("inner.q")."""

    def __init__(self) -> None:
        super().__init__()
        self.q = torch.nn.Linear(6, 6)
        self.inner = torch.nn.Module()
        self.inner.q = torch.nn.Linear(6, 6)
        self.inner.k = torch.nn.Linear(6, 6)

    def forward(self, x):
        return self.inner.k(self.inner.q(self.q(x)))


def test_full_names_that_peft_would_read_as_suffixes_are_saved_as_an_exact_regex(tmp_path):
    torch.manual_seed(0)
    base = Nested()
    ours = copy.deepcopy(base)
    inject_lora(ours, "q", r=2, alpha=2)  # a regex: the top-level q only
    randomize(ours)
    save_adapter(ours, tmp_path / "a")
    assert read_adapter_config(tmp_path / "a")["target_modules"] == "q"  # ["q"] would also select inner.q in PEFT
    theirs = peft_open(copy.deepcopy(base), tmp_path / "a")
    assert peft_lora_layers(theirs) == lora_edu_layers(ours) == {"q": (2, 1.0)}
    x = torch.randn(3, 6)
    assert torch.equal(theirs(x), ours(x))

    both = copy.deepcopy(base)  # q with another rank than the rest: a key "q" in rank_pattern would also set inner.q's
    inject_lora(both, r"inner\..", r=1, alpha=2)
    inject_lora(both, "q", r=3, alpha=2)
    randomize(both)
    save_adapter(both, tmp_path / "b")
    assert read_adapter_config(tmp_path / "b")["rank_pattern"] == {"^q": 3}
    assert peft_lora_layers(peft_open(copy.deepcopy(base), tmp_path / "b")) == lora_edu_layers(both)


def test_layer_index_rule_is_peft_s():
    # without layers_pattern, PEFT reads the index after a dotted prefix: "model.layers.1." yes, "blocks.1." no
    config = {"target_modules": ["v_proj"], "layers_to_transform": 1}
    assert selected(config, "model.layers.1.self_attn.v_proj")
    assert not selected(config, "model.layers.0.self_attn.v_proj") and not selected(config, "blocks.1.attn.v_proj")
    assert selected({**config, "layers_pattern": ["blocks"]}, "blocks.1.attn.v_proj")
    assert selected({**config, "target_modules": ["blocks.0.attn.v_proj"]}, "blocks.0.attn.v_proj")  # a full name: no index rule


def test_peft_all_linear_adapters(tmp_path):
    base = llama()
    torch.manual_seed(6)
    theirs = get_peft_model(copy.deepcopy(base), LoraConfig(r=2, lora_alpha=4, target_modules="all-linear", init_lora_weights=False))
    theirs.eval().save_pretrained(tmp_path / "p")
    ours = copy.deepcopy(base)
    assert len(load_adapter(ours, tmp_path / "p")) == 2 * 7  # every Linear but lm_head, as in PEFT
    x = torch.randint(0, 40, (2, 10))
    assert torch.equal(logits(ours, x), logits(theirs, x))
    # on lora_edu's GPT, PEFT cannot tell the output head and adapts it too, though its weight is the embedding's
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        get_peft_model(gpt(), LoraConfig(r=2, lora_alpha=4, target_modules="all-linear")).save_pretrained(tmp_path / "g")
    model = gpt()
    with pytest.raises(ValueError, match="'lm_head' is tied to 'wte.weight'"):
        load_adapter(model, tmp_path / "g")
    assert not lora_layers(model)


def test_rslora_both_ways(tmp_path):
    base = gpt()
    torch.manual_seed(4)
    theirs = get_peft_model(
        copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], use_rslora=True, init_lora_weights=False)
    ).eval()
    theirs.save_pretrained(tmp_path / "p")
    ours = copy.deepcopy(base)
    load_adapter(ours, tmp_path / "p")
    assert all(m.use_rslora and m.scaling == 4.0 for m in lora_layers(ours).values())  # 8 / sqrt(4)
    x = torch.randint(0, 31, (2, 8))
    assert torch.equal(logits(ours, x), logits(theirs, x))
    save_adapter(ours, tmp_path / "o")
    assert read_adapter_config(tmp_path / "o")["use_rslora"] is True
    again = peft_open(copy.deepcopy(base), tmp_path / "o")
    assert torch.equal(logits(again, x), logits(ours, x))


def test_inject_lora_on_a_transformers_llama_gives_peft_output_for_the_same_factors():
    base = llama()
    ours = copy.deepcopy(base)
    names = inject_lora(ours, ["q_proj", "v_proj", "down_proj"], r=4, alpha=8)
    assert names == [f"model.layers.{i}.{p}" for i in range(2) for p in ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj")]
    randomize(ours)
    theirs = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for name, layer in lora_layers(ours).items():
            peft_layer = theirs.base_model.model.get_submodule(name)
            peft_layer.lora_A["default"].weight.copy_(layer.lora_A)
            peft_layer.lora_B["default"].weight.copy_(layer.lora_B)
    x = torch.randint(0, 40, (2, 10))
    assert torch.equal(logits(ours, x), logits(theirs.eval(), x))
    all_linear = inject_lora(copy.deepcopy(base), "all-linear", r=2, alpha=2)
    assert len(all_linear) == 2 * 7 and "lm_head" not in all_linear


def test_llama_adapters_both_ways_and_merged_weights(tmp_path):
    base = llama()
    ours = copy.deepcopy(base)
    inject_lora(ours, ["q_proj", "v_proj"], r=4, alpha=16)
    randomize(ours)
    save_adapter(ours, tmp_path / "o", base_model_name="tiny-llama", task_type="CAUSAL_LM")
    theirs = peft_open(copy.deepcopy(base), tmp_path / "o")
    assert type(theirs).__name__ == "PeftModelForCausalLM"
    x = torch.randint(0, 40, (2, 10))
    assert torch.equal(logits(theirs, x), logits(ours, x))
    assert_same_merge(theirs, ours)

    torch.manual_seed(5)
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["o_proj", "up_proj"], task_type="CAUSAL_LM", init_lora_weights=False)
    peft_model = get_peft_model(copy.deepcopy(base), config).eval()
    peft_model.save_pretrained(tmp_path / "p")
    loaded = copy.deepcopy(base)
    assert load_adapter(loaded, tmp_path / "p") == [f"model.layers.{i}.{p}" for i in range(2) for p in ("self_attn.o_proj", "mlp.up_proj")]
    assert torch.equal(logits(loaded, x), logits(peft_model, x))


@pytest.mark.parametrize(
    "config, field",
    [
        ({"target_modules": ["q_proj"], "use_dora": True}, "use_dora"),
        ({"target_modules": ["embed_tokens", "q_proj"]}, "target_modules"),
        ({"target_modules": ["q_proj"], "modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"target_modules": ["q_proj"], "bias": "lora_only"}, "bias"),
        ({"target_modules": ["q_proj"], "lora_bias": True}, "lora_bias"),
    ],
)
def test_peft_features_lora_edu_cannot_represent_name_the_field(tmp_path, config, field):
    base = llama()
    get_peft_model(copy.deepcopy(base), LoraConfig(r=2, lora_alpha=4, **config)).save_pretrained(tmp_path / "p")
    model = copy.deepcopy(base)
    with pytest.raises(ValueError, match=f"adapter_config.json: {field} "):
        load_adapter(model, tmp_path / "p")
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert_same_weights(model, base)


def test_import_peft_keeps_the_import_noise_out():
    code = "import logging; logging.basicConfig(); from lora_edu.lora.peft_bridge import import_peft; print(import_peft().__version__)"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("0.") and done.stderr == ""


def test_intruder_mitigation_scores_peft_s_mitigation_beside_an_even_shrink():
    """Notebook 05b's mitigation in one call: PEFT opens each trained adapter unchanged (λ = 1), scales its intruders
    for every other λ, and the control at a λ scales each update evenly to end as far from the base weight."""
    from lora_edu.gpt.pretrain import load_pretrained
    from lora_edu.paper.comparison import intruder_mitigation

    base, world = load_pretrained("tiny", "cpu")
    seeds = (0, 1)
    m = intruder_mitigation(base, world, "json", 3e-2, seeds, kept=(1.0, 0.5, 0.0), controlled=(0.5,), steps=20, batch_size=8)
    assert set(m.scaled) == {(s, k) for s in seeds for k in (1.0, 0.5, 0.0)} and set(m.control) == {(s, 0.5) for s in seeds}
    for s in seeds:  # λ = 1 is the adapter as trained, opened in PEFT
        assert m.scaled[(s, 1.0)][0] == pytest.approx(m.trained[s].pretrain_loss, abs=1e-3)
        assert m.scaled[(s, 1.0)][1] == m.trained[s].test_exact_match
    change = m.change(0.5, "held-out loss")
    assert change.values == pytest.approx([m.scaled[(s, 0.5)][0] - m.scaled[(s, 1.0)][0] for s in seeds])
    beyond = m.change(0.5, "test exact match", against="control")
    assert beyond.values == pytest.approx([m.scaled[(s, 0.5)][1] - m.control[(s, 0.5)][1] for s in seeds])
    lines = m.table().splitlines()
    assert len(lines) == 2 + 3 and lines[2].endswith("(the adapter as trained)") and lines[4].endswith("(no control built)")
    assert f"{m.means(0.5, control=True)[0]:.3f}" in lines[3]
    with pytest.raises(ValueError, match="score must be one of"):
        m.change(0.5, "accuracy")
    with pytest.raises(ValueError, match="kept must include 1.0"):
        intruder_mitigation(base, world, "json", 3e-2, seeds, kept=(0.5,), controlled=())
    with pytest.raises(ValueError, match="controlled must be among"):
        intruder_mitigation(base, world, "json", 3e-2, seeds, kept=(1.0, 0.5), controlled=(1.0,))
