"""Serving many LoRA adapters on one base: throughput of three strategies across the number of distinct adapters.

For a batch of requests (rows), each asking for one of ``n`` adapters (round robin), prints requests/s of
  - batched:       one base forward for the whole batch, each row's A and B gathered (lora_edu.scale.serving);
  - merge-swap:    group rows by adapter; per group merge that adapter, run the group, unmerge;
  - one-at-a-time: each request alone (batch 1) through its own unmerged LoRA model;
and the ratios batched / merge-swap and batched / one-at-a-time.  The outputs of all three are checked equal first.

    python benchmarks/multi_adapter.py [--batch 32] [--seq 16] [--adapters 1 2 4 8 16 32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy

import torch

from lora_edu import configure_threads, environment_summary
from lora_edu.gpt.data import task_data
from lora_edu.gpt.pretrain import load_pretrained
from lora_edu.scale.serving import (
    SERVING_STRATEGIES,
    multi_adapter_model,
    random_adapters,
    serving_throughput,
    strategies_agree,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="requests per batch")
    parser.add_argument("--seq", type=int, default=16, help="tokens per request")
    parser.add_argument("--adapters", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32], help="numbers of distinct adapters")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    configure_threads()
    base, world = load_pretrained("tiny", "cpu")
    print(environment_summary(torch.device("cpu")))
    x = task_data(world, "json", world.animals, base.config.n_ctx)[0][: args.batch, : args.seq]
    if len(x) < args.batch:
        x = x.repeat(args.batch // len(x) + 1, 1)[: args.batch]
    adapters = random_adapters(base, max(args.adapters))
    multi = multi_adapter_model(adapters)
    server = copy.deepcopy(adapters[0])
    print(f"batch {args.batch} requests x {args.seq} tokens, tiny GPT, rank-8 adapters on q_proj and v_proj "
          f"(requests/s, best of {args.repeats})")
    print(f"{'adapters':>8} " + " ".join(f"{s:>14}" for s in SERVING_STRATEGIES) + f" {'vs merge-swap':>14} {'vs one-at-a-time':>17}")
    for n in args.adapters:
        ids = [i % n for i in range(args.batch)]
        strategies_agree(adapters, x, ids, multi=multi, server=server)
        rps = {s: serving_throughput(s, adapters, x, ids, args.repeats, multi=multi, server=server) for s in SERVING_STRATEGIES}
        print(f"{n:>8} " + " ".join(f"{rps[s]:>14,.0f}" for s in SERVING_STRATEGIES)
              + f" {rps['batched'] / rps['merge-swap']:>13.2f}x {rps['batched'] / rps['one-at-a-time']:>16.2f}x")


if __name__ == "__main__":
    main()
