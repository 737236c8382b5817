import re
from pathlib import Path

import lora_edu

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names torch "pytorch"; everything else is spelled the same.
CONDA_TO_PIP = {"pytorch": "torch"}


def requirement_names(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        line = line.split("#")[0].strip().lstrip("- ").strip()
        if line:
            name, spec = re.match(r"([A-Za-z0-9_.\-]+)\s*(.*)", line).groups()
            out[CONDA_TO_PIP.get(name.lower(), name.lower())] = spec.replace(" ", "")
    return out


def test_environment_yml_lists_the_same_packages_as_requirements():
    pip = requirement_names((ROOT / "requirements.txt").read_text().splitlines())
    text = (ROOT / "environment.yml").read_text()
    deps = text.split("dependencies:")[1].splitlines()
    conda = requirement_names([d for d in deps if d.strip().startswith("- ")])
    conda.pop("python"), conda.pop("pip")
    assert conda == pip


def test_the_course_extra_asks_for_what_requirements_ask_for():
    """Colab installs ``lora_edu[course]``: the same PEFT, transformers and torchao bounds as ``make lab`` installs."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    extra = re.search(r"^course = \[(.*)\]$", pyproject, re.M).group(1)
    wanted = requirement_names([x.strip().strip('"') for x in extra.split(",")])
    pip = requirement_names((ROOT / "requirements.txt").read_text().splitlines())
    assert set(wanted) == {"peft", "transformers", "torchao"}
    assert all(pip[name] == spec for name, spec in wanted.items())


def test_cpu_constraint_pins_a_torch_that_requirements_allow():
    pinned = (ROOT / "constraints-cpu.txt").read_text()
    assert re.search(r"^torch==2\.\d+\.\d+$", pinned, re.M)
    assert "torch>=2.3" in (ROOT / "requirements.txt").read_text()


def test_public_api_is_exported_and_documented():
    for name in lora_edu.__all__:
        obj = getattr(lora_edu, name)
        assert obj.__doc__, f"{name} has no docstring"


def test_readme_quick_start_has_exactly_two_commands():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start")[1].split("\n## ")[0]
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", quick, re.S).group(1)
    commands = [line for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert commands == ["make lab", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()
