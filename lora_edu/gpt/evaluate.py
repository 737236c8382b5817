"""Scoring a GPT on the synthetic world: exact match of generated answers, and language-model loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .data import World, lm_targets, task_data

__all__ = ["FACT_PROMPTS", "answer_loss", "answer_rows", "answer_scores", "answers_right", "exact_match", "fact_recall",
           "facts_known", "format_token_ids", "generate_answers", "lm_loss", "lm_loss_parts"]

FACT_PROMPTS = {"home": "the {} lives in the", "food": "the {} eats"}  # pretraining phrasings that ask for one fact


@torch.no_grad()
def generate_answers(model: nn.Module, world: World, task: str, animals: list[str], max_new_tokens: int = 32) -> list[str]:
    """Greedy answers of ``model`` to the task's prompt for each animal (batched; prompts share a length)."""
    tok = world.tokenizer
    device = next(model.parameters()).device
    prompts = torch.tensor([tok.encode(world.prompt(task, a)) for a in animals], device=device)
    was_training = model.training
    model.eval()
    out = model.generate(prompts, max_new_tokens, stop_token=tok.eos_id)
    model.train(was_training)
    return [tok.decode(row[prompts.shape[1] :].tolist()) for row in out]


def answer_scores(model: nn.Module, world: World, task: str, animals: list[str]) -> tuple[float, float]:
    """Exact match and answer loss of ``model`` on ``animals``, from one teacher-forced forward pass
    (``answers_right``)."""
    right, loss = answers_right(model, world, task, animals)
    return sum(right) / len(animals), loss  # the exact fraction of right rows


def answers_right(model: nn.Module, world: World, task: str, animals: list[str]) -> tuple[list[bool], float]:
    """Whether ``model``'s greedy answer is exactly right, animal by animal, and the answer loss (``answer_rows``)."""
    right, _, loss = answer_rows(model, world, task, animals)
    return right, loss


@torch.no_grad()
def answer_rows(model: nn.Module, world: World, task: str, animals: list[str]) -> tuple[list[bool], list[float], float]:
    """Animal by animal, whether ``model``'s greedy answer is exactly right and the mean cross-entropy of its answer
    tokens; then the answer loss over all of them. One teacher-forced forward pass.

    Greedy decoding writes the answer and then ``<eos>`` exactly when, at every answer position, the most likely
    next token after the *correct* prefix is the right token: if every one is, each greedy step extends the right
    prefix by the right token (induction over the positions); at the first one that is not, greedy decoding leaves
    the answer.  So the fraction of rows right at every answer position is the exact match of greedy generation,
    for one forward pass instead of one per answer token (tests/test_gpt_training.py checks them row by row).
    Two differences: a ``<pad>`` written inside an answer or in place of ``<eos>`` counts as wrong here, while decoding
    would drop it (the trained models tested never wrote one: ``<pad>`` is never a training target); and the two run at
    different sequence lengths, so under rounding a near-tie between two tokens could in principle go either way.
    The last value is ``answer_loss``'s: the mean cross-entropy over every answer token of every animal.
    """
    device = next(model.parameters()).device
    x, y = task_data(world, task, animals, model.config.n_ctx)
    x, y = x.to(device), y.to(device)  # x: (rows, n_ctx); y: (rows, n_ctx), -100 off the answer
    was_training = model.training
    model.eval()
    logits, loss = model(x, y)  # logits: (rows, n_ctx, vocab)
    model.train(was_training)
    right = ((logits.argmax(-1) == y) | (y == -100)).all(dim=1)
    answer = y != -100
    per_token = F.cross_entropy(logits.float().transpose(1, 2), y.masked_fill(~answer, 0), reduction="none")  # (rows, n_ctx)
    per_row = (per_token * answer).sum(dim=1) / answer.sum(dim=1)
    values = torch.cat([right.float(), per_row, loss.float().reshape(1)]).tolist()  # one read-back
    n = len(animals)
    return [v == 1.0 for v in values[:n]], values[n : 2 * n], values[-1]


def exact_match(model: nn.Module, world: World, task: str, animals: list[str]) -> float:
    """Fraction of animals whose greedy answer is the target exactly (``<eos>`` included), by ``answer_scores``."""
    return answer_scores(model, world, task, animals)[0]


