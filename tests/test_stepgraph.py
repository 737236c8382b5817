"""train()'s CUDA-graph path, checked on a CPU: the same static buffers, learning-rate tensors and order of work.

Off CUDA nothing is recorded: ``StepGraph.replay`` runs the step itself, so everything but the recording
(which needs a GPU: ``make gpu-check``) runs here and must train exactly as the plain path does.
``TrainConfig(gpu_path_on_cpu=True)`` asks for that path (fused AdamW and the graph's bookkeeping) on a CPU.
"""

import collections
import os
import sys
from pathlib import Path

import pytest
import torch

from lora_edu.devtools.synccheck import record_host_syncs
from lora_edu.gpt import stepgraph
from lora_edu.gpt.device import configure_threads
from lora_edu.gpt.model import GPT, GPTConfig
from lora_edu.gpt.step import TrainStep
from lora_edu.gpt.train import TrainConfig, train
from lora_edu.lora.layer import inject_lora, mark_only_lora_trainable
from lora_edu.lora.variants import loraplus_param_groups

CPU = torch.device("cpu")


@pytest.fixture
def graphs_on_cpu():
    """One CPU thread; each run() asks for the GPU path on the CPU (gpu_path_on_cpu): fused AdamW, and the graph
    bookkeeping with nothing recorded."""
    configure_threads(1)


