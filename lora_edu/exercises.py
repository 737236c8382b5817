"""The course's in-class exercises (registered with ``lora_edu.quiz``).

Multiple-choice answers are stored as salted hashes; numeric answers come from the package's
tested functions, so the expected value is never typed in.
"""

from __future__ import annotations

import numpy as np

from .arch import ARCHITECTURES, lora_parameter_count
from .linalg import rank_by_elimination, svd_storage
from .quiz import Exercise, register


def tiny_gpt_lora_qv_count() -> int:
    """LoRA r=8 on q_proj and v_proj of the tiny GPT, counted on the meta device."""
    import torch

    from .gpt import GPT, GPT_SIZES
    from .lora import count_parameters, inject_lora, mark_only_lora_trainable

    with torch.device("meta"):
        model = GPT(GPT_SIZES["tiny"])
    inject_lora(model, ["q_proj", "v_proj"], r=8, alpha=16)
    mark_only_lora_trainable(model)
    return count_parameters(model).trainable

register(Exercise(
    id="rank-of-product",
    prompt="W (d x d) is the product of A (d x k) and B (k x d), with k <= d. What is the rank of W?",
    options={"a": "at least d", "b": "at most d", "c": "at least k", "d": "at most k"},
    answer_digest="18948d14bb9cd833",
    explanation="Every column of W = AB is a combination of the k columns of A, so rank(W) <= k "
    "(it can be less, e.g. when B = 0).",
))
register(Exercise(
    id="rank-of-123",
    prompt="What is the rank of [[1, 2, 3], [2, 4, 6], [3, 6, 9]]? Answer with a number.",
    expected=lambda: rank_by_elimination(np.array([[1, 2, 3], [2, 4, 6], [3, 6, 9]])),
    explanation="Rows 2 and 3 are 2x and 3x row 1: elimination leaves a single non-zero row.",
))
register(Exercise(
    id="rank-one-storage",
    prompt="How many numbers does the rank-1 factorisation a b of a 4 x 4 matrix store? Answer with a number.",
    expected=lambda: 4 + 4,
    explanation="a has 4 entries and b has 4: 8 numbers instead of 16. For d x d it is 2d instead of d^2.",
))
register(Exercise(
    id="eckart-young",
    prompt="s_1 >= s_2 >= ... are the singular values of M. The Frobenius error of the best rank-k approximation is:",
    options={"a": "s_k", "b": "sqrt(s_{k+1}^2 + s_{k+2}^2 + ...)", "c": "s_1 + ... + s_k", "d": "0 for every k >= 1"},
    answer_digest="ff647f201e2d943d",
    explanation="Truncating the SVD drops exactly the tail singular values, and no rank-k matrix does better (Eckart-Young).",
))
register(Exercise(
    id="image-storage",
    prompt="How many numbers does a rank-50 SVD reconstruction of a 512 x 512 image store (U_k, s_k and V_k)?",
    expected=lambda: svd_storage(512, 512, 50),
    explanation="k (rows + cols + 1) = 50 * 1025: under a fifth of the 262,144 pixels.",
))
register(Exercise(
    id="recommender",
    prompt="A users x movies 'liked' matrix X with millions of users and 100k movies is factorised as X = U V with "
    "U having only 50-100 columns. Why is so low a rank enough?",
    options={
        "a": "because any factorisation is low rank",
        "b": "because 1,000 columns would be too expensive to compute",
        "c": "because tastes are driven by a few shared factors (genres, moods, eras), so X is close to low rank",
        "d": "because it happened to work in experiments, for no reason",
    },
    answer_digest="eddd2dbebb278ce0",
    explanation="Low rank is a property of the data: a few latent factors explain most of the preferences. "
    "LoRA makes the same bet about the weight update of a fine-tune.",
))
register(Exercise(
    id="query-cost",
    prompt="W = A B with A (d x k) and B (k x d). Computing q = A (B x) for one token x costs:",
    options={"a": "O(d * d)", "b": "O(d * d * k)", "c": "O(k * k)", "d": "O(d * k)"},
    answer_digest="ee9076175d2dd277",
    explanation="B x costs k d multiply-adds and A (B x) costs d k more: O(dk), against O(d^2) for W x with W formed.",
))
register(Exercise(
    id="which-matrices",
    prompt="In a Llama 3 transformer block, which weight matrices can LoRA adapt?",
    options={"a": "the query matrix", "b": "the key matrix", "c": "the value matrix", "d": "the MLP matrices",
             "e": "all of the above"},
    answer_digest="e0621fe5fdf49e4a",
    explanation="Any linear layer can carry a LoRA update; the paper adapted only Wq and Wv, later work "
    "(QLoRA) found adapting every linear layer works best.",
))
register(Exercise(
    id="gpt2-qv-r8",
    prompt="How many trainable parameters does rank-8 LoRA on Wq and Wv add to GPT-2 small (12 layers, d = 768)?",
    expected=lambda: lora_parameter_count(ARCHITECTURES["GPT-2 small"], 8, ("q", "v")),
    explanation="Each adapted matrix adds r (d_in + d_out) = 8 * 1536; two per layer, 12 layers.",
))
register(Exercise(
    id="llama-all-linear-r5",
    prompt="How many trainable parameters does rank-5 LoRA on all seven linear layers of every Llama 3 8B block add?",
    expected=lambda: lora_parameter_count(ARCHITECTURES["Llama 3 8B"], 5, ARCHITECTURES["Llama 3 8B"].matrices),
    explanation="Sum r (d_in + d_out) over q, k, v, o, gate, up and down (k and v are 4096 -> 1024 with "
    "grouped-query attention), times 32 layers: about 13 million, not '8B / 400'.",
))
register(Exercise(
    id="why-b-zero",
    prompt="Why does LoRA start with B = 0 and A random?",
    options={
        "a": "any start works; zeros everywhere would do as well",
        "b": "so that B A = 0 (the model starts as the base model) while the gradient of B, "
        "which is proportional to A, is not zero",
        "c": "so that the update starts random and small",
        "d": "because B is larger than A",
    },
    answer_digest="b302318c9b3c224f",
    explanation="With A = B = 0 both gradients vanish and nothing ever trains; with B = 0 and A random the "
    "update starts at exactly zero and B moves at the first step.",
))
register(Exercise(
    id="gradient-of-a",
    prompt="dW = B A with B (d_out x r), A (r x d_in), and G = dL/d(dW) (d_out x d_in). Which is dL/dA?",
    options={"a": "G B^T", "b": "B^T G", "c": "G^T A", "d": "G A^T"},
    answer_digest="622eb29d8ab7027e",
    explanation="dL/dA = B^T G (r x d_in, the shape of A) and dL/dB = G A^T (d_out x r, the shape of B). "
    "Shapes alone rule the other options out.",
))
register(Exercise(
    id="tiny-gpt-lora-qv",
    prompt="The tiny GPT has 4 layers with d_model = 64. How many parameters does rank-8 LoRA on Wq and Wv train?",
    expected=tiny_gpt_lora_qv_count,
    explanation="2 matrices x 4 layers x r (d_in + d_out) = 8 * 8 * 128.",
))
register(Exercise(
    id="disable-lora",
    prompt="After LoRA fine-tuning, `with disable_lora(model): ...` runs the model with",
    options={
        "a": "the fine-tuned weights, slightly damped",
        "b": "exactly the pretrained model: every LoRA branch is skipped, the frozen weights never changed",
        "c": "random weights",
        "d": "the merged weights W + B A",
    },
    answer_digest="e0153af5bd746a6d",
    explanation="The base weights are frozen, so skipping B A gives back the pretrained model bit for bit: "
    "LoRA's forgetting is reversible.",
))
