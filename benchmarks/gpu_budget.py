"""How long notebooks 05, 05b, 05c, 06 and 06b take on a class GPU, estimated on a CPU (``make gpu-budget``).

Where no GPU is at hand, this prints the class-GPU budget of issue 13 from counts and a cost model:

    a training step = max(host time, GPU time)     (the step never waits for the GPU: tests/test_host_syncs.py)
    host time       = aten ops the step dispatches x seconds per op on that machine's CPU
    GPU time        = training FLOPs / (peak x efficiency) + bytes moved / memory bandwidth
    an evaluation   = its ops x seconds per op (one forward pass of a small batch is host-bound)

The op counts and FLOPs are measured here, on the ``gpu`` configuration itself (ops are counted with
a ``TorchDispatchMode`` on a model of the gpu size's depth, heads and vocabulary; FLOPs come from
``training_flops_per_token`` on the full-width model built on the meta device). The plan of each
notebook (runs, steps, rows, sequence length) is written out below from the notebooks' code.

Calibration, from the H100 measurements in ``gpu_results.md`` (one H100 80GB HBM3, bf16):
- seconds per op on the H100's host: a LoRA step of the ``gpu`` size took 23.37 ms at batch 64;
- the H100's efficiency: pretraining (1000 steps of 512 x 64 tokens) took 34 s.
Assumptions, printed with the result: a Colab T4's host is ``T4_HOST_FACTOR`` times slower per op than
the H100 machine's; a T4 reaches between the H100's measured efficiency and ``T4_EFFICIENCY_HIGH`` of
its 65 TFLOP/s fp16 peak. The model is checked against the H100's measured fine-tune (12-13 s).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lora_edu.gpt.data import task_data
from lora_edu.gpt.device import configure_threads
from lora_edu.gpt.evaluate import answer_scores, exact_match, lm_loss
from lora_edu.gpt.finetune import FINETUNE_SIZES, prepare
from lora_edu.gpt.model import GPT
from lora_edu.gpt.pretrain import PRETRAIN_SIZES, pretraining_eval_rows, world_for
from lora_edu.gpt.step import TrainStep
from lora_edu.gpt.stepgraph import WARMUP_STEPS, StepGraph
from lora_edu.gpt.train import TrainConfig, train, training_flops_per_token, trim_padding

# Measured on one H100 80GB HBM3 (benchmarks/gpu_results.md).
H100_LORA_STEP_S = 23.37e-3  # benchmarks/finetune.py --sizes gpu: LoRA r = 8 on Wq, Wv, batch 64
# aten ops of that step as it was then (each LoRA branch scaled and added its product in two ops, since fused into one
# addmm): the calibration divides the measured time by the ops that took it
H100_LORA_STEP_OPS = 1410
H100_PRETRAIN_S = 34.0  # 1000 steps of 512 rows x 64 tokens
H100_FINETUNE_RUN_S = (12.0, 13.0)  # one LoRA fine-tune of notebook 05 (400 steps of 64 rows, evaluations included)
# The scoring that measurement ran: exact match by greedy generation, before it took one forward pass. Its aten ops per
# call, as this script counted them at commit 68b1b45: validation (exact match + loss), test, training animals.
H100_MEASURED_EVAL_OPS = {"val": 10767, "test": 10466, "train": 10562}
# Assumptions (see the module docstring).
T4_HOST_FACTOR = 1.3
T4_EFFICIENCY_HIGH = 0.40
# Assumed for a step replayed from a CUDA graph (LORA_EDU_CUDA_GRAPHS=1) until make gpu-check measures one: the host's
# time to launch one graph, and (Gpu.graph_kernel_s) the least time one small kernel takes inside a replayed graph.
GRAPH_LAUNCH_S = 10e-6
# 05b and 06 (the comparisons) keep the targets issue 13 set for 06; 05 (the lab) the ones issue 21 sets.
TARGETS_MIN = {("05", "H100"): 2, ("05", "T4"): 10, ("05b", "H100"): 4, ("05b", "T4"): 15, ("05c", "H100"): 2, ("05c", "T4"): 5,
               ("06", "H100"): 4, ("06", "T4"): 15,
               ("06b", "H100"): 2, ("06b", "T4"): 5}


@dataclass(frozen=True)
class Gpu:
    name: str
    peak_flops: float  # dense bf16 (H100) or fp16 (T4) FLOP/s
    bandwidth: float  # bytes/s
    precision: str
    graph_kernel_s: float  # assumed: the least time of one small kernel in a replayed graph (the T4 clocks lower)


GPUS = {"H100": Gpu("H100", 989e12, 3.35e12, "bf16", 3e-6), "T4": Gpu("T4", 65e12, 320e9, "fp16", 5e-6)}


@dataclass(frozen=True)
class Runs:
    """``count`` fine-tunes of one kind: ``method``'s LoRA targets per layer, steps x rows of ``seq`` tokens."""

    label: str
    count: int
    method: str  # "lora-qv", "lora-q", "lora-qkvo", "lora-all", "full", "last-block"
    steps: int
    batch: int
    seq: int
    score_all: bool = True
    eval_every: int | None = None  # finetune's eval_every; None: six times a run