def run(cuda_graph: bool | None, precision: str = "fp32", loraplus: bool = False, steps: int = 12, lora: bool = True,
        scored: bool = True, gpu_path_on_cpu: bool = True):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, n_ctx=16, n_layer=2, n_head=2, d_model=32))
    if lora:
        inject_lora(model, ["q_proj", "v_proj"], r=4, alpha=8)
        mark_only_lora_trainable(model)
    x = torch.randint(1, 64, (40, 16), generator=torch.Generator().manual_seed(1))
    y = x.roll(-1, dims=1)

    def evaluate(m):  # a held-out loss, so that the best step (and the weights restored) depend on training
        with torch.no_grad():
            return {"score": -m(x[:8], y[:8])[1].item()}

    groups = loraplus_param_groups(model, lr=1e-2, ratio=4.0) if loraplus else None
    cfg = TrainConfig(steps=steps, batch_size=8, lr=1e-2, eval_every=4 if scored else 10**6, precision=precision, cuda_graph=cuda_graph,
                      gpu_path_on_cpu=gpu_path_on_cpu)
    result = train(model, x, y, cfg, evaluate=evaluate if scored else None, progress=False, device=CPU, param_groups=groups)
    return result, {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize(("precision", "loraplus", "lora"), [("fp32", False, True), ("bf16", False, True), ("fp16", False, True),
                                                              ("fp32", True, True), ("bf16", False, False), ("fp16", False, False)])
def test_the_graph_path_trains_exactly_as_the_plain_path(graphs_on_cpu, precision, loraplus, lora):
    plain, plain_weights = run(False, precision, loraplus, lora=lora)
    graphed, graphed_weights = run(True, precision, loraplus, lora=lora)
    assert graphed.losses == plain.losses and len(plain.losses) == 12  # every step, the warm-up ones and the replayed ones
    assert graphed.evals == plain.evals and graphed.best_step == plain.best_step
    assert all(torch.equal(graphed_weights[n], w) for n, w in plain_weights.items())  # the best weights, restored
    assert not graphed.cuda_graph  # nothing is recorded on a CPU


def test_a_failed_recording_warns_and_trains_on_without_a_graph(graphs_on_cpu, monkeypatch):
    plain, plain_weights = run(False)
    monkeypatch.setattr(stepgraph.StepGraph, "record", lambda self: "RuntimeError: operation not permitted when stream is capturing")
    with pytest.warns(UserWarning, match="Could not record the training step as a CUDA graph .*not permitted"):
        fallback, weights = run(True)
    assert fallback.losses == plain.losses and not fallback.cuda_graph
    assert all(torch.equal(weights[n], w) for n, w in plain_weights.items())


def test_after_a_failed_recording_the_session_trains_without_graphs(graphs_on_cpu, monkeypatch):
    monkeypatch.setattr(stepgraph, "_FAILED", ["AcceleratorError: operation not permitted when stream is capturing"])
    with pytest.warns(UserWarning, match="an earlier recording in this session failed .*not permitted.*rest of the session"):
        result, _ = run(True)
    assert not result.cuda_graph and result.steps_done == 12


def test_the_first_cause_of_a_failed_recording_is_reported():
    cause = RuntimeError("CUDA error: operation not permitted when stream is capturing\nCompile with TORCH_USE_CUDA_DSA ...")
    raised = RuntimeError("CUDA error: operation failed due to a previous error during capture")
    raised.__context__ = cause  # what capture_end raises on the way out of a failed recording
    assert stepgraph.first_cause(raised) == "RuntimeError: CUDA error: operation not permitted when stream is capturing"
    assert stepgraph.first_cause(ValueError()) == "ValueError"
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__context__, b.__context__ = b, a  # a cycle ends
    assert stepgraph.first_cause(a) == "RuntimeError: b"


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_the_graph_path_never_waits_for_the_device(graphs_on_cpu, precision):
    def syncs(steps):
        with record_host_syncs() as found:
            run(True, precision, steps=steps, scored=False)  # evaluations may wait: they are not steps
        return collections.Counter(str(s) for s in found.syncs)

    few, many = syncs(5), syncs(13)
    assert many == few, f"syncs that grow with the number of steps: {many - few}"


def test_between_replays_the_host_launches_a_handful_of_ops(graphs_on_cpu):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import gpu_budget

    outside = gpu_budget.ops_outside_graph_per_step()
    assert 3 <= outside <= 8  # the batch copied into the two buffers, the learning rate filled, the loss kept
    assert outside * 100 < gpu_budget.ops_per_step("lora-qv", "bf16")  # against about 1,400 ops of a plain step


def test_graphs_are_asked_for_clearly(graphs_on_cpu, monkeypatch):
    with pytest.raises(TypeError, match="cuda_graph must be True, False or None"):
        TrainConfig(cuda_graph="yes")
    with pytest.raises(TypeError, match="gpu_path_on_cpu must be True or False"):
        TrainConfig(gpu_path_on_cpu="yes")
    with pytest.raises(ValueError, match="needs a CUDA device; this run is on cpu"):
        run(True, gpu_path_on_cpu=False)  # a plain CPU run
    monkeypatch.setitem(os.environ, "LORA_EDU_CUDA_GRAPHS", "1")  # the environment asks where graphs can be: not here
    result, _ = run(None, gpu_path_on_cpu=False)
    assert not result.cuda_graph and result.steps_done == 12


def test_the_step_scales_the_loss_it_backpropagates_and_a_recorded_step_refuses_to():
    """The distributed script's token weighting: ``step(x, y, loss_scale)`` backpropagates ``loss * loss_scale``."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, n_ctx=16, n_layer=1, n_head=2, d_model=16))
    x = torch.randint(1, 64, (4, 16))
    step = TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.0), CPU, grad_clip=0.0)  # lr 0: the weights stay
    loss = step(x, x.roll(-1, dims=1))
    grads = [p.grad.clone() for p in model.parameters()]
    half = step(x, x.roll(-1, dims=1), loss_scale=0.5)
    assert torch.equal(half, loss) and loss.shape == () and not loss.requires_grad
    assert all(torch.equal(p.grad, g / 2) for p, g in zip(model.parameters(), grads, strict=True))
    graphed = TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.0), CPU, cuda_graph=True)
    with pytest.raises(ValueError, match="replays with a loss scale of 1, got 0.5"):
        graphed(x, x, loss_scale=0.5)
