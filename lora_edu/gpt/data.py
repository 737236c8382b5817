"""A deterministic synthetic "world" to pretrain and fine-tune a small GPT on, with no download.

Made-up animals (one token each) have a home and a food.  The pretraining corpus states these facts
in sentences and question/answer lines, and also contains JSON records about unrelated things
(tools, cities), so the model knows JSON syntax but has never seen an animal as JSON.

Fine-tuning tasks ask for a **new output format** for an animal:

- ``json``: ``json : blorp =`` -> ``{ " animal " : " blorp " , " home " : " cave " , " food " : " fish " }``
- ``card``: ``card : blorp =`` -> ``blorp | cave | fish``

They are trained on some animals and scored by exact match on **held-out animals**, whose facts
appear only in pretraining: LoRA must change the behaviour while keeping the knowledge. The animals
not trained on are split in two: ``val_animals`` pick the checkpoint during training, and
``test_animals`` (held out) are scored once, at the end.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

import torch

__all__ = [
    "TASKS",
    "HeldoutText",
    "Tokenizer",
    "World",
    "answer_mask",
    "lm_targets",
    "make_world",
    "pack_lines",
    "parse_json_answer",
    "task_data",
    "task_examples",
]

HOMES = ["forest", "river", "cave", "desert", "meadow", "mountain", "swamp", "island"]
FOODS = ["berries", "fish", "seeds", "insects", "leaves", "roots", "honey", "nuts"]
TOOLS = ["hammer", "saw", "drill", "brush", "ladder", "rope", "lamp", "spade"]
SIZES = ["small", "large", "heavy", "light"]
COLORS = ["red", "blue", "green", "yellow", "black", "white"]
CITIES = ["oslo", "lima", "cairo", "quito", "hanoi", "perth", "dakar", "riga"]
SEASONS = ["winter", "spring", "summer", "autumn"]
SPECIAL = ["<pad>", "<eos>"]
TASKS = ("json", "card")


@dataclass
class Tokenizer:
    """Word-level: every space-separated word is one token; ``<eos>`` ends a line."""

    vocab: list[str]
    index: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.index = {w: i for i, w in enumerate(self.vocab)}

    @property
    def pad_id(self) -> int:
        return self.index["<pad>"]

    @property
    def eos_id(self) -> int:
        return self.index["<eos>"]

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.index[w] for w in text.split()]
        except KeyError as exc:
            raise ValueError(f"Word {exc.args[0]!r} is not in the vocabulary of this world.") from None

    def decode(self, ids: list[int]) -> str:
        words = []
        for i in ids:
            if i == self.eos_id:
                break
            if i != self.pad_id:
                words.append(self.vocab[i])
        return " ".join(words)


HELDOUT_FILLER_SHARE = 0.15
FILLER_TEMPLATES = (
    '{{ " tool " : " {t} " , " size " : " {s} " , " color " : " {c} " }}',
    '{{ " city " : " {city} " , " season " : " {season} " }}',
    '{{ " tool " : " {t} " , " color " : " {c} " }}',
    "the {t} is {s} and {c} .",
    "q : what is the weather in {city} ? a : in {city} it is {season} .",
    "card : {t} = {t} | {s} | {c}",
)


def random_filler_line(rng: random.Random) -> str:
    t, s, c, city, season = rng.choice(TOOLS), rng.choice(SIZES), rng.choice(COLORS), rng.choice(CITIES), rng.choice(SEASONS)
    return rng.choice(FILLER_TEMPLATES).format(t=t, s=s, c=c, city=city, season=season)


def all_filler_lines() -> set[str]:
    """Every distinct line ``random_filler_line`` can write."""
    return {template.format(t=t, s=s, c=c, city=city, season=season) for template in FILLER_TEMPLATES
            for t in TOOLS for s in SIZES for c in COLORS for city in CITIES for season in SEASONS}


@dataclass(frozen=True)
class HeldoutText:
    """The held-out split of the pretraining text: lines of the corpus's kind that pretraining never trains on."""

    facts: list[str]
    filler: list[str]

    @property
    def lines(self) -> list[str]:
        return self.facts + self.filler


