"""Gradient accumulation, the torchrun script (DDP with a byte-counting hook, FSDP2) and the communication arithmetic."""

import json
import subprocess

import pytest
import torch

from lora_edu.gpt.data import task_data
from lora_edu.gpt.finetune import prepare
from lora_edu.lora.layer import count_parameters
from lora_edu.maths.arch import ARCHITECTURES, lora_parameter_count, weight_shapes
from lora_edu.scale import distributed
from lora_edu.scale.distributed import (
    DistributedConfig,
    accumulated_step,
    allreduce_bytes,
    check_backend,
    launch,
    main,
    outer_weights,
    per_rank_bytes,
    relative_gradient_error,
    ring_allreduce_seconds,
    run,
    saved_activation_bytes,
    workers_output,
    write_json,
)


def test_accumulated_gradients_equal_one_big_batch(tiny):
    base, world = tiny
    model = prepare(base, "lora-qv", r=8, alpha=16, seed=0, targets=None)
    x, y = task_data(world, "json", world.animals, base.config.n_ctx)
    x, y = x[:16], y[:16]
    y[0, 20:] = -100  # unequal target counts per row: the token weighting must still make it exact
    one = accumulated_step(model, x, y, 1)
    four = accumulated_step(model, x, y, 4)
    assert one.grads.keys() == four.grads.keys() and len(one.grads) == 16
    for name, g in one.grads.items():
        torch.testing.assert_close(four.grads[name], g, rtol=1e-4, atol=1e-6)
    assert abs(one.loss - four.loss) < 1e-5
    assert 3.5 < one.activation_bytes / four.activation_bytes < 4.5  # a quarter of the activations alive at once
    assert relative_gradient_error(four.grads, one.grads) < 1e-5
    doubled = {name: 2 * g for name, g in one.grads.items()}
    assert relative_gradient_error(doubled, one.grads) == pytest.approx(1.0)  # twice the gradient: off by all of it


def test_saved_activation_bytes_counts_what_backward_keeps():
    w = torch.randn(8, 8, requires_grad=True)
    x = torch.randn(100, 8)
    out, nbytes = saved_activation_bytes(lambda: torch.tanh(x @ w))
    assert out.shape == (100, 8)
    assert nbytes == 100 * 8 * 4 * 2  # x for the matmul's weight gradient, tanh's output for its own


@pytest.mark.parametrize("k, message", [(3, "does not split into 3"), (0, "positive int"), (True, "positive int")])
def test_accumulation_rejects_bad_micro_batches(tiny, k, message):
    base, world = tiny
    x, y = task_data(world, "json", world.animals[:8], base.config.n_ctx)
    with pytest.raises(ValueError, match=message):
        accumulated_step(prepare(base, "lora-qv", r=8, alpha=16, seed=0, targets=None), x, y, k)


def test_single_process_run_without_torchrun(tiny):
    result = run(DistributedConfig("lora-qv", steps=3, batch_size=8))
    assert result["world_size"] == 1 and result["strategy"] == "single"
    assert len(result["losses"]) == 3 and result["losses"][-1] < result["losses"][0]
    assert result["allreduce_bytes_per_step"] == 0  # nothing crosses a wire
    assert result["trainable"] == 4 * 2 * 8 * (64 + 64)


def test_torchrun_two_processes_match_one_and_lora_sends_the_trainable_fraction(tmp_path):
    out = tmp_path / "two.json"
    args = ["--steps", "4", "--batch-size", "8", "--strategies", "ddp", "fsdp", "--backend", "gloo", "--json", str(out)]
    proc = launch(2, args)
    payload = json.loads(out.read_text())
    runs = {(r["method"], r["strategy"]): r for r in payload["runs"]}
    assert payload["world_size"] == 2 and payload["backend"] == "gloo" and len(runs) == 4
    lora, full = runs["lora-qv", "ddp"], runs["full", "ddp"]
    # bytes on the wire: exactly the trainable parameters' fp32 gradients, so the ratio is LoRA's fraction of the base
    assert lora["allreduce_bytes_per_step"] == 4 * lora["trainable"]
    assert full["allreduce_bytes_per_step"] == 4 * full["trainable"] == 4 * full["total"]
    assert lora["allreduce_bytes_per_step"] / full["allreduce_bytes_per_step"] == lora["trainable"] / full["trainable"]
    # the same loss curve as one process with the same global batch
    for method in ("lora-qv", "full"):
        single = run(DistributedConfig(method, steps=4, batch_size=8))["losses"]
        for strategy in ("ddp", "fsdp"):
            assert runs[method, strategy]["losses"] == pytest.approx(single, rel=1e-5, abs=1e-5)
    # FSDP2 holds half of the parameters per rank; DDP all of them
    for method in ("lora-qv", "full"):
        assert runs[method, "ddp"]["param_bytes_per_rank"] == runs[method, "ddp"]["param_bytes_replicated"]
        half = runs[method, "ddp"]["param_bytes_per_rank"] / 2  # FSDP pads a dimension that does not split evenly
        assert half <= runs[method, "fsdp"]["param_bytes_per_rank"] <= 1.01 * half
    # and so are the trainable factors (with their gradients and Adam states): LoRA's A and B split evenly
    assert runs["lora-qv", "fsdp"]["trainable_bytes_per_rank"] * 2 == runs["lora-qv", "ddp"]["trainable_bytes_per_rank"]
    assert "bytes ratio lora-qv / full" in proc.stdout
    # what FSDP moves instead: every step gathers the whole model at least once (blocks twice: forward and backward),
    # so with LoRA it gathers the frozen base, far more than DDP's all-reduce of LoRA's gradients
    for method in ("lora-qv", "full"):
        fsdp = runs[method, "fsdp"]
        copy = fsdp["param_bytes_replicated"]
        assert copy <= fsdp["all_gather_bytes_per_step"] <= 2.02 * copy  # padding: at most 1% per gather
        assert fsdp["allreduce_bytes_per_step"] == 0
    assert runs["lora-qv", "fsdp"]["all_gather_bytes_per_step"] > 20 * lora["allreduce_bytes_per_step"]
    assert 4 * full["trainable"] <= runs["full", "fsdp"]["reduce_scatter_bytes_per_step"] <= 1.01 * 4 * full["trainable"]
    assert runs["lora-qv", "fsdp"]["reduce_scatter_bytes_per_step"] <= 1.01 * 4 * lora["trainable"]
    assert "all-gathered" in proc.stdout