@torch.no_grad()
def lm_loss(model: nn.Module, rows: torch.Tensor, pad_id: int = 0, batch_size: int = 256) -> float:
    """Mean next-token cross-entropy over rows (n, seq + 1) of packed text, padding (``pad_id``) excluded."""
    device = next(model.parameters()).device
    pad = -100
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    for i in range(0, len(rows), batch_size):
        x, y = lm_targets(rows[i : i + batch_size].to(device), pad_id)
        logits, _ = model(x)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=pad, reduction="sum")
        total += loss.item()
        count += int((y != pad).sum())
    model.train(was_training)
    return total / count


def format_token_ids(world: World, task: str = "json") -> list[int]:
    """The tokens of the task's answers that the held-out fact lines (plain sentences) never contain; for JSON the
    braces, the quotes, the commas and the keys. Where a model puts probability on them in those lines, the task's
    format is leaking in."""
    tok = world.tokenizer
    held_out = {i for line in world.heldout_text.facts for i in tok.encode(line)}
    answers = {i for a in world.animals for i in tok.encode(world.target(task, a))}
    return sorted(answers - held_out)


@torch.no_grad()
def lm_loss_parts(model: nn.Module, rows: torch.Tensor, token_ids: list[int], pad_id: int = 0,
                  batch_size: int = 256) -> tuple[float, float]:
    """``lm_loss`` over rows (n, seq + 1), and the part of it the model spends on ``token_ids``, tokens the text never
    has as a target: the mean over positions of -log(1 - p(any of them)). The loss is exactly that part plus the loss
    of the model's prediction renormalised over the other tokens, since -log p(y) = -log(1 - p_them) - log(p(y) / (1 -
    p_them))."""
    device = next(model.parameters()).device
    ids = torch.tensor(token_ids, device=device)
    total, spent, count = 0.0, 0.0, 0
    was_training = model.training
    model.eval()
    for i in range(0, len(rows), batch_size):
        x, y = lm_targets(rows[i : i + batch_size].to(device), pad_id)
        keep = y != -100
        if torch.isin(y[keep], ids).any():
            raise ValueError("Some targets of these rows are among token_ids; pass tokens the text never has as a target.")
        logp = torch.log_softmax(model(x)[0].float(), dim=-1)[keep]  # (positions, vocab)
        total -= logp.gather(1, y[keep].unsqueeze(1)).sum().item()
        spent -= torch.log1p(-logp[:, ids].exp().sum(-1).clamp(max=1 - 1e-7)).sum().item()
        count += int(keep.sum())
    model.train(was_training)
    return total / count, spent / count


def answer_loss(model: nn.Module, world: World, task: str, animals: list[str]) -> float:
    """Mean cross-entropy of the target answer tokens given the prompt (teacher forcing): a smooth score."""
    return answer_scores(model, world, task, animals)[1]


def fact_recall(model: nn.Module, world: World, attribute: str, animals: list[str], among_answers: bool = False) -> float:
    """The share of ``animals`` whose home (or food) ``model`` names as its most likely next word after a pretraining
    phrasing ("the blazz lives in the"): the mean of ``facts_known``."""
    known = facts_known(model, world, attribute, animals, among_answers)
    return sum(known) / len(known)


@torch.no_grad()
def facts_known(model: nn.Module, world: World, attribute: str, animals: list[str], among_answers: bool = False) -> list[bool]:
    """Animal by animal, whether ``model`` names its home (or food) as the most likely next word after a pretraining
    phrasing ("the blazz lives in the").

    ``among_answers=True``: the next word is chosen among the possible answers only (the world's homes, or its
    foods), so a token of a new format leaking in (a ``"``) cannot count as wrong: it asks whether the fact is still
    there, not whether the model still says it unprompted. It is never wrong where free recall is right.
    """
    if attribute not in FACT_PROMPTS:
        raise ValueError(f"attribute must be one of {sorted(FACT_PROMPTS)}, got {attribute!r}.")
    if not animals:
        raise ValueError("animals is empty: pass at least one animal, e.g. world.test_animals.")
    tok = world.tokenizer
    truth = world.home if attribute == "home" else world.food
    ids = torch.tensor([tok.encode(FACT_PROMPTS[attribute].format(a)) for a in animals], device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    scores = model(ids)[0][:, -1]  # (animals, vocab): the next word's scores
    model.train(was_training)
    options = sorted(set(truth.values())) if among_answers else tok.vocab
    option_ids = [tok.encode(o)[0] for o in options] if among_answers else list(range(len(tok.vocab)))
    picked = [options[k] for k in scores[:, option_ids].argmax(-1).tolist()]
    return [word == truth[a] for word, a in zip(picked, animals, strict=True)]
