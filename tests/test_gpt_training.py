import json

import pytest
import torch
from safetensors.torch import save_file

from lora_edu import inject_lora, lora_layers, mark_only_lora_trainable
from lora_edu.gpt.data import TASKS, answer_mask, make_world, pack_lines, parse_json_answer, task_examples
from lora_edu.gpt.device import configure_threads, pick_device, precision_for
from lora_edu.gpt.evaluate import answer_loss, answer_rows, answer_scores, exact_match, fact_recall, facts_known, generate_answers, lm_loss
from lora_edu.gpt.finetune import collect_reports, finetune
from lora_edu.gpt.model import GPT, GPTConfig
from lora_edu.gpt.pretrain import PRETRAIN_SIZES, load_pretrained, pretrain, world_for
from lora_edu.gpt.train import TrainConfig, lr_at, make_optimizer, state_bytes, train, trim_padding
from lora_edu.lora.adapter import read_adapter_config


@pytest.fixture(scope="module")
def pretrained():
    return load_pretrained("tiny", "cpu")


def test_world_is_deterministic_and_split():
    a, b = make_world(), make_world()
    assert a.animals == b.animals and a.home == b.home and a.pretraining_lines() == b.pretraining_lines()
    assert not set(a.train_animals) & set(a.test_animals) and not set(a.val_animals) & set(a.train_animals + a.test_animals)
    assert sorted(a.train_animals + a.val_animals + a.test_animals) == a.animals
    assert (len(a.train_animals), len(a.val_animals), len(a.test_animals)) == (24, 8, 16)
    assert make_world(n_val=0).val_animals == [] and make_world(n_val=0).test_animals == a.test_animals  # the test set never moves
    with pytest.raises(ValueError):
        make_world(10, 10)
    with pytest.raises(ValueError):
        make_world(10, 4, n_val=6)


def test_pretraining_corpus_has_json_but_no_animal_json():
    world = make_world()
    lines = world.pretraining_lines()
    json_lines = [line for line in lines if line.startswith("{")]
    assert json_lines and all("animal" not in line for line in json_lines)
    assert all(parse_json_answer(line) is not None for line in json_lines)
    for a in world.test_animals:  # held-out facts are in pretraining, never in a task format
        assert any(f"the {a} lives in the {world.home[a]}" in line for line in lines)
        assert not any(line.startswith(f"json : {a}") for line in lines)
    assert any(f"q : where does the {a} live ? a : the {a}" in line for line in lines for a in world.animals[:1])


def test_tokenizer_round_trip_and_unknown_words():
    world = make_world()
    text = world.target("json", world.animals[0])
    assert world.tokenizer.decode(world.tokenizer.encode(text)) == text
    with pytest.raises(ValueError, match="not in the vocabulary"):
        world.tokenizer.encode("the unicorn")
    a = world.animals[0]
    assert parse_json_answer(text) == {"animal": a, "home": world.home[a], "food": world.food[a]}
    assert parse_json_answer("{ broken") is None


def test_packing_starts_rows_at_line_boundaries():
    world = make_world()
    tok = world.tokenizer
    lines = world.pretraining_lines()[:50]
    rows = pack_lines(lines, tok, 32)
    assert rows.shape[1] == 33
    starts = {tuple(tok.encode(line)[:2]) for line in lines}
    for row in rows.tolist():
        assert tuple(row[:2]) in starts  # every row begins with the start of a line
    with pytest.raises(ValueError, match="does not fit"):
        pack_lines(["the " * 40], tok, 8)


def test_task_rows_mask_the_prompt():
    world = make_world()
    rows = task_examples(world, "json", world.train_animals[:2], 40)
    targets = answer_mask(world, "json", rows)
    ids = world.tokenizer.encode(world.prompt("json", world.train_animals[0]))
    assert (targets[:, : len(ids) - 1] == -100).all()
    assert targets[0, len(ids) - 1] == world.tokenizer.encode("{")[0]
    with pytest.raises(ValueError, match="Unknown task"):
        world.target("yaml", world.animals[0])
    assert TASKS == ("json", "card")


