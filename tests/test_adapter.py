import json
import os
import shutil
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lora_edu import base_fingerprint, inject_lora, load_adapter, lora_layers, merge_lora, read_adapter_config, save_adapter
from lora_edu.lora import atomic_dir
from lora_edu.lora.adapter import CONFIG_NAME, WEIGHTS_NAME, check_save_path

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


def assert_refused(directory, text: str, model=None) -> None:
    """Loading ``directory`` into ``model`` (a fresh base) raises a ValueError matching ``text`` and changes nothing."""
    model = fresh_base() if model is None else model
    before, layers = state(model), set(lora_layers(model))
    with pytest.raises(ValueError, match=text):
        load_adapter(model, directory)
    assert set(lora_layers(model)) == layers
    assert_same_state(model, before)


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

    monkeypatch.setattr("lora_edu.lora.adapter.save_file", interrupted)
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
    assert_refused(tmp_path / "a", "Shape mismatch for 'blocks.0.q_proj'", Toy(d=8))


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
    assert_refused(tmp_path / "a", text)


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


# --- a save never destroys what is not an adapter ---------------------------------------------------------------


def test_save_refuses_a_file_and_a_foreign_folder(tmp_path):
    model = trained_toy()
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is a file, not an adapter directory"):
        save_adapter(model, tmp_path / "notes.txt")
    assert (tmp_path / "notes.txt").read_text() == "mine"
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.tex").write_text("years of work")
    with pytest.raises(ValueError, match="not an adapter directory .*'chapter1.tex'"):
        save_adapter(model, thesis)
    (thesis / CONFIG_NAME).write_text('{"peft_type": "LORA"}')  # an adapter's file among the user's is still the user's folder
    with pytest.raises(ValueError, match="not an adapter directory"):
        save_adapter(model, thesis)
    assert sorted(os.listdir(thesis)) == [CONFIG_NAME, "chapter1.tex"]
    assert sorted(os.listdir(tmp_path)) == ["notes.txt", "thesis"]  # no hidden leftovers


def test_save_refuses_a_path_inside_a_file_or_through_a_symlink(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="notes.txt' is a file, so .* cannot be a directory inside it"):
        save_adapter(trained_toy(), tmp_path / "notes.txt" / "adapter")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="symbolic link"):
        save_adapter(trained_toy(), tmp_path / "link")
    assert (tmp_path / "notes.txt").read_text() == "mine" and sorted(os.listdir(tmp_path)) == ["elsewhere", "link", "notes.txt"]


def test_the_save_path_can_be_checked_before_a_long_run(tmp_path):
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "chapter1.tex").write_text("years of work")
    with pytest.raises(ValueError, match="not an adapter directory"):
        check_save_path(tmp_path / "thesis")
    assert check_save_path(tmp_path / "new" / "adapter") == tmp_path / "new" / "adapter"
    assert not (tmp_path / "new").exists()


def test_adapters_in_named_subfolders_are_pointed_to(tmp_path):
    save_adapter(trained_toy(), tmp_path / "run" / "json")
    with pytest.raises(ValueError, match="adapters in subfolders \\['json'\\].*pass one of them"):
        load_adapter(fresh_base(), tmp_path / "run")


def test_save_refuses_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    for path in (".", "..", ""):
        with pytest.raises(ValueError, match="current directory"):
            save_adapter(trained_toy(), path)
    assert os.listdir(tmp_path) == ["work"] and os.listdir(tmp_path / "work") == []


def test_save_into_an_empty_folder_and_keep_peft_model_card(tmp_path):
    (tmp_path / "a").mkdir()
    save_adapter(trained_toy(), tmp_path / "a")
    (tmp_path / "a" / "README.md").write_text("model card")
    second = trained_toy()
    randomize_b(second)
    save_adapter(second, tmp_path / "a")
    assert sorted(os.listdir(tmp_path / "a")) == ["README.md", CONFIG_NAME, WEIGHTS_NAME]
    assert (tmp_path / "a" / "README.md").read_text() == "model card"
    model = fresh_base()
    load_adapter(model, tmp_path / "a")
    x = torch.randn(2, 16)
    assert torch.equal(model(x), second(x))


def test_save_fsyncs_files_and_directories(tmp_path, monkeypatch):
    synced = []
    real = atomic_dir.fsync_path
    monkeypatch.setattr(atomic_dir, "fsync_path", lambda p: (synced.append(p.name if p.is_file() else "dir"), real(p)))
    save_adapter(trained_toy(), tmp_path / "a")
    assert {CONFIG_NAME, WEIGHTS_NAME} <= set(synced) and synced.count("dir") >= 2  # the new directory and its parent


