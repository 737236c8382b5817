"""lora_edu on transformers causal LMs (issue 23): GPT-2's Conv1D layers, and "all-linear" chosen as PEFT chooses.

Every model is built from a tiny config with random weights (nothing is downloaded): GPT-2 (its attention and
MLP layers are ``transformers.pytorch_utils.Conv1D``, weight stored (d_in, d_out)), Llama, Qwen2, Phi and Phi-3
(``nn.Linear``).  PEFT 0.21 is the reference: same layers, same trainable counts, same logits for the same
factors, the same merged weights, and the same correction (with a warning) of a ``fan_in_fan_out`` that
disagrees with the layer type.
"""

import copy
import json
import os
import subprocess
import sys
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import (  # noqa: E402
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    PhiConfig,
    PhiForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers.pytorch_utils import Conv1D  # noqa: E402

from lora_edu import (  # noqa: E402
    count_parameters,
    disable_lora,
    inject_lora,
    load_adapter,
    lora_layers,
    mark_only_lora_trainable,
    merge_lora,
    read_adapter_config,
    remove_lora,
    save_adapter,
    unmerge_lora,
)
from lora_edu.lora.adapter import base_fingerprint  # noqa: E402
from lora_edu.lora.layer import LoRALinear, is_conv1d, linear_shape  # noqa: E402
from lora_edu.lora.peft_bridge import lora_edu_layers, peft_lora_layers  # noqa: E402
from tests.test_peft_interop import assert_same_merge, logits, peft_open, randomize  # noqa: E402

VOCAB = 40
SMALL = dict(
    vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=2,
)  # fmt: skip
CONFIGS = {
    "gpt2": lambda: GPT2LMHeadModel(
        GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=16, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=1)
    ),
    "llama": lambda: LlamaForCausalLM(LlamaConfig(**SMALL, tie_word_embeddings=False)),
    "qwen2": lambda: Qwen2ForCausalLM(Qwen2Config(**SMALL)),
    "phi": lambda: PhiForCausalLM(PhiConfig(**SMALL)),
    "phi3": lambda: Phi3ForCausalLM(Phi3Config(**SMALL)),
}
GPT2_LAYERS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
LOGIT_TOL = 1e-5  # the same factors in both libraries; only float rounding may differ (it is 0 today)