def test_world_size_that_does_not_divide_the_batch():
    # each worker prints the error and exits 2; launch() raises it (torchrun itself exits 1)
    with pytest.raises(RuntimeError, match="error: The global batch of 7 rows does not split evenly over 2 processes"):
        launch(2, ["--steps", "1", "--batch-size", "7", "--methods", "lora-qv", "--backend", "gloo"])
    with pytest.raises(ValueError, match="nproc must be a positive int"):
        launch(0, [])


TORCHRUN_REPORT = """terminate called after throwing an instance of 'gloo::IoException'
  what():  Connection reset by peer
E1205 12:12:07 api.py:1002] failed (exitcode: -6) local_rank: 0 (pid: 13044) of binary: python
Traceback (most recent call last):
  File "run.py", line 1032, in <module>
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
  exitcode  : -6 (pid: 13044)  (SIGABRT)
"""


def test_a_worker_killed_by_a_signal_is_tried_again_and_reported_with_what_it_printed(monkeypatch):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(kwargs["env"])
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr=TORCHRUN_REPORT)

    monkeypatch.setattr(distributed.subprocess, "run", fake_run)
    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    with pytest.raises(RuntimeError, match="(?s)failed 3 times.*what\\(\\):  Connection reset by peer") as info:
        launch(2, ["--steps", "1"])
    assert len(calls) == 3 and all(env["GLOO_SOCKET_IFNAME"] == "lo" for env in calls)
    assert "Traceback" not in str(info.value)  # torchrun's own traceback says nothing the workers did not
    assert workers_output("no report at all") == "no report at all"
    with pytest.raises(ValueError, match="tries must be a positive int"):
        launch(2, [], tries=0)


def test_a_script_error_is_not_tried_again(monkeypatch):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="error: bad batch\nerror: bad batch\n")

    monkeypatch.setattr(distributed.subprocess, "run", fake_run)
    with pytest.raises(RuntimeError, match="^error: bad batch$"):
        launch(2, [])
    assert len(calls) == 1


def test_nccl_without_gpus_is_a_clear_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has GPUs")
    with pytest.raises(ValueError, match="needs CUDA GPUs.*--backend gloo"):
        check_backend("nccl")
    assert main(["--backend", "nccl", "--steps", "1"]) == 2
    assert "backend 'nccl' needs CUDA GPUs" in capsys.readouterr().err


def test_more_processes_than_gpus_with_nccl_is_a_clear_error():
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU (without one, NCCL is refused earlier, see above)")
    with pytest.raises(RuntimeError, match="NCCL needs one GPU per process"):
        launch(torch.cuda.device_count() + 1, ["--steps", "1", "--batch-size", "8", "--backend", "nccl"])


def test_script_without_torchrun_runs_one_process(tmp_path, capsys):
    out = tmp_path / "one.json"
    assert main(["--steps", "2", "--batch-size", "4", "--methods", "lora-qv", "--backend", "gloo", "--json", str(out)]) == 0
    captured = capsys.readouterr()
    assert "Not launched by torchrun" in captured.err and "world size 1" in captured.out
    assert json.loads(out.read_text())["runs"][0]["world_size"] == 1


def test_json_output_never_overwrites_a_foreign_file(tmp_path):
    foreign = tmp_path / "notes.json"
    foreign.write_text('{"mine": 1}')
    with pytest.raises(ValueError, match="not a result of this script"):
        write_json(foreign, {"runs": []})
    assert foreign.read_text() == '{"mine": 1}'