def test_lr_schedule_warms_up_and_decays():
    cfg = TrainConfig(steps=100, lr=1.0, warmup=0.1, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(99, cfg) == pytest.approx(0.1, abs=1e-3)
    assert all(lr_at(s, cfg) >= lr_at(s + 1, cfg) for s in range(10, 99))
    with pytest.raises(ValueError):
        TrainConfig(steps=0)
    with pytest.raises(TypeError, match="must be an int"):
        TrainConfig(steps=1e3)
    with pytest.raises(ValueError, match=r"TrainConfig.lr, the learning rate, must be a finite number, got nan; pass a finite value"):
        TrainConfig(lr=float("nan"))
    with pytest.raises(TypeError, match=r"TrainConfig.lr \(learning rate\) must be a number, got '3e-3'"):
        TrainConfig(lr="3e-3")
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="int8")


@pytest.mark.parametrize("name", ["lr", "warmup", "min_lr_ratio", "weight_decay", "grad_clip"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_hyperparameters_are_value_errors_naming_the_field(name, value):
    with pytest.raises(ValueError, match=rf"TrainConfig.{name}, the .*, must be a finite number, got {value!r}; pass a finite value, "
                                         rf"e.g. {name}=\S+ \(the default\)"):
        TrainConfig(**{name: value})


def tiny_model_and_data():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=12, n_ctx=8, n_layer=1, n_head=2, d_model=16))
    x = torch.randint(1, 12, (16, 8))
    return model, x, x.roll(-1, dims=1)


def test_train_lowers_the_loss_and_reports():
    configure_threads(1)
    model, x, y = tiny_model_and_data()
    res = train(model, x, y, TrainConfig(steps=60, batch_size=8, lr=1e-2, eval_every=20), progress=False, device=torch.device("cpu"))
    assert res.losses[-1] < res.losses[0]
    assert res.steps_done == 60 and res.tokens == 60 * 8 * 8 and res.tokens_per_second > 0
    n = sum(p.numel() for p in model.parameters())
    n_tensors = len(list(model.parameters()))
    assert res.state_bytes == 4 * n * 4 + 4 * n_tensors  # params, grads, two Adam buffers (fp32) and Adam's step counters


def test_train_keeps_the_best_weights_and_saves_the_adapter(tmp_path):
    model, x, y = tiny_model_and_data()
    inject_lora(model, ["q_proj", "v_proj"], r=2, alpha=4)
    mark_only_lora_trainable(model)
    scores = iter([0.5, 0.9, 0.9])  # a tie: the earlier weights are kept
    snapshots = []

    def evaluate(m):
        snapshots.append({n: p.detach().clone() for n, p in m.named_parameters() if p.requires_grad})
        return {"score": next(scores)}

    res = train(model, x, y, TrainConfig(steps=30, batch_size=4, lr=1e-2, eval_every=10), evaluate=evaluate,
                save_dir=tmp_path / "best", progress=False, device=torch.device("cpu"))
    assert res.best_step == 20 and res.best_score == 0.9
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p, snapshots[1][name])  # restored to the best evaluation
    assert read_adapter_config(tmp_path / "best")["r"] == 2


def test_keyboard_interrupt_keeps_the_best_adapter(tmp_path):
    model, x, y = tiny_model_and_data()
    inject_lora(model, ["q_proj"], r=2, alpha=4)
    mark_only_lora_trainable(model)
    calls = {"n": 0}

    def evaluate(m):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the stop button, pressed during the second evaluation
        return {"score": float(calls["n"])}

    res = train(model, x, y, TrainConfig(steps=50, batch_size=4, lr=1e-2, eval_every=10), evaluate=evaluate,
                save_dir=tmp_path / "best", progress=False, device=torch.device("cpu"))
    assert res.interrupted and res.steps_done == 20
    assert (tmp_path / "best" / "adapter_model.safetensors").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no half-written temp dirs


