"""The package's layout as the README describes it: wings by idea, imports only downwards, no circles."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lora_edu"
# lowest first; a wing may import the wings before it in this list (paper and scale share a floor)
FLOORS = [{"checks"}, {"maths"}, {"lora"}, {"gpt"}, {"paper", "scale"}, {"course"}]
SIDE_WINGS = {"devtools"}  # developers' instruments: import from the floors, imported by none of them
FLOOR_OF = {wing: i for i, floor in enumerate(FLOORS) for wing in floor}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """The lora_edu modules that ``path`` imports, as absolute dotted names (relative imports resolved)."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if target.startswith("lora_edu"):
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names if (ROOT / Path(*f"{target}.{a.name}".split("."))).exists()
                             or (ROOT / Path(*f"{target}.{a.name}".split("."))).with_suffix(".py").exists())
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("lora_edu"))
    return found


def wing(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def modules() -> dict[str, set[str]]:
    return {module_name(p): imported_modules(p) for p in PACKAGE.rglob("*.py")}


def test_every_module_lives_in_a_wing():
    loose = [m for m in modules() if m.count(".") == 1 and wing(m) not in FLOOR_OF | dict.fromkeys(SIDE_WINGS)]
    assert loose == [], f"modules outside the wings: {loose}"


def test_imports_only_go_down():
    upward = []
    for module, imports in modules().items():
        here = wing(module)
        if here is None:  # lora_edu/__init__.py re-exports the quick-start names
            continue
        for target in imports:
            there = wing(target)
            if there in (None, here):
                continue
            if there in SIDE_WINGS or (here not in SIDE_WINGS and FLOOR_OF[there] >= FLOOR_OF[here]):
                upward.append(f"{module} -> {target}")
    assert upward == [], "imports that run up or sideways:\n" + "\n".join(sorted(upward))


def test_no_import_circles():
    graph = {m: {t for t in imps if t in modules_set} for modules_set in [set(modules())] for m, imps in modules().items()}
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):  # a package and its own modules
                continue
            if state.get(nxt) == 1:
                circles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert circles == []


def test_the_readme_names_every_wing():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### How the package is built", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([a-z]+)/`", section)) | {m.removesuffix(".py") for m in re.findall(r"`([a-z]+\.py)`", section)}
    wings = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    wings |= {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert wings <= named, f"wings missing from the README: {wings - named}"


def test_benchmarks_import_the_package_never_the_tests():
    for script in (ROOT / "benchmarks").glob("*.py"):
        tree = ast.parse(script.read_text(encoding="utf-8"))
        names = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not any(name == "tests" or name.startswith("tests.") for name in names), script.name