# Ops that only make a new view of a tensor's metadata (or mark a profiler range): no GPU kernel.
METADATA_OPS = {"view", "_unsafe_view", "t", "transpose", "permute", "detach", "select", "slice", "expand", "unsqueeze", "squeeze",
                "as_strided", "alias", "_reshape_alias", "split", "unbind", "_record_function_enter_new", "_record_function_exit"}


class OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.n = self.kernels = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        self.kernels += func.overloadpacket.__name__ not in METADATA_OPS
        return func(*args, **(kwargs or {}))


def count_ops(fn, kernels: bool = False) -> int:
    """aten ops ``fn`` dispatches (``kernels``: only those that launch work on the device)."""
    counter = OpCounter()
    with counter:
        fn()
    return counter.kernels if kernels else counter.n


# The budget's methods as finetune.prepare names them: (method, targets); the rest are prepare's own names.
PREPARE_AS = {"lora-q": ("lora", ["q_proj"]), "lora-qkvo": ("lora", ["q_proj", "k_proj", "v_proj", "o_proj"])}


def model_for(method: str, width: int | None = None, device: str = "cpu") -> GPT:
    """The gpu size (its vocabulary included) set up for ``method`` by ``finetune.prepare`` (LoRA r = 8, alpha 16);
    ``width`` narrows it (ops do not depend on width)."""
    world = world_for("gpu")
    cfg = PRETRAIN_SIZES["gpu"].model.with_vocab(len(world.tokenizer))
    if width is not None:
        cfg = cfg.__class__(**{**cfg.to_dict(), "d_model": width, "d_ff": 4 * width})
    with torch.device(device):
        base = GPT(cfg)
    name, targets = PREPARE_AS.get(method, (method, None))
    return prepare(base, name, r=8, alpha=16, seed=0, targets=targets)


def ops_per_added_step(method: str, precision: str, cuda_graph: bool = False, kernels: bool = False,
                       stand_in: type[StepGraph] | None = None, steps: tuple[int, int] = (2, 4)) -> int:
    """aten ops (``kernels``: only those that launch device work) that one more training step adds, on the GPU path
    (autocast, fused AdamW, CUDA-graph bookkeeping) run on this CPU, by difference of ``steps``."""
    model = model_for(method, width=16)
    x = torch.randint(1, model.config.vocab_size, (8, 8))
    configs = [TrainConfig(steps=s, batch_size=1, eval_every=10**6, precision=precision, cuda_graph=cuda_graph, gpu_path_on_cpu=True)
               for s in steps]
    saved, TrainStep.graph_type = TrainStep.graph_type, stand_in or StepGraph
    try:
        counts = [count_ops(lambda c=c: train(model, x, x, c, progress=False, device=torch.device("cpu")), kernels) for c in configs]
    finally:
        TrainStep.graph_type = saved
    return (counts[1] - counts[0]) // (steps[1] - steps[0])


def ops_per_step(method: str, precision: str, kernels: bool = False) -> int:
    """aten ops of one training step launched op by op."""
    return ops_per_added_step(method, precision, kernels=kernels)


class StandInGraph(StepGraph):
    """Stands in for a recorded CUDA graph on a CPU: its replay dispatches nothing, so only the host's work between
    replays is counted."""

    def record(self) -> None:
        self.graph, self.loss = "recorded", torch.zeros(())  # type: ignore[assignment]

    def replay(self) -> torch.Tensor:
        return self.loss


def ops_outside_graph_per_step(precision: str = "bf16") -> int:
    """aten ops the host dispatches per step when the step is replayed from a CUDA graph (past the warm-up steps):
    the batch copied into the static buffers, the learning rate filled in, the loss kept."""
    return ops_per_added_step("lora-qv", precision, cuda_graph=True, stand_in=StandInGraph, steps=(12, 20))