@pytest.mark.parametrize(("keys", "message"), [
    ({"tiebreak_key": "loss"}, r"returned the keys \['accuracy', 'loss'\], without 'score' \(score_key\)"),
    ({"score_key": "accuracy", "tiebreak_key": "val_loss"},
     r"returned the keys \['accuracy', 'loss'\], without 'val_loss' \(tiebreak_key\)"),
])
def test_an_evaluation_without_the_ranking_keys_is_a_clear_error_at_the_first_evaluation(keys, message):
    configure_threads(1)
    model, x, y = tiny_model_and_data()
    calls = []

    def evaluate(m):
        calls.append(1)
        return {"accuracy": 0.5, "loss": 1.0}

    with pytest.raises(ValueError, match=message + r"; return '\w+' from evaluate, or pass \w+_key = one of those keys"):
        train(model, x, y, TrainConfig(steps=20, batch_size=4, eval_every=5), evaluate=evaluate, progress=False,
              device=torch.device("cpu"), **keys)
    assert len(calls) == 1  # the first evaluation, after 5 of 20 steps
    with pytest.raises(TypeError, match="must return a dict of metrics.*it returned float"):
        train(model, x, y, TrainConfig(steps=5, batch_size=4, eval_every=5), evaluate=lambda m: 0.5, progress=False,
              device=torch.device("cpu"))


def test_train_argument_errors():
    model, x, y = tiny_model_and_data()
    with pytest.raises(ValueError, match="same shape"):
        train(model, x, y[:, :-1], TrainConfig(steps=1), progress=False)
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="nothing to train"):
        train(model, x, y, TrainConfig(steps=1), progress=False)
    model.requires_grad_(True)
    with pytest.raises(ValueError, match="no LoRA layers"):
        train(model, x, y, TrainConfig(steps=1), save_dir="x", progress=False)


def test_state_bytes_counts_optimizer_state():
    model, x, y = tiny_model_and_data()
    n = sum(p.numel() for p in model.parameters())
    assert state_bytes(model) == 4 * n


def test_shipped_checkpoint_knows_every_fact(pretrained):
    model, world = pretrained
    tok = world.tokenizer
    prompts = torch.tensor([tok.encode(f"the {a} lives in the") for a in world.animals])
    homes = model.generate(prompts, 1)[:, -1].tolist()
    assert [tok.vocab[i] for i in homes] == [world.home[a] for a in world.animals]
    assert exact_match(model, world, "json", world.test_animals) == 0.0  # it cannot do the task yet
    assert model.config.n_layer == 4 and model.config.vocab_size == len(tok)


def test_fact_recall_free_and_among_the_answers(pretrained):
    model, world = pretrained
    for attribute in ("home", "food"):
        assert fact_recall(model, world, attribute, world.animals) == 1.0  # the pretrained model knows every fact
        assert fact_recall(model, world, attribute, world.animals, among_answers=True) == 1.0
    torch.manual_seed(0)
    untrained = GPT(model.config)
    for attribute in ("home", "food"):  # choosing among the answers never scores below choosing among every word
        free, among = (facts_known(untrained, world, attribute, world.animals, among_answers=m) for m in (False, True))
        assert len(free) == len(world.animals) and all(a for f, a in zip(free, among, strict=True) if f)  # animal by animal
        assert fact_recall(untrained, world, attribute, world.animals) == sum(free) / len(free)
    untrained.train()
    fact_recall(untrained, world, "home", world.animals[:2])
    assert untrained.training  # scored in evaluation mode, then put back as it was
    with pytest.raises(ValueError, match="attribute must be one of"):
        fact_recall(model, world, "colour", world.animals)
    with pytest.raises(ValueError, match="animals is empty"):
        fact_recall(model, world, "home", [])


def test_lm_loss_is_low_on_pretraining_text(pretrained):
    model, world = pretrained
    rows = pack_lines(world.pretraining_lines(seed=123), world.tokenizer, model.config.n_ctx)
    assert lm_loss(model, rows, world.tokenizer.pad_id) < 1.0


def one_pass_agrees_with_generation(model, world) -> tuple[int, int]:
    """Exact match from one teacher-forced pass equals generating and comparing, animal by animal, on both tasks."""
    right = wrong = 0
    for task in TASKS:
        for a in world.animals:
            generated = generate_answers(model, world, task, [a])[0] == world.target(task, a)
            assert exact_match(model, world, task, [a]) == float(generated), (task, a)
            right, wrong = right + generated, wrong + (not generated)
    return right, wrong


