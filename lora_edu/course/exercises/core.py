"""The three kinds of exercise, their registry and the instructor's reveal switch.

This module imports nothing from the rest of ``lora_edu`` (and nothing but NumPy), so the per-notebook
modules (``nb01.py``, ...) and ``lora_edu.course.quiz`` can both import it without a cycle.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import math
import numbers
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

__all__ = [
    "REVEAL_ENV",
    "ChoiceExercise",
    "CodeExercise",
    "CodeTrap",
    "Exercise",
    "NumericExercise",
    "PredictExercise",
    "Trap",
    "WrittenExercise",
    "compare_close",
    "compare_exact",
    "digest",
    "package_layer",
    "register",
    "registered_by",
    "registry",
    "reveal",
    "revealing",
]

REVEAL_ENV = "LORA_EDU_REVEAL"
_REGISTRY: dict[str, Exercise] = {}
_ORIGIN: dict[str, str] = {}
_reveal_override: bool | None = None


def digest(exercise_id: str, letter: str) -> str:
    """The salted hash a ``ChoiceExercise`` stores instead of its correct letter."""
    return hashlib.sha256(f"{exercise_id}:{letter.strip().lower()}".encode()).hexdigest()[:16]


def reveal(on: bool | None = True) -> None:
    """Instructor switch: ``reveal(True)`` shows answers in ``quiz.show``/``quiz.check``; ``reveal(None)`` defers to
    the ``LORA_EDU_REVEAL`` environment variable again."""
    global _reveal_override
    if on is not None and not isinstance(on, bool):
        raise TypeError(f"reveal() takes True, False or None, got {on!r}.")
    _reveal_override = on


def revealing() -> bool:
    """True when answers are shown: ``reveal(True)`` was called, or ``$LORA_EDU_REVEAL`` is 1/true/yes."""
    if _reveal_override is not None:
        return _reveal_override
    return os.environ.get(REVEAL_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Exercise:
    """Common fields: a question, the explanation shown once it is answered right, and optional hints."""

    id: str
    prompt: str
    explanation: str
    hints: tuple[str, ...] = ()

    kind = "exercise"

    def verdict(self, answer: object) -> tuple[bool, str]:  # pragma: no cover - every kind overrides it
        raise NotImplementedError

    def solution(self) -> str:  # pragma: no cover
        raise NotImplementedError

    def instructions(self) -> str:
        return ""


@dataclass(frozen=True)
class Trap:
    """A predictable wrong number and the misconception that produces it (``value`` is computed, never typed)."""

    value: Callable[[], float]
    message: str


@dataclass(frozen=True)
class CodeTrap:
    """A usual mistake in a code exercise: ``wrong(*args)`` computes what the mistaken function returns."""

    wrong: Callable[..., Any]
    message: str


def as_number(answer: object) -> float | int:
    """Python and NumPy ints/floats (and 0-d arrays) as a Python number; anything else is a TypeError."""
    if isinstance(answer, np.ndarray) and answer.ndim == 0:
        answer = answer.item()
    if isinstance(answer, (bool, np.bool_)) or not isinstance(answer, numbers.Real):
        raise TypeError(f"This exercise wants a number (int or float, NumPy scalars too), got {answer!r} "
                        f"of type {type(answer).__name__}; write e.g. `answer = 42`.")
    value = answer.item() if isinstance(answer, np.generic) else answer
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"The answer must be a finite number, got {value!r}.")
    return value


@dataclass(frozen=True)
class NumericExercise(Exercise):
    """A number computed by the package (``expected`` is a function, so the value is never typed in).

    An int expected value must be matched exactly (a float equal to it counts); a float within ``rel_tol``
    or ``abs_tol``.  ``traps`` name the misconceptions behind predictable wrong numbers.
    """

    expected: Callable[[], float] = lambda: math.nan
    rel_tol: float = 1e-3
    abs_tol: float = 0.0
    traps: tuple[Trap, ...] = ()

    kind = "number"

    def instructions(self) -> str:
        return "Answer with a number."

    def matches(self, value: float, target: float) -> bool:
        if isinstance(target, (int, np.integer)):
            return float(value) == float(target)
        return math.isclose(float(value), float(target), rel_tol=self.rel_tol, abs_tol=self.abs_tol)

    def verdict(self, answer: object) -> tuple[bool, str]:
        value = as_number(answer)
        if self.matches(value, self.expected()):
            return True, self.explanation
        for trap in self.traps:
            if self.matches(value, trap.value()):
                return False, trap.message
        return False, "That is not the number."

    def solution(self) -> str:
        value = self.expected()
        return f"{value:,}" if isinstance(value, (int, np.integer)) else f"{value:.6g}"


@dataclass(frozen=True)
class PredictExercise(NumericExercise):
    """Predict, then run: the student writes a number in ``prediction`` before the cell that measures it runs.

    ``quiz.predict(id, prediction, measured)`` compares the prediction with ``expected()`` (traps name the usual wrong
    guesses) and shows what the notebook measured; ``measured`` must equal ``expected()`` (else the lesson is wrong).
    """

    kind = "predict"

    def instructions(self) -> str:
        return "Write your prediction (a number) in `prediction` before you run the cell that measures it."

    def verdict(self, answer: object) -> tuple[bool, str]:
        right, message = super().verdict(answer)
        return right, message if right else f"{message} Why: {self.explanation}"


@dataclass(frozen=True)
class WrittenExercise(Exercise):
    """A short argument in words (a proof, or "change X and explain"), not graded: the student compares it with key points.

    ``points`` are what a complete answer says; they are shown once the student has written at least
    ``min_words`` words, and ``explanation`` (a model answer) only to an instructor who reveals answers.
    Nothing reads the argument's content, so its verdict True means only "long enough to compare", and
    ``quiz.check`` shows it in a neutral box, never as a right answer.
    """

    points: tuple[str, ...] = ()
    min_words: int = 12

    kind = "written"

    def instructions(self) -> str:
        return ("Write your argument in a few sentences, as a string in `answer`. It is not graded: once written, "
                "you compare it with the points a complete argument makes.")

    def verdict(self, answer: object) -> tuple[bool, str]:
        if not isinstance(answer, str):
            raise TypeError(f"This exercise wants your argument in words, as a string: answer = \"...\" (got {answer!r}).")
        words = len(answer.split())
        if words < self.min_words:
            return False, (f"{words} words is too short for an argument: write at least {self.min_words}, "
                           "giving the reason, not only the conclusion.")
        listed = "\n".join(f"- {p}" for p in self.points)
        return True, f"compare your argument with these points.\n{listed}"

    def solution(self) -> str:
        return self.explanation


@dataclass(frozen=True)
class ChoiceExercise(Exercise):
    """Multiple choice with exactly one right option, stored as ``digest(id, letter)``.

    ``feedback`` names the misconception behind every wrong option (all of them, checked at registration).
    """

    options: dict[str, str] = field(default_factory=dict)
    answer_digest: str = ""
    feedback: dict[str, str] = field(default_factory=dict)

    kind = "choice"

    def instructions(self) -> str:
        return "\n".join(f"  {letter}) {text}" for letter, text in self.options.items())

    def correct_letter(self) -> str:
        right = [o for o in self.options if digest(self.id, o) == self.answer_digest]
        if len(right) != 1:
            raise ValueError(f"Exercise {self.id!r}: answer_digest matches {len(right)} options; it must match exactly one "
                             f"(compute it with lora_edu.course.quiz.digest({self.id!r}, letter)).")
        return right[0]

    def verdict(self, answer: object) -> tuple[bool, str]:
        if not isinstance(answer, str) or answer.strip().lower() not in self.options:
            raise ValueError(f"Answer with one of the letters {', '.join(self.options)} as a string "
                             f"(e.g. `answer = \"{next(iter(self.options))}\"`), got {answer!r}.")
        letter = answer.strip().lower()
        if digest(self.id, letter) == self.answer_digest:
            return True, self.explanation
        return False, f"Not {letter}: {self.feedback[letter]}"

    def solution(self) -> str:
        letter = self.correct_letter()
        return f"{letter}) {self.options[letter]}"


def describe(value: object) -> str:
    """A short description of a hidden input: small arrays in full, bigger ones by shape."""
    if isinstance(value, np.ndarray):
        return np.array2string(value, precision=3, separator=", ") if value.size <= 16 else f"an array of shape {value.shape}"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"a {type(value).__name__} of shape {tuple(value.shape)}"
    return repr(value)


def package_layer(W: np.ndarray, A: np.ndarray, B: np.ndarray, alpha: float, r: int):
    """A bias-free float64 ``lora_edu.LoRALinear`` holding W (d_out, d_in), A (r, d_in) and B (d_out, r)."""
    import torch
    from torch import nn

    from ...lora.layer import LoRALinear

    d_out, d_in = W.shape
    layer = LoRALinear(nn.Linear(d_in, d_out, bias=False, dtype=torch.float64), r=r, alpha=alpha)
    with torch.no_grad():
        layer.base.weight.copy_(torch.from_numpy(W))
        layer.lora_A.copy_(torch.from_numpy(A))
        layer.lora_B.copy_(torch.from_numpy(B))
    return layer


def compare_close(got: Any, expected: Any, rtol: float = 1e-6, atol: float = 1e-8) -> str | None:
    """None when ``got`` equals ``expected`` (numbers and arrays within tolerance, shapes exactly); else what differs."""
    if isinstance(expected, tuple):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return f"expected a tuple of {len(expected)} values, got {describe(got)}"
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            problem = compare_close(g, e, rtol, atol)
            if problem:
                return f"item {i}: {problem}"
        return None
    if hasattr(got, "detach"):  # a torch tensor, without importing torch
        got = got.detach().cpu().numpy()
    if hasattr(expected, "detach"):
        expected = expected.detach().cpu().numpy()
    g, e = np.asarray(got), np.asarray(expected)
    if not np.issubdtype(g.dtype, np.number) and g.dtype != np.bool_:
        return f"expected a number or an array, got {describe(got)}"
    if g.shape != e.shape:
        return f"expected shape {e.shape}, got shape {g.shape}"
    if not np.allclose(g, e, rtol=rtol, atol=atol):
        return f"expected {describe(e)}, got {describe(g)}"
    return None


def compare_exact(got: Any, expected: Any, args: Sequence[Any] = ()) -> str | None:
    """None when ``got`` is an integer count equal to ``expected`` (a bool is not a count); else what differs."""
    if isinstance(got, (bool, np.bool_)) or got != expected:
        return f"expected {expected:,}, got {got!r}"
    return None


def names_used(fn: Callable[..., Any]) -> set[str]:
    """The global and attribute names a function's code refers to, nested functions and lambdas included, and its own
    name when it comes from elsewhere (``answer = some_module.function``)."""
    code = getattr(fn, "__code__", None)
    if code is None:  # a builtin or a callable object: only its name is known
        return {getattr(fn, "__name__", "")}
    names, todo = set(), [code]
    while todo:
        c = todo.pop()
        names.update(c.co_names, c.co_freevars)  # globals and attributes; names from an enclosing function
        todo.extend(k for k in c.co_consts if inspect.iscode(k))
    if getattr(fn, "__module__", "") and str(fn.__module__).startswith("lora_edu"):
        names.add(fn.__name__)
    return names


@dataclass(frozen=True)
class CodeExercise(Exercise):
    """The student writes a function; the check runs it on hidden cases and compares with the package.

    ``cases(rng)`` yields argument tuples the student never sees; ``reference(*args)`` is the package's answer;
    ``compare(got, expected, args)`` returns None when right, else what differs (default: ``compare_close``).
    ``worked_solution`` (optional) is a derivation in words, shown after a right answer and with the model solution.
    """

    signature: str = ""
    reference: Callable[..., Any] = print
    cases: Callable[[np.random.Generator], Iterable[Sequence[Any]]] = lambda rng: ()
    compare: Callable[[Any, Any, Sequence[Any]], str | None] = lambda got, expected, args: compare_close(got, expected)
    seed: int = 0
    traps: tuple[CodeTrap, ...] = ()
    model_solution: str = ""
    worked_solution: str = ""  # the reasoning behind the model solution, in words: after a right answer and at the reveal
    own_work: tuple[str, ...] = ()  # names the answer must not call: the package functions it is checked against

    kind = "code"

    def instructions(self) -> str:
        own = (f" Work it out yourself: a function that calls {' or '.join(f'`{n}`' for n in self.own_work)} is sent back."
               if self.own_work else "")
        return f"Write `{self.signature}`, then pass the function itself (not its result) as `answer`.{own}"

    def verdict(self, answer: object) -> tuple[bool, str]:
        if not callable(answer):
            raise TypeError(f"This exercise wants a function, e.g. `answer = {self.signature.split('(')[0]}` "
                            f"(no parentheses), got {answer!r}.")
        borrowed = sorted(set(self.own_work) & names_used(answer))
        if borrowed:
            return False, (f"your function calls {', '.join(f'`{n}`' for n in borrowed)}, which computes the answer for you. "
                           "Write the steps yourself from the definition in the prompt.")
        return self.run_cases(answer)

    def run_cases(self, answer: Callable[..., Any]) -> tuple[bool, str]:
        """``answer`` on every hidden case against ``reference``: (right, message), the first wrong case diagnosed. Unlike
        ``verdict``, it does not look at which names ``answer`` calls (a trap may be built on the package's own rule)."""
        cases = [tuple(args) for args in self.cases(np.random.default_rng(self.seed))]
        for n, args in enumerate(cases, start=1):
            shown = ", ".join(describe(a) for a in args)
            try:
                with np.errstate(all="ignore"):
                    got = answer(*copy.deepcopy(args))
            except Exception as err:  # the student's code: report it, do not crash the check
                lead = ""
                if isinstance(err, ValueError) and re.search(r"mismatch|shapes|not aligned|broadcast", str(err)):
                    lead = ("The shapes in one of your products do not fit: write each shape next to each matrix and "
                            "look for a missing or extra transpose. Details: ")
                return False, f"{lead}hidden case {n} of {len(cases)} raised {type(err).__name__}: {err} (inputs: {shown})"
            expected = self.reference(*copy.deepcopy(args))
            with np.errstate(all="ignore"):
                problem = self.compare(got, expected, args)
                diagnosis = self.diagnose(got, expected, args) if problem else ""
            if problem:
                lead = f"{diagnosis} Details: " if diagnosis else ""
                return False, f"{lead}hidden case {n} of {len(cases)} is wrong: {problem} (inputs: {shown})"
        worked = f"\n{self.worked_solution.strip()}" if self.worked_solution else ""
        return True, f"passed all {len(cases)} hidden cases. {self.explanation[:1].upper()}{self.explanation[1:]}{worked}"

    def diagnose(self, got: Any, expected: Any, args: Sequence[Any]) -> str:
        """Name the usual mistake behind a wrong result, before any numbers: a trap, a transposed result, a scale."""
        for trap in self.traps:
            try:
                wrong = trap.wrong(*copy.deepcopy(args))
            except Exception:  # a trap that cannot happen for these inputs
                continue
            if wrong is not None and _same(got, wrong) and not _same(wrong, expected):
                return trap.message
        if isinstance(expected, tuple) and isinstance(got, (tuple, list)) and len(got) == len(expected):
            for i, (g_i, e_i) in enumerate(zip(got, expected, strict=True)):
                found = CodeExercise.diagnose(replace(self, traps=()), g_i, e_i, args)
                if found:
                    return f"Item {i} of your result: {found[0].lower()}{found[1:]}"
            return ""
        g, e = _as_array(got), _as_array(expected)
        if g is None or e is None:
            return ""
        if g.size and not np.all(np.isfinite(g)):
            return "Your result contains NaN or infinity: look for a division by zero."
        if g.shape != e.shape:
            if g.ndim == 2 and g.shape == e.shape[::-1]:
                return (f"Your result has shape {g.shape}, the transpose of the expected {e.shape}: check which side "
                        "each matrix multiplies from, and where a transpose is needed.")
            return f"Your result has shape {g.shape} but should have shape {e.shape}: check the shape of each factor."
        if g.size > 1 and np.all(np.isfinite(g)) and np.any(e != 0):  # one number is always "k times" the right one
            ratio = float(np.vdot(e, g) / np.vdot(e, e))
            if abs(ratio) > 1e-12 and not math.isclose(ratio, 1.0, rel_tol=1e-6) and compare_close(g, ratio * e) is None:
                return f"Your result is exactly {ratio:.6g} times the right one: a constant factor is wrong or missing."
        return ""

    def solution(self) -> str:
        if self.model_solution:
            return self.model_solution.strip()
        name = f"{self.reference.__module__}.{self.reference.__qualname__}"
        try:
            return f"the package's {name}:\n{inspect.getsource(self.reference)}"
        except (OSError, TypeError):
            return f"the package's {name}"


def _same(got: Any, other: Any) -> bool:
    """``got`` equals ``other`` (tuples item by item, NaN equal to NaN), within the default closeness."""
    if isinstance(other, tuple):
        return isinstance(got, (tuple, list)) and len(got) == len(other) and all(_same(g, o) for g, o in zip(got, other, strict=True))
    g, o = _as_array(got), _as_array(other)
    return g is not None and o is not None and g.shape == o.shape and bool(np.allclose(g, o, rtol=1e-6, atol=1e-8, equal_nan=True))


def _as_array(value: Any) -> np.ndarray | None:
    """A numeric array from a NumPy/torch value, or None when it is not one."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        a = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return None
    return a


def register(exercise: Exercise) -> Exercise:
    """Add an exercise to the course (ids are unique; a choice needs feedback on every wrong option)."""
    if not isinstance(exercise, (NumericExercise, ChoiceExercise, CodeExercise, WrittenExercise)):
        raise TypeError("register() takes a NumericExercise, ChoiceExercise, CodeExercise or WrittenExercise "
                        f"(PredictExercise is a NumericExercise), got {type(exercise).__name__}.")
    if exercise.id in _REGISTRY and _REGISTRY[exercise.id] is not exercise:
        raise ValueError(f"Exercise id {exercise.id!r} is registered twice; ids must be unique across notebooks.")
    if isinstance(exercise, ChoiceExercise):
        right = exercise.correct_letter()
        missing = sorted(set(exercise.options) - {right} - set(exercise.feedback))
        if missing or set(exercise.feedback) - set(exercise.options):
            raise ValueError(f"Exercise {exercise.id!r}: give feedback for every wrong option (missing: {missing}) "
                             "and only for options that exist.")
    _REGISTRY[exercise.id] = exercise
    caller = inspect.currentframe().f_back  # type: ignore[union-attr]
    _ORIGIN[exercise.id] = caller.f_globals.get("__name__", "?") if caller else "?"
    return exercise


def registered_by(exercise_id: str) -> str:
    """The module that registered an exercise, e.g. 'lora_edu.course.exercises.nb01'."""
    if exercise_id not in _ORIGIN:
        raise ValueError(f"No exercise {exercise_id!r} is registered.")
    return _ORIGIN[exercise_id]


def registry() -> dict[str, Exercise]:
    """The exercises registered so far (``lora_edu.course.quiz`` loads every notebook's module first)."""
    return _REGISTRY