def build(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return CONFIGS[arch]().eval()


def tokens(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(seed))


def copy_factors_into_peft(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, layer in lora_layers(ours).items():
            peft_layer = theirs.base_model.model.get_submodule(name)
            peft_layer.lora_A["default"].weight.copy_(layer.lora_A)
            peft_layer.lora_B["default"].weight.copy_(layer.lora_B)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_all_linear_adapts_the_layers_peft_adapts_with_the_same_counts_and_logits(arch):
    base = build(arch)
    ours = copy.deepcopy(base)
    names = inject_lora(ours, "all-linear", r=2, alpha=4)
    mark_only_lora_trainable(ours)
    randomize(ours)
    conv1d = arch == "gpt2"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PEFT quietly accepts the config: fan_in_fan_out is right for every layer
        warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")  # transformers' own deprecations
        theirs = get_peft_model(
            copy.deepcopy(base), LoraConfig(r=2, lora_alpha=4, target_modules="all-linear", fan_in_fan_out=conv1d)
        ).eval()
    assert names == list(peft_lora_layers(theirs)) and "lm_head" not in names
    assert lora_edu_layers(ours) == peft_lora_layers(theirs)
    if conv1d:
        assert names == [f"transformer.h.{i}.{p}" for i in range(2) for p in GPT2_LAYERS]
        assert all(is_conv1d(m.base) and m.fan_in_fan_out for m in lora_layers(ours).values())
    trainable = count_parameters(ours).trainable
    assert trainable == theirs.get_nb_trainable_parameters()[0]
    assert trainable == sum(2 * (m.in_features + m.out_features) for m in lora_layers(ours).values())
    copy_factors_into_peft(ours, theirs)
    x = tokens()
    assert max_diff(logits(ours, x), logits(base, x)) > 1e-3  # B is not zero: the adapter changes the output
    assert max_diff(logits(ours, x), logits(theirs, x)) <= LOGIT_TOL


def gpt2_with_lora(targets=("c_attn", "c_proj", "c_fc")) -> tuple[torch.nn.Module, torch.nn.Module]:
    base = build("gpt2")
    ours = copy.deepcopy(base)
    inject_lora(ours, list(targets), r=4, alpha=8)
    randomize(ours)
    return base, ours


def test_peft_opens_a_lora_edu_gpt2_conv1d_adapter_and_merges_the_same(tmp_path):
    base, ours = gpt2_with_lora()
    assert len(lora_layers(ours)) == 2 * 4  # c_proj names attn.c_proj and mlp.c_proj
    save_adapter(ours, tmp_path / "o", base_model_name="tiny-gpt2", task_type="CAUSAL_LM")
    assert read_adapter_config(tmp_path / "o")["fan_in_fan_out"] is True
    theirs = peft_open(copy.deepcopy(base), tmp_path / "o")  # any warning (a corrected fan_in_fan_out) fails
    assert peft_lora_layers(theirs) == lora_edu_layers(ours)
    assert all(m.fan_in_fan_out for n, m in theirs.named_modules() if hasattr(m, "lora_A") and isinstance(m.r, dict))
    x = tokens(1)
    assert max_diff(logits(theirs, x), logits(ours, x)) <= LOGIT_TOL
    assert_same_merge(theirs, ours)  # PEFT's merge_and_unload and merge_lora: bit-identical Conv1D weights


def test_lora_edu_opens_peft_s_gpt2_adapter_and_merges_the_same(tmp_path):
    base = build("gpt2")
    torch.manual_seed(7)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True,
        init_lora_weights=False, task_type="CAUSAL_LM",
    )  # fmt: skip  (init_lora_weights=False: B random, not zero)
    theirs = get_peft_model(copy.deepcopy(base), config).eval()
    theirs.save_pretrained(tmp_path / "p")
    ours = copy.deepcopy(base)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        names = load_adapter(ours, tmp_path / "p")
    assert names == [f"transformer.h.{i}.{p}" for i in range(2) for p in GPT2_LAYERS]
    assert lora_edu_layers(ours) == peft_lora_layers(theirs)
    x = tokens(2)
    assert max_diff(logits(ours, x), logits(base, x)) > 1e-3
    assert max_diff(logits(ours, x), logits(theirs, x)) <= LOGIT_TOL
    assert_same_merge(theirs, ours)


def test_merge_unmerge_disable_remove_on_conv1d():
    base, ours = gpt2_with_lora(["c_attn", "mlp.c_proj"])
    x = tokens(3)
    adapted, plain = logits(ours, x), logits(base, x)
    layer = lora_layers(ours)["transformer.h.0.attn.c_attn"]
    assert isinstance(layer.base, Conv1D) and layer.base.weight.shape == (16, 48)  # (d_in, d_out)
    assert (layer.in_features, layer.out_features) == (16, 48) and tuple(linear_shape(layer)) == (16, 48, True)
    assert layer.lora_A.shape == (4, 16) and layer.lora_B.shape == (48, 4)
    w0 = layer.base.weight.clone()
    with disable_lora(ours):
        assert torch.equal(logits(ours, x), plain)
    merge_lora(ours)
    assert torch.equal(layer.base.weight, w0 + layer.delta_weight().T)  # Delta W^T added to the (d_in, d_out) weight
    torch.testing.assert_close(logits(ours, x), adapted, rtol=1e-5, atol=1e-5)
    unmerge_lora(ours)
    torch.testing.assert_close(layer.base.weight, w0, rtol=0, atol=1e-6)
    assert remove_lora(ours) == [f"transformer.h.{i}.{p}" for i in range(2) for p in ("attn.c_attn", "mlp.c_proj")]
    assert type(ours.get_submodule("transformer.h.0.attn.c_attn")) is Conv1D and not lora_layers(ours)
    torch.testing.assert_close(logits(ours, x), plain, rtol=0, atol=1e-5)


def test_conv1d_adapter_checks_the_base_fingerprint_and_dtype(tmp_path):
    base, ours = gpt2_with_lora()
    assert base_fingerprint(ours) == base_fingerprint(base)  # x.base.weight counts as x.weight, for Conv1D too
    save_adapter(ours, tmp_path / "o")
    with pytest.raises(ValueError, match="trained on a base model in float32"):
        load_adapter(build("gpt2").double(), tmp_path / "o")
    other = build("gpt2")
    with torch.no_grad():
        other.transformer.h[0].attn.c_attn.weight.add_(1e-3)
    with pytest.raises(ValueError, match="same shapes, other weights"):
        load_adapter(other, tmp_path / "o")
    assert not lora_layers(other)
    loaded = build("gpt2")
    load_adapter(loaded, tmp_path / "o")
    assert torch.equal(logits(loaded, tokens()), logits(ours, tokens()))


@pytest.mark.parametrize("arch, written", [("gpt2", False), ("llama", True)], ids=["conv1d-with-false", "linear-with-true"])
def test_a_fan_in_fan_out_that_disagrees_with_the_layer_type_is_corrected_with_a_warning(tmp_path, arch, written):
    base = build(arch)
    ours = copy.deepcopy(base)
    inject_lora(ours, ["c_attn", "c_proj"] if arch == "gpt2" else ["q_proj", "o_proj"], r=4, alpha=8)  # square ones too
    randomize(ours)
    save_adapter(ours, tmp_path / "a")
    path = tmp_path / "a" / "adapter_config.json"
    config = json.loads(path.read_text())
    assert config["fan_in_fan_out"] is not written
    path.write_text(json.dumps({**config, "fan_in_fan_out": written}))
    x = tokens(4)

    loaded = copy.deepcopy(base)
    with pytest.warns(UserWarning, match=f"fan_in_fan_out is {str(written).lower()} but") as caught:
        load_adapter(loaded, tmp_path / "a")
    assert len(caught) == 1 and "as PEFT does" in str(caught[0].message)
    assert all(m.fan_in_fan_out is not written for m in lora_layers(loaded).values())  # the layer's type wins
    assert torch.equal(logits(loaded, x), logits(ours, x))

    with pytest.warns(UserWarning, match="fan_in_fan_out is set to"):  # PEFT corrects it the same way
        from peft import PeftModel

        theirs = PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path / "a")).eval()
    assert max_diff(logits(theirs, x), logits(loaded, x)) <= LOGIT_TOL
    assert_same_merge(theirs, loaded)  # no silent transpose: both merge B A in the layer's own storage order