def evaluation_ops() -> dict[str, int]:
    """aten ops of each scoring call at the gpu size's depth and world (exact match and loss: one forward pass each)."""
    world = world_for("gpu")
    model = model_for("full", width=16).eval()
    rows = pretraining_eval_rows(world, model.config.n_ctx)
    return {
        "val": count_ops(lambda: answer_scores(model, world, "json", world.val_animals)),
        "test": count_ops(lambda: exact_match(model, world, "json", world.test_animals)),
        "train": count_ops(lambda: exact_match(model, world, "json", world.train_animals)),
        "pretrain_loss": count_ops(lambda: lm_loss(model, rows, world.tokenizer.pad_id)),
    }


def step_flops_and_bytes(method: str, batch: int, seq: int) -> tuple[float, float]:
    """Matmul FLOPs of one step (``training_flops_per_token``) and a rough count of bytes moved: every weight read three
    times in 16 bits plus once in 32 (autocast's cast), AdamW's 28 bytes per trainable parameter, and about 68 bytes
    per token, layer and model dimension of activations written and read back (Korthikanti et al., 2022: 34 s b h)."""
    model = model_for(method, device="meta")
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    flops = training_flops_per_token(model, seq) * batch * seq
    moved = 10 * params + 28 * trainable + 68 * batch * seq * cfg.n_layer * cfg.d_model
    return flops, moved


