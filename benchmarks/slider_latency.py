"""Rank-slider redraw latency on the 512 x 512 photo, measured side by side in one run.

``RankSlider`` factorises once and only multiplies U_k diag(s_k) V_k^T per move; the naive way
recomputes the SVD on every move.  Prints both (median and max over the same ranks) and the ratio.

    python benchmarks/slider_latency.py [--moves 40]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from lora_edu import configure_threads, environment_summary
from lora_edu.course.widgets import RankSlider, rank_caption, sample_photo, to_png
from lora_edu.maths.linalg import SVDReconstructor


def naive_render(image: np.ndarray, k: int) -> tuple[bytes, str]:
    svd = SVDReconstructor(image)  # the expensive part, redone on every move
    return to_png(svd.reconstruct(k)), rank_caption(svd, k)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--moves", type=int, default=40)
    args = parser.parse_args()
    configure_threads()
    print(environment_summary())
    photo = sample_photo()
    slider = RankSlider(photo, k=1)
    ranks = [int(k) for k in np.linspace(2, 512, args.moves)]
    for k in ranks:
        slider.slider.value = k  # goes through the widget's observer, as a drag does
    naive = []
    for k in ranks[:: max(1, len(ranks) // 10)]:
        t0 = time.perf_counter()
        naive_render(photo, k)
        naive.append(1000 * (time.perf_counter() - t0))
    fast = slider.latencies_ms
    print(f"RankSlider (factorise once): median {statistics.median(fast):.1f} ms, max {max(fast):.1f} ms over {len(fast)} moves")
    print(f"SVD on every move          : median {statistics.median(naive):.1f} ms, max {max(naive):.1f} ms over {len(naive)} moves")
    print(f"speed-up of the median: {statistics.median(naive) / statistics.median(fast):.1f}x")


if __name__ == "__main__":
    main()
