import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lora_edu import base_fingerprint, inject_lora, load_adapter, lora_layers, merge_lora, read_adapter_config, save_adapter
from lora_edu.adapter import CONFIG_NAME, WEIGHTS_NAME

from .test_lora import Toy, assert_same_state, randomize_b, state


def trained_toy(seed: int = 0, targets=("q_proj", "v_proj"), r: int = 2) -> Toy:
    torch.manual_seed(seed)
    model = Toy()
    inject_lora(model, list(targets), r=r, alpha=2 * r)
    randomize_b(model)
    return model


def fresh_base(seed: int = 0) -> Toy:
    torch.manual_seed(seed)
    return Toy()


def test_round_trip_into_a_fresh_base(tmp_path):
    model = trained_toy()
    x = torch.randn(2, 16)
    save_adapter(model, tmp_path / "adapter", base_model_name="toy")
    other = fresh_base()
    names = load_adapter(other, tmp_path / "adapter")
    assert names == list(lora_layers(model))
    assert torch.equal(other(x), model(x))


def test_files_follow_peft_conventions(tmp_path):
    model = trained_toy()
    out = save_adapter(model, tmp_path / "a")
    assert sorted(os.listdir(out)) == [CONFIG_NAME, WEIGHTS_NAME]
    config = json.loads((out / CONFIG_NAME).read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 2 and config["lora_alpha"] == 4
    assert config["target_modules"] == ["blocks.0.q_proj", "blocks.0.v_proj", "blocks.1.q_proj", "blocks.1.v_proj"]
    assert config["task_type"] is None and "lora_edu" not in config  # as PEFT writes it for a plain torch module
    with safe_open(str(out / WEIGHTS_NAME), "pt") as f:  # lora_edu's record sits in the header, where PEFT ignores it
        assert f.metadata()["lora_edu.base_fingerprint"] == base_fingerprint(fresh_base())
    tensors = load_file(str(out / WEIGHTS_NAME))
    assert "base_model.model.blocks.0.q_proj.lora_A.weight" in tensors
    assert tensors["base_model.model.blocks.1.q_proj.lora_B.weight"].shape == (32, 2)
    assert len(tensors) == 8


def test_fingerprint_ignores_lora_but_not_base_weights():
    base = fresh_base()
    fp = base_fingerprint(base)
    inject_lora(base, ["q_proj"], r=1, alpha=1)
    assert base_fingerprint(base) == fp
    randomize_b(base)
    merge_lora(base)
    assert base_fingerprint(base) != fp


def test_swap_two_adapters_on_one_base(tmp_path):
    a, b = trained_toy(seed=0), trained_toy(seed=0)
    torch.manual_seed(1)
    randomize_b(b)
    save_adapter(a, tmp_path / "a")
    save_adapter(b, tmp_path / "b")
    x = torch.randn(3, 16)
    model = fresh_base()
    load_adapter(model, tmp_path / "a")
    assert torch.equal(model(x), a(x))
    load_adapter(model, tmp_path / "b")
    assert torch.equal(model(x), b(x))


def test_save_overwrites_atomically_and_leaves_no_temp_dirs(tmp_path):
    save_adapter(trained_toy(seed=0), tmp_path / "a")
    second = trained_toy(seed=0)
    randomize_b(second)
    save_adapter(second, tmp_path / "a")
    assert os.listdir(tmp_path) == ["a"]
    model = fresh_base()
    load_adapter(model, tmp_path / "a")
    x = torch.randn(2, 16)
    assert torch.equal(model(x), second(x))


def test_interrupted_save_keeps_the_previous_adapter(tmp_path, monkeypatch):
    first = trained_toy()
    save_adapter(first, tmp_path / "a")
    second = trained_toy()
    randomize_b(second)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("lora_edu.adapter.save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_adapter(second, tmp_path / "a")
    assert os.listdir(tmp_path) == ["a"]
    model = fresh_base()
    load_adapter(model, tmp_path / "a")
    x = torch.randn(2, 16)
    assert torch.equal(model(x), first(x))


def test_mixed_ranks_round_trip(tmp_path):
    torch.manual_seed(0)
    model = Toy()
    inject_lora(model, ["q_proj"], r=2, alpha=2)
    inject_lora(model, ["fc"], r=4, alpha=8)
    randomize_b(model)
    save_adapter(model, tmp_path / "a")
    assert read_adapter_config(tmp_path / "a")["rank_pattern"]
    other = fresh_base()
    load_adapter(other, tmp_path / "a")
    assert {n: m.r for n, m in lora_layers(other).items()} == {n: m.r for n, m in lora_layers(model).items()}
    x = torch.randn(2, 16)
    assert torch.equal(other(x), model(x))


def test_wrong_base_weights_is_an_error_naming_the_fingerprints(tmp_path):
    save_adapter(trained_toy(seed=0), tmp_path / "a")
    other = fresh_base(seed=1)
    before = state(other)
    with pytest.raises(ValueError, match="fingerprint"):
        load_adapter(other, tmp_path / "a")
    assert not lora_layers(other)
    assert_same_state(other, before)
    load_adapter(other, tmp_path / "a", check_base=False)
    assert lora_layers(other)


def test_wrong_shapes_is_an_error(tmp_path):
    save_adapter(trained_toy(), tmp_path / "a")
    other = Toy(d=8)
    before = state(other)
    with pytest.raises(ValueError, match="Shape mismatch for 'blocks.0.q_proj'"):
        load_adapter(other, tmp_path / "a")
    assert_same_state(other, before)


def test_model_with_other_lora_layers_is_an_error(tmp_path):
    save_adapter(trained_toy(), tmp_path / "a")
    other = fresh_base()
    inject_lora(other, ["fc"], r=2, alpha=2)
    before = state(other)
    with pytest.raises(ValueError, match="differ from the adapter"):
        load_adapter(other, tmp_path / "a")
    assert_same_state(other, before)
    other = fresh_base()
    inject_lora(other, ["q_proj", "v_proj"], r=1, alpha=2)
    with pytest.raises(ValueError, match="r=1"):
        load_adapter(other, tmp_path / "a")


@pytest.mark.parametrize(
    "damage, text",
    [
        (lambda d: (d / CONFIG_NAME).write_text("{not json"), "not valid JSON"),
        (lambda d: (d / CONFIG_NAME).unlink(), "No adapter_config.json"),
        (lambda d: (d / WEIGHTS_NAME).write_bytes(b"\x00garbage" * 10), "corrupt"),
        (lambda d: (d / WEIGHTS_NAME).write_bytes((d / WEIGHTS_NAME).read_bytes()[:100]), "corrupt"),
        (lambda d: (d / WEIGHTS_NAME).unlink(), "incomplete"),
    ],
)
def test_corrupt_files_are_clear_errors(tmp_path, damage, text):
    save_adapter(trained_toy(), tmp_path / "a")
    damage(tmp_path / "a")
    other = fresh_base()
    before = state(other)
    with pytest.raises(ValueError, match=text):
        load_adapter(other, tmp_path / "a")
    assert not lora_layers(other)
    assert_same_state(other, before)


def test_config_and_tensors_disagreeing_is_corrupt(tmp_path):
    save_adapter(trained_toy(), tmp_path / "a")
    config = json.loads((tmp_path / "a" / CONFIG_NAME).read_text())
    config["target_modules"].append("mid")
    (tmp_path / "a" / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="do not match its config"):
        load_adapter(fresh_base(), tmp_path / "a")


def test_saving_without_lora_or_merged_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no LoRA layers"):
        save_adapter(Toy(), tmp_path / "a")
    model = trained_toy()
    merge_lora(model)
    with pytest.raises(ValueError, match="unmerge_lora"):
        save_adapter(model, tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_loading_never_uses_pickle(tmp_path, monkeypatch):
    save_adapter(trained_toy(), tmp_path / "a")

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr("pickle.load", forbidden)
    monkeypatch.setattr("pickle.loads", forbidden)
    load_adapter(fresh_base(), tmp_path / "a")