def test_exact_match_scores_in_one_pass_what_generation_scores(pretrained):
    model, world = pretrained
    em, loss = answer_scores(model, world, "card", world.animals)
    assert (em, loss) == (exact_match(model, world, "card", world.animals), answer_loss(model, world, "card", world.animals))
    rows = task_examples(world, "card", world.animals, model.config.n_ctx)
    with torch.no_grad():
        assert loss == model.eval()(rows[:, :-1], answer_mask(world, "card", rows))[1].item()  # the answer tokens' mean cross-entropy
    right, losses, same = answer_rows(model, world, "card", world.animals[:5])
    assert len(right) == len(losses) == 5 and same == answer_loss(model, world, "card", world.animals[:5])
    for animal, row_loss in zip(world.animals[:5], losses, strict=True):  # each animal's loss is its own row's loss
        assert row_loss == pytest.approx(answer_loss(model, world, "card", [animal]), rel=1e-5)

    class FirstRowOnly(torch.nn.Module):  # predicts the target of the first row, and <pad> everywhere else
        config = model.config

        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, y):
            logits = torch.zeros(*x.shape, len(world.tokenizer))
            logits[0] = torch.nn.functional.one_hot(y[0].clamp(min=0), len(world.tokenizer)).float()
            return logits, torch.nn.functional.cross_entropy(logits.transpose(1, 2), y)

    assert answer_scores(FirstRowOnly(), world, "card", world.animals[:3])[0] == 1 / 3  # the exact fraction, not a float32 mean
    torch.manual_seed(0)
    right, wrong = one_pass_agrees_with_generation(GPT(model.config), world)  # an untrained model: every row wrong
    assert (right, wrong) == (0, 2 * len(world.animals))


def test_lora_finetune_generalises_and_control_does_not(pretrained):
    configure_threads()
    base, world = pretrained
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model, rep = finetune(base, world, "card", "lora-qv", steps=120, progress=False)
    assert rep.test_exact_match >= 0.9 and rep.trainable == 8192
    assert rep.test_answer_loss == answer_loss(model, world, "card", world.test_animals)  # scored with the test exact match
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in before.items())  # base untouched
    assert generate_answers(model, world, "card", world.test_animals[:1])[0].startswith(world.test_animals[0])
    control_model, control = finetune(base, world, "card", "control", steps=120, progress=False)
    assert control.test_exact_match <= 0.1
    outcomes = [one_pass_agrees_with_generation(m, world) for m in (base, model, control_model)]
    assert sum(right for right, _ in outcomes) >= 50 and sum(wrong for _, wrong in outcomes) >= 50  # both kinds of row seen
    with pytest.raises(ValueError, match="Unknown method"):
        finetune(base, world, "card", "prefix-tuning")