def syllable_names(n: int, rng: random.Random) -> list[str]:
    onsets = ["bl", "dr", "fl", "gr", "kr", "pl", "sn", "tr", "v", "z", "m", "n", "p", "sh", "qu", "w"]
    vowels = ["a", "e", "i", "o", "u", "oo", "ai"]
    codas = ["rp", "mble", "x", "nk", "sh", "ll", "zz", "p", "g", "m"]
    names: set[str] = set()
    while len(names) < n:
        names.add(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas))
    return sorted(names)


@dataclass
class World:
    """Animals with facts, a tokenizer, and which animals each split may use."""

    animals: list[str]
    home: dict[str, str]
    food: dict[str, str]
    train_animals: list[str]
    test_animals: list[str]  # held out: scored once at the end, never used to pick a checkpoint
    tokenizer: Tokenizer
    seed: int
    val_animals: list[str] = field(default_factory=list)
    _heldout: HeldoutText | None = field(default=None, init=False, repr=False, compare=False)

    def phrasings(self, animal: str) -> list[str]:
        """The seven sentences that state one animal's facts."""
        a, h, f = animal, self.home[animal], self.food[animal]
        return [
            f"the {a} lives in the {h} .",
            f"the {a} eats {f} .",
            f"q : where does the {a} live ? a : the {a} lives in the {h} .",
            f"q : what does the {a} eat ? a : the {a} eats {f} .",
            f"a {a} is found in the {h} and eats {f} .",  # the last three: one of them is held out per animal
            f"in the {h} you can see the {a} .",
            f"q : tell me about the {a} . a : the {a} lives in the {h} and eats {f} .",
        ]

    @property
    def heldout_text(self) -> HeldoutText:
        """Text of the pretraining kind that pretraining never sees: forgetting is measured on it.

        One of the three longer phrasings of every animal (its facts still appear in the other six), and one in
        ``HELDOUT_FILLER_SHARE`` of the distinct filler lines.
        """
        if self._heldout is None:
            rng = random.Random(self.seed + 1)
            facts = [rng.choice(self.phrasings(a)[4:]) for a in self.animals]
            filler = sorted(all_filler_lines())
            rng.shuffle(filler)
            self._heldout = HeldoutText(facts, sorted(filler[: round(len(filler) * HELDOUT_FILLER_SHARE)]))
        return self._heldout

    def fact_lines(self, rng: random.Random) -> list[str]:
        """The pretraining lines about animals (six phrasings each), shuffled."""
        heldout = set(self.heldout_text.facts)
        lines = [line for a in self.animals for line in self.phrasings(a) if line not in heldout]
        rng.shuffle(lines)
        return lines

    def filler_lines(self, rng: random.Random, n: int) -> list[str]:
        """``n`` JSON records and sentences about tools and cities (JSON syntax without animals), none held out."""
        heldout = set(self.heldout_text.filler)
        lines: list[str] = []
        while len(lines) < n:
            line = random_filler_line(rng)
            if line not in heldout:
                lines.append(line)
        return lines

    def pretraining_lines(self, n_filler: int = 0, seed: int | None = None) -> list[str]:
        """Facts about every animal mixed with filler (JSON about other things); never a held-out line."""
        rng = random.Random(self.seed if seed is None else seed)
        facts = self.fact_lines(rng)
        lines = facts + self.filler_lines(rng, n_filler or len(facts) // 2)
        rng.shuffle(lines)
        return lines

    def target(self, task: str, animal: str) -> str:
        """The answer the task asks for (the text after the prompt)."""
        h, f = self.home[animal], self.food[animal]
        if task == "json":
            return f'{{ " animal " : " {animal} " , " home " : " {h} " , " food " : " {f} " }}'
        if task == "card":
            return f"{animal} | {h} | {f}"
        raise ValueError(f"Unknown task {task!r}; choose from {TASKS}.")

    @staticmethod
    def prompt(task: str, animal: str) -> str:
        return f"{task} : {animal} ="


def make_world(n_animals: int = 48, n_heldout: int = 16, seed: int = 0, n_val: int | None = None) -> World:
    """The deterministic world used by the pretrained checkpoint and the notebooks.

    ``n_heldout`` test animals and ``n_val`` validation animals (default ``n_heldout // 2``) are never
    fine-tuned on; the rest are the training animals. Every animal's facts are in pretraining.
    """
    n_val = n_heldout // 2 if n_val is None else n_val
    if not 0 < n_heldout < n_animals or not 0 <= n_val < n_animals - n_heldout:
        raise ValueError(f"Need 0 < n_heldout and 0 <= n_val with n_heldout + n_val < n_animals, got {n_heldout}, {n_val} and {n_animals}.")
    rng = random.Random(seed)
    animals = syllable_names(n_animals, rng)
    home = {a: rng.choice(HOMES) for a in animals}
    food = {a: rng.choice(FOODS) for a in animals}
    shuffled = animals[:]
    rng.shuffle(shuffled)
    heldout, val = sorted(shuffled[:n_heldout]), sorted(shuffled[n_heldout : n_heldout + n_val])
    train = sorted(shuffled[n_heldout + n_val :])
    words = (
        "the lives in eats a is found and you can see q : where does live ? what eat tell me about . "
        "= | { } , \" tool size color city season weather it animal home food json card"
    ).split()
    vocab = SPECIAL + sorted(set(words + animals + HOMES + FOODS + TOOLS + SIZES + COLORS + CITIES + SEASONS))
    return World(animals, home, food, train, heldout, Tokenizer(vocab), seed, val)


def pack_lines(lines: list[str], tok: Tokenizer, n_ctx: int) -> torch.Tensor:
    """Pack whole lines (each ending in <eos>) into rows of n_ctx + 1 tokens that start at a line boundary.

    Returns (rows, n_ctx + 1); a row is padded with <pad> where the next line would not fit.
    """
    rows, row = [], []
    for line in lines:
        ids = tok.encode(line) + [tok.eos_id]
        if len(ids) > n_ctx + 1:
            raise ValueError(f"A line of {len(ids)} tokens does not fit a context of {n_ctx}: {line[:60]!r}")
        if len(row) + len(ids) > n_ctx + 1:
            rows.append(row + [tok.pad_id] * (n_ctx + 1 - len(row)))
            row = []
        row += ids
    if row:
        rows.append(row + [tok.pad_id] * (n_ctx + 1 - len(row)))
    return torch.tensor(rows, dtype=torch.long)


def lm_targets(rows: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token inputs (rows, seq) and targets (rows, seq) from packed rows (rows, seq + 1); padding -> -100."""
    targets = rows[:, 1:].clone()
    targets[targets == pad_id] = -100
    return rows[:, :-1], targets


def task_examples(world: World, task: str, animals: list[str], n_ctx: int) -> torch.Tensor:
    """One row per animal: prompt + answer + <eos>, padded to n_ctx + 1 tokens."""
    tok = world.tokenizer
    rows = []
    for a in animals:
        ids = tok.encode(f"{world.prompt(task, a)} {world.target(task, a)}") + [tok.eos_id]
        rows.append(ids + [tok.pad_id] * (n_ctx + 1 - len(ids)))
    return torch.tensor(rows, dtype=torch.long)


def answer_mask(world: World, task: str, rows: torch.Tensor) -> torch.Tensor:
    """Targets for next-token training on task rows: -100 on the prompt and the padding (loss on the answer only)."""
    targets = rows[:, 1:].clone()
    prompt_len = len(world.tokenizer.encode(world.prompt(task, world.animals[0])))
    targets[:, : prompt_len - 1] = -100
    targets[targets == world.tokenizer.pad_id] = -100
    return targets


def task_data(world: World, task: str, animals: list[str], n_ctx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (rows, n_ctx) and answer-only targets for the task on ``animals``."""
    rows = task_examples(world, task, animals, n_ctx)
    return rows[:, :-1], answer_mask(world, task, rows)


def parse_json_answer(text: str) -> dict | None:
    """Join the word tokens of a JSON answer back into JSON text and parse it (None if it is not valid JSON)."""
    try:
        value = json.loads("".join(text.split()))
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