def interrupt_at(monkeypatch, target: str, k: int) -> None:
    """Make the k-th call of ``lora_edu.lora.atomic_dir.<target>`` raise KeyboardInterrupt instead of running."""
    real, calls = getattr(atomic_dir, target), []

    def fake(*args, **kwargs):
        calls.append(1)
        if len(calls) == k:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(atomic_dir, target, fake)


STEPS = ["write", "fsync_path:1", "fsync_path:3", "fsync_path:4", "fsync_path:5", "exchange:1"]


@pytest.mark.parametrize("step, atomic_swap", [(s, True) for s in STEPS] + [(s, False) for s in STEPS + ["replace:1", "replace:2"]])
def test_interrupted_save_leaves_one_complete_adapter_and_no_litter(tmp_path, monkeypatch, step, atomic_swap):
    first = trained_toy()
    save_adapter(first, tmp_path / "a")
    second = trained_toy()
    randomize_b(second)
    if not atomic_swap:  # the two-rename fallback of platforms without an atomic exchange
        monkeypatch.setattr(atomic_dir, "libc_swap", lambda: None)
    if step == "write":
        monkeypatch.setattr("lora_edu.lora.adapter.save_file", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    elif step.startswith("replace"):  # the fallback's first rename (old aside) or second (new in place)
        real, calls = os.replace, []

        def replace(*args):
            calls.append(1)
            if len(calls) == int(step[-1]):
                raise KeyboardInterrupt
            return real(*args)

        monkeypatch.setattr(atomic_dir.os, "replace", replace)
    else:
        name, k = step.split(":")
        interrupt_at(monkeypatch, name, int(k))
    with pytest.raises(KeyboardInterrupt):
        save_adapter(second, tmp_path / "a")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["a"]
    model = fresh_base()
    load_adapter(model, tmp_path / "a")
    x = torch.randn(2, 16)
    assert torch.equal(model(x), first(x)) or torch.equal(model(x), second(x))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
def test_exchange_is_one_atomic_syscall_on_linux(tmp_path, monkeypatch):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    (tmp_path / "x" / "1").write_text("x")
    monkeypatch.setattr(atomic_dir.os, "replace", lambda *a: pytest.fail("fell back to two renames"))
    atomic_dir.exchange(tmp_path / "x", tmp_path / "y")
    assert os.listdir(tmp_path / "y") == ["1"] and os.listdir(tmp_path / "x") == []


def test_leftovers_of_a_killed_save_are_swept_but_user_folders_are_not(tmp_path):
    save_adapter(trained_toy(), tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / ".a.lora_edu-new-killed")
    (tmp_path / ".a.lora_edu-mine").mkdir()
    (tmp_path / ".a.lora_edu-mine" / "diary.txt").write_text("keep")
    save_adapter(trained_toy(), tmp_path / "a")
    assert sorted(os.listdir(tmp_path)) == [".a.lora_edu-mine", "a"]


# --- every load checks everything before changing anything -------------------------------------------------------


def edit_config(directory, change) -> None:
    path = directory / CONFIG_NAME
    config = json.loads(path.read_text())
    path.write_text(json.dumps(change(config)))


@pytest.mark.parametrize(
    "change, text",
    [
        (lambda c: None, "must hold a JSON object, got None"),
        (lambda c: 5, "must hold a JSON object, got 5"),
        (lambda c: {**c, "peft_type": "IA3"}, "peft_type is 'IA3'"),
        (lambda c: {**c, "r": "2"}, "r must be a positive integer, got '2' \\(str\\)"),
        (lambda c: {**c, "r": True}, "r must be a positive integer"),
        (lambda c: {**c, "lora_alpha": float("nan")}, "lora_alpha must be a positive finite number"),
        (lambda c: {**c, "target_modules": 5}, "target_modules must be a list of module names"),
        (lambda c: {**c, "target_modules": None}, "target_modules must be a list"),
        (lambda c: {**c, "target_modules": "("}, "not a valid regular expression"),
        (lambda c: {**c, "rank_pattern": {"blocks.1.q_proj": 0}}, "rank_pattern\\['blocks.1.q_proj'\\] must be a positive integer"),
        (lambda c: {**c, "rank_pattern": {"blocks.1.q_proj": 40}}, "rank_pattern gives 'blocks.1.q_proj' rank 40, above min"),
        (lambda c: {**c, "alpha_pattern": {"v_proj": -1}}, "alpha_pattern\\['v_proj'\\] must be a positive finite number"),
        (lambda c: {**c, "alpha_pattern": ["v_proj"]}, "alpha_pattern must be an object"),
        (lambda c: {**c, "use_rslora": "yes"}, "use_rslora must be true or false"),
        (lambda c: {**c, "lora_dropout": 1.5}, "lora_dropout must be a probability"),
        (lambda c: {**c, "use_dora": True}, "use_dora is true"),
        (lambda c: {**c, "init_lora_weights": "pissa"}, "init_lora_weights is 'pissa'"),
        (lambda c: {**c, "some_future_feature": {"on": 1}}, "some_future_feature is"),
        (lambda c: {**c, "target_modules": ["k_proj"]}, "target_modules \\['k_proj'\\] selects no module"),
        (lambda c: {**c, "target_modules": ["norm"]}, "selects 'blocks.0.norm', a LayerNorm"),
    ],
)
def test_bad_configs_name_the_field_and_change_nothing(tmp_path, change, text):
    save_adapter(trained_toy(), tmp_path / "a")
    edit_config(tmp_path / "a", change)
    assert_refused(tmp_path / "a", text)


def test_null_sections_mean_none(tmp_path):
    model = trained_toy()
    save_adapter(model, tmp_path / "a")
    edit_config(tmp_path / "a", lambda c: {**c, "rank_pattern": None, "alpha_pattern": None, "exclude_modules": None, "lora_dropout": None})
    other = fresh_base()
    load_adapter(other, tmp_path / "a")
    x = torch.randn(2, 16)
    assert torch.equal(other(x), model(x))


@pytest.mark.parametrize(
    "tensor, text",
    [(torch.full((2, 16), float("nan")), "contains NaN or inf"), (torch.full((2, 16), float("inf")), "contains NaN or inf"),
     (torch.ones(2, 16, dtype=torch.int64), "dtype torch.int64")],
)  # fmt: skip
def test_bad_factor_values_are_refused(tmp_path, tensor, text):
    save_adapter(trained_toy(), tmp_path / "a")
    path = tmp_path / "a" / WEIGHTS_NAME
    tensors = load_file(str(path))
    tensors["base_model.model.blocks.0.q_proj.lora_A.weight"] = tensor
    save_file(tensors, str(path))
    assert_refused(tmp_path / "a", text)


def test_rslora_adapter_into_a_layer_without_rslora_is_an_error(tmp_path):
    torch.manual_seed(0)
    model = Toy()
    inject_lora(model, ["q_proj"], r=4, alpha=8, use_rslora=True)
    randomize_b(model)
    save_adapter(model, tmp_path / "a")
    other = fresh_base()
    inject_lora(other, ["q_proj"], r=4, alpha=8)
    assert_refused(tmp_path / "a", "use_rslora=False but the adapter has r=4, alpha=8, use_rslora=True", other)


def test_base_in_another_dtype_is_named(tmp_path):
    save_adapter(trained_toy(), tmp_path / "a")
    with pytest.raises(ValueError, match="trained on a base model in float32, but this model's weights are float64"):
        load_adapter(fresh_base().double(), tmp_path / "a")


def test_adapters_of_the_earlier_format_still_load(tmp_path):
    model = trained_toy()
    save_adapter(model, tmp_path / "a")
    fingerprint = base_fingerprint(model)
    edit_config(tmp_path / "a", lambda c: {**c, "task_type": "CAUSAL_LM", "lora_edu": {"base_fingerprint": fingerprint}})
    path = tmp_path / "a" / WEIGHTS_NAME
    save_file(load_file(str(path)), str(path), metadata={"format": "pt"})
    other = fresh_base()
    load_adapter(other, tmp_path / "a")
    x = torch.randn(2, 16)
    assert torch.equal(other(x), model(x))
    with pytest.raises(ValueError, match="other weights"):
        load_adapter(fresh_base(seed=3), tmp_path / "a")


def test_save_refuses_what_peft_could_not_represent(tmp_path):
    model = trained_toy()
    with pytest.raises(ValueError, match="task_type='CAUSAL_LM' makes PEFT wrap"):
        save_adapter(model, tmp_path / "a", task_type="CAUSAL_LM")
    with pytest.raises(ValueError, match="task_type must be None or one of"):
        save_adapter(model, tmp_path / "a", task_type="causal")
    with torch.no_grad():
        lora_layers(model)["blocks.1.v_proj"].lora_B[0, 0] = float("nan")
    with pytest.raises(ValueError, match="blocks.1.v_proj.lora_B contains NaN"):
        save_adapter(model, tmp_path / "a")
    mixed = fresh_base()
    inject_lora(mixed, ["q_proj"], r=2, alpha=2, use_rslora=True)
    inject_lora(mixed, ["v_proj"], r=2, alpha=2)
    with pytest.raises(ValueError, match="use_rslora is one flag"):
        save_adapter(mixed, tmp_path / "a")
    assert not (tmp_path / "a").exists()