def test_pretrain_command_writes_a_loadable_checkpoint(tmp_path, monkeypatch):
    configure_threads()
    monkeypatch.setenv("LORA_EDU_CACHE", str(tmp_path))
    model, world, res = pretrain("tiny", out=tmp_path / "t.safetensors", steps=3, progress=False)
    assert res.steps_done == 3 and (tmp_path / "t.safetensors").exists()
    with pytest.raises(ValueError, match="python -m lora_edu.gpt.pretrain --size gpu"):
        load_pretrained("gpu")  # not shipped, not in this cache
    (tmp_path / "gpu.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        load_pretrained("gpu")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "gpu.safetensors"))  # valid safetensors, none of our metadata
    with pytest.raises(ValueError, match=r"without lora_edu's metadata \(config, world missing\).*--size gpu"):
        load_pretrained("gpu")


def test_gpu_configuration_builds(tmp_path):
    spec = PRETRAIN_SIZES["gpu"]
    world = world_for("gpu")
    with torch.device("meta"):
        model = GPT(spec.model.with_vocab(len(world.tokenizer)))
    n = sum(p.numel() for p in model.parameters())
    assert n > 25_000_000
    longest = max(len(world.tokenizer.encode(world.prompt("json", a) + " " + world.target("json", a))) for a in world.animals)
    assert longest < spec.model.n_ctx
    assert json.loads(json.dumps(spec.model.to_dict()))["d_model"] == 512


def test_pick_device_and_threads(monkeypatch):
    monkeypatch.setenv("LORA_EDU_DEVICE", "cpu")
    assert pick_device().type == "cpu"
    monkeypatch.setenv("LORA_EDU_THREADS", "1")
    assert configure_threads() == 1 and torch.get_num_threads() == 1
    monkeypatch.setenv("LORA_EDU_THREADS", "many")
    with pytest.raises(ValueError, match="LORA_EDU_THREADS"):
        configure_threads()
    monkeypatch.delenv("LORA_EDU_THREADS")
    assert configure_threads() >= 1
    assert not lora_layers(GPT(GPTConfig(vocab_size=5, n_ctx=4, n_layer=1, n_head=1, d_model=4)))


def test_gpu_size_pipeline_runs_end_to_end_on_cpu(tmp_path, monkeypatch):
    """What a notebook does on a GPU (size "gpu"), shortened to a few steps so that it runs on a CPU."""
    from lora_edu.gpt.pretrain import ensure_pretrained

    configure_threads()
    monkeypatch.setenv("LORA_EDU_CACHE", str(tmp_path))
    short = {"steps": 2, "epochs": 1, "batch_size": 4, "n_animals": 24, "n_heldout": 8}  # the gpu model, a small world
    monkeypatch.setitem(PRETRAIN_SIZES, "gpu", PRETRAIN_SIZES["gpu"].__class__(**{**PRETRAIN_SIZES["gpu"].__dict__, **short}))
    base, world = ensure_pretrained("gpu", "cpu")  # no checkpoint yet: pretrains one into the cache
    assert (tmp_path / "gpu.safetensors").exists() and base.config.d_model == 512
    model, rep = finetune(base, world, "json", "lora-qv", steps=2, batch_size=4, save_dir=tmp_path / "adapter", progress=False)
    assert rep.trainable == 8 * 2 * 8 * (512 + 512) and 0.0 <= rep.test_exact_match <= 1.0 and 0.0 <= rep.val_exact_match <= 1.0
    assert len(rep.val_right) == len(world.val_animals) and rep.val_exact_match == sum(rep.val_right) / len(rep.val_right)
    assert len(rep.test_answer_losses) == len(world.test_animals) and all(loss > 0 for loss in rep.test_answer_losses)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_gpu_precision_paths_train_on_cpu(precision):
    """The CUDA configurations' training step (bf16 autocast; fp16 autocast with the gradient scaler), run on a CPU."""
    configure_threads(1)
    torch.manual_seed(0)
    spec = PRETRAIN_SIZES["gpu"]
    model = GPT(GPTConfig(**{**spec.model.to_dict(), "n_layer": 2, "vocab_size": 64}))  # the gpu width, 2 layers: seconds on a CPU
    x = torch.randint(1, 64, (32, 16))
    res = train(model, x, x.roll(-1, dims=1), TrainConfig(steps=12, batch_size=8, lr=1e-3, precision=precision),
                progress=False, device=torch.device("cpu"))
    assert res.precision == precision and all(torch.isfinite(torch.tensor(res.losses)))
    assert sum(res.losses[-3:]) < sum(res.losses[:3])


def test_precision_follows_the_device():
    from lora_edu.gpt import device

    assert precision_for is device.precision_for  # it lives in device; train re-exports it
    assert precision_for(torch.device("cpu")) == "fp32"
    assert precision_for(torch.device("meta")) == "fp32"


def test_the_gpt_wing_imports_no_wing_above_it_and_device_imports_no_training():
    import ast
    from pathlib import Path

    import lora_edu.gpt

    for path in Path(lora_edu.gpt.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        modules = {"." * n.level + (n.module or "") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        above = {m for m in modules if any(w in m.split(".") for w in ("paper", "scale", "course")) and m.startswith((".", "lora_edu"))}
        assert not above, f"{path.name} imports {above}"
        if path.name == "device.py":
            assert not {m for m in modules if m.startswith(".")}, f"device.py imports {modules}"


def test_the_optimizer_is_fused_on_the_gpu_path_only():
    params = [torch.nn.Parameter(torch.ones(3))]
    cpu = torch.device("cpu")
    assert not make_optimizer(params, TrainConfig(), cpu).defaults["fused"]  # the notebooks' CPU numbers: torch's default
    assert make_optimizer(params, TrainConfig(gpu_path_on_cpu=True), cpu).defaults["fused"]  # the CUDA path, on a CPU
    assert not make_optimizer(params, TrainConfig(gpu_path_on_cpu=True), cpu, fused=False).defaults["fused"]  # e.g. FSDP's DTensors
    recordable = make_optimizer(params, TrainConfig(lr=0.5), cpu, [{"params": params, "lr": 2.0}], recordable=True)
    assert torch.is_tensor(recordable.param_groups[0]["lr"]) and recordable.param_groups[0]["lr_scale"] == 4.0


def test_padding_is_trimmed_and_throughput_counts_every_token():
    configure_threads(1)
    model, x, y = tiny_model_and_data()
    y = y.clone()
    y[:, 5:] = -100  # the last 3 columns have no target: a causal model need not compute them
    xt, yt = trim_padding(x, y)
    assert xt.shape == (16, 5) and torch.equal(yt, y[:, :5])
    res = train(model, x, y, TrainConfig(steps=10, batch_size=4, lr=1e-2), progress=False, device=torch.device("cpu"))
    assert res.tokens == 10 * 4 * 5 and res.supervised_tokens == 10 * 4 * 5 and res.train_seconds <= res.seconds


def test_a_users_folder_as_save_dir_is_refused_before_training(tmp_path):
    model, x, y = tiny_model_and_data()
    inject_lora(model, ["q_proj"], r=2, alpha=4)
    mark_only_lora_trainable(model)
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.tex").write_text("mine")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match="not an adapter directory"):
        train(model, x, y, TrainConfig(steps=5, batch_size=4), save_dir=thesis, progress=False, device=torch.device("cpu"))
    assert (thesis / "chapter1.tex").read_text() == "mine"
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # not a single step was taken


def test_the_after_training_line_shows_minutes_throughput_memory_and_mfu(monkeypatch):
    from lora_edu.gpt import train as train_module
    from lora_edu.gpt.train import TrainResult

    res = TrainResult(steps_done=400, seconds=90.0, train_seconds=80.0, tokens=8_000_000, flops=8e14, peak_cuda_bytes=347 * 2**20,
                      precision="bf16")
    monkeypatch.setattr(train_module, "peak_flops", lambda device: 989e12 if device.type == "cuda" else None)
    line = res.summary(torch.device("cuda"))
    assert line == ("400 steps in 1.50 min = 90.0 s (bf16) | 100,000 tokens/s | 10 TFLOP/s | peak memory 347 MiB | MFU 1.0%")
    assert res.mfu(torch.device("cuda")) == pytest.approx(1e13 / 989e12)
    cpu = res.summary(torch.device("cpu"))
    assert cpu == "400 steps in 1.50 min = 90.0 s (bf16) | 100,000 tokens/s" and res.mfu(torch.device("cpu")) is None


def test_collect_reports_gathers_every_finetune_inside_the_block_only(pretrained):
    base, world = pretrained
    with collect_reports() as outer:
        _, first = finetune(base, world, "json", "lora-qv", steps=2, batch_size=4, progress=False, score_all=False)
        with collect_reports() as inner:
            _, second = finetune(base, world, "json", "full", steps=2, batch_size=4, progress=False, score_all=False)
    finetune(base, world, "json", "lora-qv", steps=1, batch_size=4, progress=False, score_all=False)  # after: not collected
    assert outer == [first, second] and inner == [second]


def test_full_linear_trains_exactly_the_matrices_lora_all_adapts():
    from lora_edu.gpt.finetune import prepare
    from lora_edu.gpt.model import GPT, GPT_SIZES

    base = GPT(GPT_SIZES["tiny"])
    linear = prepare(base, "full-linear", r=8, alpha=16, seed=0)
    lora = prepare(base, "lora-all", r=8, alpha=16, seed=0)
    trained = {n for n, p in linear.named_parameters() if p.requires_grad}
    adapted = {n.rsplit(".lora_", 1)[0] + ".weight" for n, p in lora.named_parameters() if p.requires_grad}
    assert trained == adapted and len(trained) == 6 * base.config.n_layer  # Wq, Wk, Wv, Wo, fc_in, fc_out per block
    assert not linear.wte.weight.requires_grad  # the token embedding, which the output layer reuses, stays frozen
    assert sum(p.numel() for p in linear.parameters() if p.requires_grad) == 12 * base.config.n_layer * base.config.d_model ** 2


def test_the_held_out_pretraining_text_splits_into_facts_and_filler():
    from lora_edu.gpt.data import make_world
    from lora_edu.gpt.pretrain import pretraining_eval_rows

    world = make_world()
    held = world.heldout_text
    assert len(held.facts) == len(world.animals) and held.filler and not set(held.facts) & set(held.filler)
    rows = {part: pretraining_eval_rows(world, 32, part) for part in ("all", "facts", "filler")}
    tokens = {part: int((r != world.tokenizer.pad_id).sum()) for part, r in rows.items()}
    assert tokens["all"] == tokens["facts"] + tokens["filler"]  # the two parts are the whole, no line lost or shared
    with pytest.raises(ValueError, match="part must be"):
        pretraining_eval_rows(world, 32, "animals")


def test_track_forgetting_records_the_held_out_loss_at_every_evaluation(pretrained):
    from lora_edu.gpt.evaluate import lm_loss
    from lora_edu.gpt.pretrain import pretraining_eval_rows

    base, world = pretrained
    model, rep = finetune(base, world, "json", "full", steps=4, batch_size=4, lr=3e-3, progress=False, track_forgetting=True)
    steps = [step for step, _ in rep.result.evals]
    assert steps == [1, 2, 3, 4] and all("held_out" in scores for _, scores in rep.result.evals)
    kept = dict(rep.result.evals)[rep.best_step]["held_out"]  # the best checkpoint's evaluation is the model returned
    assert kept == pytest.approx(lm_loss(model, pretraining_eval_rows(world, base.config.n_ctx), world.tokenizer.pad_id), rel=1e-5)
    assert kept == pytest.approx(rep.pretrain_loss, rel=1e-5)
    _, plain = finetune(base, world, "json", "full", steps=2, batch_size=4, progress=False, score_all=False)
    assert all("held_out" not in scores for _, scores in plain.result.evals)  # off by default: it costs a pass per evaluation


def test_finetune_evaluates_on_the_grid_asked_for(pretrained):
    base, world = pretrained
    _, every_6 = finetune(base, world, "json", "lora-qv", steps=12, batch_size=4, progress=False, score_all=False)
    _, every_3 = finetune(base, world, "json", "lora-qv", steps=12, batch_size=4, progress=False, score_all=False, eval_every=3)
    assert [step for step, _ in every_6.result.evals] == [2, 4, 6, 8, 10, 12]  # six times a run, by default
    assert [step for step, _ in every_3.result.evals] == [3, 6, 9, 12]
    for bad in (0, 13, 2.5, True):
        with pytest.raises(ValueError, match="eval_every must be a whole number of steps from 1 to steps"):
            finetune(base, world, "json", "lora-qv", steps=12, batch_size=4, progress=False, eval_every=bad)


def test_finetune_can_keep_the_checkpoint_with_the_lowest_validation_answer_loss(pretrained):
    base, world = pretrained
    _, rep = finetune(base, world, "json", "lora-qv", steps=12, batch_size=4, lr=3e-2, progress=False, score_all=False,
                      eval_every=2, checkpoint_by="answer loss")
    losses = {step: scores["val_loss"] for step, scores in rep.result.evals}
    assert rep.best_step == min(losses, key=lambda step: (losses[step], step))  # the lowest loss, the earlier on a tie
    assert rep.val_exact_match == dict(rep.result.evals)[rep.best_step]["val"]  # what the kept weights scored
    assert rep.val_answer_loss == pytest.approx(losses[rep.best_step], rel=1e-5)
    with pytest.raises(ValueError, match="checkpoint_by must be one of"):
        finetune(base, world, "json", "lora-qv", steps=2, batch_size=4, progress=False, checkpoint_by="accuracy")