def test_a_fan_in_fan_out_that_is_not_a_bool_is_refused(tmp_path):
    base, ours = gpt2_with_lora()
    save_adapter(ours, tmp_path / "a")
    path = tmp_path / "a" / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "fan_in_fan_out": "yes"}))
    model = build("gpt2")
    with pytest.raises(ValueError, match="adapter_config.json: fan_in_fan_out must be true"):
        load_adapter(model, tmp_path / "a")
    assert not any(isinstance(m, LoRALinear) for m in model.modules())


def test_lora_layer_imports_and_works_without_transformers():
    code = (
        "import sys; sys.modules['transformers'] = None\n"  # any import of transformers now fails
        "import torch; from lora_edu.lora.layer import inject_lora, is_conv1d, merge_lora\n"
        "import lora_edu.lora.adapter\n"
        "m = torch.nn.Sequential(torch.nn.Linear(4, 4)); print(inject_lora(m, ['0'], r=1, alpha=1), is_conv1d(m[0].base))\n"
        "merge_lora(m)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['0'] False"


def test_lora_layers_follow_a_meta_base_so_a_full_size_gpt2_is_counted_without_memory():
    with torch.device("meta"):
        gpt2 = GPT2LMHeadModel(GPT2Config())  # the 124M shape of notebook 05's last section
    assert count_parameters(gpt2).total == 124_439_808
    names = inject_lora(gpt2, ["c_attn"], r=8, alpha=16)
    mark_only_lora_trainable(gpt2)
    layer = lora_layers(gpt2)[names[0]]
    assert layer.lora_A.is_meta and layer.lora_B.is_meta and (layer.in_features, layer.out_features) == (768, 2304)
    assert count_parameters(gpt2).trainable == 12 * 8 * (768 + 2304)  # 294,912, as PEFT prints for this config