def evaluations_per_run(steps: int, every: int | None = None) -> int:
    """What finetune() schedules: every ``every`` steps (default steps // 6), and at the last step."""
    every = every or max(1, steps // 6)
    return len({s for s in range(1, steps + 1) if s % every == 0 or s == steps})


EVERY_06B = 4  # notebook 06b evaluates every 4 steps of its 100-step runs (EVAL_EVERY, scaled with its steps)


def plans() -> dict[str, dict]:
    """Each notebook's training at the gpu size, as its code runs it (notebooks 05, 05b, 05c, 06 and 06b, gpu branch)."""
    run05 = FINETUNE_SIZES["gpu"]
    s05, b05 = run05["steps"], run05["batch_size"]
    world = world_for("gpu")
    json_seq = trim_padding(*task_data(world, "json", world.train_animals, 64))[0].shape[1]  # what train() runs on
    steps06 = 200  # notebook 06: STEPS = {"tiny": 100, "gpu": 200}
    b06 = FINETUNE_SIZES["tiny"]["batch_size"]  # 06 passes no batch size: finetune's default, the tiny size's
    return {
        "05": {
            "runs": [
                Runs("LoRA on every linear layer: the JSON task (section 2) and the card task (section 9)", 2, "lora-all", s05, b05,
                     json_seq),
                Runs("full fine-tuning (section 5)", 1, "full", s05, b05, json_seq),
                Runs("section 5's step timing, LoRA: 7 rounds of 10 + 3 steps (scored as a run: an overestimate)", 1, "lora-all",
                     7 * 13, b05, json_seq, False),
                Runs("section 5's step timing, full fine-tuning: the same", 1, "full", 7 * 13, b05, json_seq, False),
                Runs("the training loop written out, and train() beside it: 30 steps each (scored as a run: an overestimate)", 2,
                     "lora-all", 30, b05, json_seq, False),
            ],
        },
        "05b": {
            "runs": [
                Runs("LoRA on every linear layer: 4 learning rates x 3 seeds, 2 more seeds", 14, "lora-all", s05, b05, json_seq),
                Runs("full fine-tuning: 3 learning rates x 3 seeds, 2 more seeds", 11, "full", s05, b05, json_seq),
                Runs("full fine-tuning of the block matrices only (full-linear; counted as full): 4 learning rates x 3 seeds", 12, "full",
                     s05, b05, json_seq),
                Runs("LoRA on Wq, Wv: 3 learning rates x 3 seeds", 9, "lora-qv", s05, b05, json_seq),
                Runs("last block only: 3 learning rates x 3 seeds", 9, "last-block", s05, b05, json_seq),
                Runs("control (untrained GPT, full), 3 learning rates x 3 seeds", 9, "full", s05, b05, json_seq),
                Runs("full + replay (pretraining rows, 64 tokens), 3 seeds", 3, "full", s05, b05, 64),
                Runs("LoRA on every linear layer + replay, 3 seeds", 3, "lora-all", s05, b05, 64),
                Runs("two more seeds at every other rate where lora-all learned the task (at most 3 rates)", 6, "lora-all", s05, b05,
                     json_seq),
                Runs("two more seeds at every other rate where full or full-linear learned (at most 2 + 4 rates; counted as full)", 12,
                     "full", s05, b05, json_seq),
                Runs("LoRA on every linear layer at 1e-3, three times the steps (appendix D), 5 seeds", 5, "lora-all", 3 * s05, b05,
                     json_seq),
            ],
        },
        "05c": {  # reads 05b's runs from the cache; without them it would train 05b's section 1 again first
            "runs": [
                Runs("LoRA on every linear layer retrained at its chosen rate for PEFT's intruder mitigation, 5 seeds", 5, "lora-all",
                     s05, b05, json_seq),
                Runs("the same at its matched rate, 5 seeds", 5, "lora-all", s05, b05, json_seq),
            ],
        },
        "06": {
            "runs": [
                Runs("placement: Wq, Wk, Wv, Wo (r = 8), 3 learning rates x 2 seeds, then 5 scored seeds", 44, "lora-q", steps06, b06,
                     json_seq, False),
                Runs("placement: Wq+Wk, Wq+Wv (r = 4), 3 learning rates x 2 seeds, then 5 scored seeds", 22, "lora-qv", steps06, b06,
                     json_seq, False),
                Runs("placement: Wq, Wk, Wv, Wo together (r = 2), 3 learning rates x 2 seeds, then 5 scored seeds", 11, "lora-qkvo",
                     steps06, b06, json_seq, False),
                Runs("rank sweep on Wq: r = 1, 2, 4, 64, 5 seeds", 20, "lora-q", steps06, b06, json_seq, False),
                Runs("rank sweep on Wq+Wv: r = 1, 2, 8, 64, 5 seeds", 20, "lora-qv", steps06, b06, json_seq, False),
                Runs("r = 1 and 2 at rates of their own: Wq, 2 rates x 2 seeds, 1 beyond the edge, then 5 scored seeds", 22, "lora-q",
                     steps06, b06, json_seq, False),
                Runs("r = 1 and 2 at rates of their own: Wq+Wv, 2 rates x 2 seeds, 1 beyond the edge, then 5 scored seeds", 22,
                     "lora-qv", steps06, b06, json_seq, False),
                Runs("Wq+Wv at r = 1, 2 and 4 trained 4 times longer: 2 rates x 2 seeds, 1 beyond the edge, then 5 scored seeds", 33,
                     "lora-qv", 4 * steps06, b06, json_seq, False),
                Runs("the card-task adapters on Wq+Wv (high rank, r = 4), 5 seeds each (at JSON's length: an overestimate)", 10,
                     "lora-qv", steps06, b06, json_seq, False),
                Runs("Table 7's small-update runs on Wq+Wv (r = 4), 5 seeds", 5, "lora-qv", steps06, b06, json_seq, False),
            ],
        },
        "06b": {
            "runs": [
                Runs("LoRA (4 learning rates) and LoRA+ at ratios 0.5, 2, 4, 8 and 16 (4 each) on Wq+Wv (r = 4), x 3 seeds", 72,
                     "lora-qv", steps06, b06, json_seq, False, EVERY_06B * steps06 // 100),
                Runs("LoRA, the chosen LoRA+, LoRA+ 16 and validation's choice among every ratio, 10 fresh seeds each", 40,
                     "lora-qv", steps06, b06, json_seq, False, EVERY_06B * steps06 // 100),
                Runs("rsLoRA: ranks 1 and 16 under α/r and α/√r on Wq+Wv, 5 fresh seeds each (r = 4 reused)", 20,
                     "lora-qv", steps06, b06, json_seq, False, EVERY_06B * steps06 // 100),
            ],
        },
    }


def calibrate(ops_full_bf16: int) -> dict[str, float]:
    """Seconds per op on the H100's host, and the H100's efficiency on pretraining-sized steps."""
    per_op = H100_LORA_STEP_S / H100_LORA_STEP_OPS
    spec = PRETRAIN_SIZES["gpu"]
    flops, moved = step_flops_and_bytes("full", spec.batch_size, spec.model.n_ctx)
    gpu_s = H100_PRETRAIN_S / spec.steps
    host_s = ops_full_bf16 * per_op
    efficiency = flops / ((gpu_s - moved / GPUS["H100"].bandwidth) * GPUS["H100"].peak_flops)
    return {"per_op": per_op, "efficiency": efficiency, "pretrain_host_s": host_s}


def step_seconds(gpu: Gpu, per_op: float, efficiency: float, ops: int, method: str, batch: int, seq: int) -> float:
    flops, moved = step_flops_and_bytes(method, batch, seq)
    return max(ops * per_op, flops / (gpu.peak_flops * efficiency) + moved / gpu.bandwidth)


@dataclass(frozen=True)
class Graphs:
    """What a step replayed from a CUDA graph costs: the host's ops between replays, and each method's kernels."""

    outside_ops: int
    kernels: dict  # (method, precision) -> kernels per step


def run_seconds(gpu: Gpu, per_op: float, efficiency: float, ops: dict, method: str, steps: int, batch: int, seq: int,
                graphs: Graphs | None) -> float:
    """One run's training steps: all launched op by op, or (``graphs``) the first few so and the rest replayed."""
    eager = step_seconds(gpu, per_op, efficiency, ops[(method, gpu.precision)], method, batch, seq)
    if graphs is None or steps <= WARMUP_STEPS:
        return steps * eager
    flops, moved = step_flops_and_bytes(method, batch, seq)
    device_s = flops / (gpu.peak_flops * efficiency) + moved / gpu.bandwidth + graphs.kernels[(method, gpu.precision)] * gpu.graph_kernel_s
    replayed = max(graphs.outside_ops * per_op + GRAPH_LAUNCH_S, device_s)
    recording = ops[(method, gpu.precision)] * per_op  # the host walks the step once more to record it
    return WARMUP_STEPS * eager + recording + (steps - WARMUP_STEPS) * replayed


def estimate(gpu: Gpu, per_op: float, efficiency: float, ops: dict, eval_ops: dict, plan: dict, fresh: bool,
             graphs: Graphs | None = None) -> dict[str, float]:
    """Seconds of a notebook's training on ``gpu``: pretraining (when ``fresh``) and each group of runs."""
    parts = {}
    if fresh:
        spec = PRETRAIN_SIZES["gpu"]
        parts["pretraining"] = run_seconds(gpu, per_op, efficiency, ops, "full", spec.steps, spec.batch_size, spec.model.n_ctx, graphs)
    for runs in plan["runs"]:
        train_s = run_seconds(gpu, per_op, efficiency, ops, runs.method, runs.steps, runs.batch, runs.seq, graphs)
        scoring = evaluations_per_run(runs.steps, runs.eval_every) * eval_ops["val"] + eval_ops["test"]
        scoring += eval_ops["train"] + eval_ops["pretrain_loss"] if runs.score_all else 0  # the test loss comes with the test score
        parts[runs.label] = runs.count * (train_s + scoring * per_op)
    return parts


def print_table(cal: dict, ops: dict, eval_ops: dict, plan: dict, overheads: tuple[float, ...], gpus: dict, graphs: Graphs | None) -> None:
    """Each notebook against its target; a range over the T4's efficiencies and over ``overheads`` (seconds per run)."""
    print(f"{'notebook':<12} {'GPU':<5} {'pretraining':>12} {'fine-tunes':>11} {'total (min)':>12} {'target':>7}  verdict")
    for nb in plan:
        for name, gpu in gpus.items():
            host = T4_HOST_FACTOR if name == "T4" else 1.0
            effs = (cal["efficiency"], T4_EFFICIENCY_HIGH) if name == "T4" else (cal["efficiency"],)
            runs = sum(r.count for r in plan[nb]["runs"])
            for fresh in (True,) if nb == "05" else (True, False):  # 05 pretrains on a fresh runtime; later ones find it cached
                totals = []
                for eff in effs:
                    parts = estimate(gpu, cal["per_op"] * host, eff, ops, eval_ops, plan[nb], fresh, graphs)
                    for overhead_s in overheads:
                        fine = sum(v for k, v in parts.items() if k != "pretraining") + runs * overhead_s * host
                        totals.append((parts.get("pretraining", 0.0), fine))
                worst = max(p + f for p, f in totals) / 60
                best = min(p + f for p, f in totals) / 60
                target = TARGETS_MIN[(nb, name)]
                span = f"{best:.1f}" if math.isclose(best, worst) else f"{best:.1f}-{worst:.1f}"
                verdict = "meets" if worst <= target else ("misses" if best > target else "not resolved")
                label = nb + ("" if nb == "05" else " (fresh)" if fresh else " (cached)")
                pre, fine = (x / 60 for x in max(totals, key=sum))  # the slower case
                print(f"{label:<12} {name:<5} {pre:>10.1f} m {fine:>9.1f} m {span:>12} {target:>5} m  {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args()
    configure_threads()
    methods = ("lora-q", "lora-qv", "lora-qkvo", "lora-all", "full", "last-block")
    ops = {(m, p): ops_per_step(m, p) for m in methods for p in ("bf16", "fp16")}
    graphs = Graphs(max(ops_outside_graph_per_step(p) for p in ("bf16", "fp16")),
                    {(m, p): ops_per_step(m, p, kernels=True) for m in methods for p in ("bf16", "fp16")})
    eval_ops = evaluation_ops()
    cal = calibrate(ops[("full", "bf16")])
    print("Counted on this CPU (the gpu configuration's step on the GPU path: autocast, fused AdamW):")
    print("  aten ops per training step: " + ", ".join(f"{m} {ops[(m, 'bf16')]}" for m in methods) + " (bf16; fp16 adds the scaler's)")
    print("  of which launch a kernel: " + ", ".join(f"{m} {graphs.kernels[(m, 'bf16')]}" for m in methods) + " (bf16)")
    print(f"  aten ops per step between replays of a recorded step (CUDA graphs): {graphs.outside_ops}")
    print("  aten ops per scoring call: " + ", ".join(f"{k} {v}" for k, v in eval_ops.items()))
    print(f"Calibrated on the H100: {1e6 * cal['per_op']:.1f} us per op on its host (LoRA step {1e3 * H100_LORA_STEP_S:.2f} ms); "
          f"efficiency {100 * cal['efficiency']:.1f}% of {GPUS['H100'].peak_flops / 1e12:g} TFLOP/s on pretraining "
          f"(host {1e3 * cal['pretrain_host_s']:.1f} ms < GPU {1e3 * H100_PRETRAIN_S / PRETRAIN_SIZES['gpu'].steps:.1f} ms per step)")
    plan = plans()
    one = Runs("check", 1, "lora-qv", 400, 64, plan["05"]["runs"][0].seq)
    then = {**eval_ops, **H100_MEASURED_EVAL_OPS}  # the check runs the scoring the measurement ran
    check = estimate(GPUS["H100"], cal["per_op"], cal["efficiency"], ops, then, {"runs": [one]}, fresh=False)["check"]
    overhead_s = sum(H100_FINETUNE_RUN_S) / 2 - check
    print(f"Check: one LoRA fine-tune of notebook 05 on the H100: model {check:.1f} s, measured "
          f"{H100_FINETUNE_RUN_S[0]:g}-{H100_FINETUNE_RUN_S[1]:g} s (scored by generation, as then); the difference, "
          f"{overhead_s:.1f} s (set-up, copies, or host time per step the calibration missed), is added to every run below")
    print(f"Assumed for the T4: host {T4_HOST_FACTOR:g}x slower per op; efficiency {100 * cal['efficiency']:.0f}%-"
          f"{100 * T4_EFFICIENCY_HIGH:.0f}% of {GPUS['T4'].peak_flops / 1e12:g} TFLOP/s fp16")
    print()
    print("Each step launched op by op (the default). Pretraining and fine-tunes: the slower case; total: the range over "
          "what is assumed.")
    print_table(cal, ops, eval_ops, plan, (overhead_s,), GPUS, None)
    print(f"\nWith LORA_EDU_CUDA_GRAPHS=1, assuming {1e6 * GRAPH_LAUNCH_S:g} us to launch a graph and per kernel in it "
          + ", ".join(f"{1e6 * g.graph_kernel_s:g} us ({n})" for n, g in GPUS.items()) + "; not yet measured on a GPU. Range: also "
          f"without and with the {overhead_s:.1f} s per run (if it is host time per step, graphs remove it):")
    print_table(cal, ops, eval_ops, plan, (0.0, overhead_s), GPUS, graphs)
    for nb in ("05", "05b"):
        print(f"\nPer group of runs, notebook {nb} on the H100 from a fresh runtime, op by op | with CUDA graphs (s): ")
        parts = estimate(GPUS["H100"], cal["per_op"], cal["efficiency"], ops, eval_ops, plan[nb], True)
        graphed = estimate(GPUS["H100"], cal["per_op"], cal["efficiency"], ops, eval_ops, plan[nb], True, graphs)
        for k, v in parts.items():
            print(f"  {v:7.1f} | {graphed[k]:6.1f}  {k}")


if __name__ == "__main__":
    main()