def test_bad_config_values():
    with pytest.raises(ValueError, match="Unknown method"):
        DistributedConfig("lora-xyz")
    with pytest.raises(ValueError, match="Unknown strategy"):
        DistributedConfig(strategy="pipeline")
    with pytest.raises(ValueError, match="positive"):
        DistributedConfig(steps=0)


def test_communication_arithmetic_at_gpt3_size():
    gpt3 = ARCHITECTURES["GPT-3 175B"]
    lora = allreduce_bytes(gpt3, 4, ("q", "v"), "fp16")
    assert lora == 2 * lora_parameter_count(gpt3, 4, ("q", "v")) == 2 * 96 * 2 * 4 * (12288 + 12288)
    full = allreduce_bytes(gpt3, None, grad_dtype="fp16")
    assert 340e9 < full < 360e9 and 30e6 < lora < 40e6  # the paper's 350 GB -> 35 MB
    assert ring_allreduce_seconds(1e9, 1, 1e9) == 0.0
    assert ring_allreduce_seconds(1e9, 2, 1e9) == pytest.approx(1.0)
    assert ring_allreduce_seconds(1e9, 8, 1e9) == pytest.approx(1.75)
    with pytest.raises(ValueError, match="positive bandwidth"):
        ring_allreduce_seconds(1e9, 8, 0)
    with pytest.raises(ValueError, match="Unknown dtype"):
        allreduce_bytes(gpt3, 4, grad_dtype="fp8")


def test_per_rank_memory_shards_with_fsdp():
    llama = ARCHITECTURES["Llama 3 70B"]
    ddp = per_rank_bytes(llama, 16, ("q", "v"), 8, "ddp")
    fsdp = per_rank_bytes(llama, 16, ("q", "v"), 8, "fsdp")
    block = 2 * sum(o * i for o, i in weight_shapes(llama).values())  # one block's matrices in bf16
    outer = 2 * 2 * llama.vocab_size * llama.d_model  # the root's embedding and untied head in bf16, gathered all step
    assert not llama.tied_embeddings and outer_weights(llama) == 2 * llama.vocab_size * llama.d_model
    assert fsdp == pytest.approx(ddp / 8 + (2 * block + outer) * 7 / 8)  # a shard, plus two blocks and the root in full
    assert per_rank_bytes(llama, 16, ("q", "v"), 8, "fsdp", gathered_blocks=0) == pytest.approx(ddp / 8 + outer * 7 / 8)
    assert ddp > 80e9 > fsdp  # 70B in bf16 does not fit one 80 GB card; sharded over 8 it does
    assert per_rank_bytes(llama, 16, ("q", "v"), 1, "fsdp") == pytest.approx(ddp)  # one rank: nothing to gather
    lora = lora_parameter_count(llama, 16, ("q", "v"))
    assert ddp == pytest.approx(2 * llama.total_parameters() + 16 * lora)  # bf16 base; fp32 weight, gradient, 2 moments
    full = per_rank_bytes(llama, None, (), 1, "ddp")
    assert full == pytest.approx(16 * llama.total_parameters())  # mixed precision, as notebook 03 counts: 16 bytes a weight
    assert per_rank_bytes(llama, None, (), 8, "fsdp") > 80e9  # full fine-tuning of 70B does not fit 8 cards of 80 GB
    with pytest.raises(ValueError, match="Unknown strategy"):
        per_rank_bytes(llama, 16, ("q",), 8, "zero")


def test_parameter_count_of_the_script_matches_count_parameters(tiny):
    base, _ = tiny
    model = prepare(base, "lora-qv", r=8, alpha=16, seed=0, targets=None)
    assert count_parameters(model).trainable == run(DistributedConfig("lora-qv", steps=1, batch_size=2))["trainable"]


def test_the_collectives_picture_shows_what_each_process_holds():
    import matplotlib

    matplotlib.use("Agg")
    from lora_edu.course.plots import collective_states, draw_collectives

    before, after = collective_states("all-reduce", 4)
    assert before[2] == ["g3"] * 4 and all(row == ["Σ"] * 4 for row in after)  # every process ends with the whole sum
    before, after = collective_states("reduce-scatter", 3)
    assert after == [["Σ", "", ""], ["", "Σ", ""], ["", "", "Σ"]]  # process i keeps the i-th part of the sum
    before, after = collective_states("all-gather", 3)
    assert before == [["Σ", "", ""], ["", "Σ", ""], ["", "", "Σ"]] and after == [["Σ"] * 3] * 3  # the reverse
    rs, ag = collective_states("reduce-scatter", 4), collective_states("all-gather", 4)
    assert (rs[0], ag[1]) == collective_states("all-reduce", 4)  # an all-reduce is a reduce-scatter, then an all-gather
    assert len(draw_collectives(4).axes) == 3
    with pytest.raises(ValueError, match="choose from"):
        collective_states("broadcast", 4)
