"""Models are plain nn.Modules: nothing under wakeword_dist/models/ imports accelerate,
deepspeed or wandb -- directly, inside a function, or through another project module it
imports. Read from the source with ast, so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "wakeword_dist"
FORBIDDEN = {"accelerate", "deepspeed", "wandb"}


def _module_file(name: str) -> Path | None:
    """wakeword_dist.x.y -> its .py file (or package __init__), None outside the project."""
    parts = name.split(".")
    if parts[0] != "wakeword_dist":
        return None
    base = PACKAGE.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, anywhere in the file."""
    package = ".".join(("wakeword_dist", *path.relative_to(PACKAGE).parent.parts))
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from .x import y / from . import y
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module
            names.add(module)
            names |= {f"{module}.{alias.name}" for alias in node.names}  # submodules imported by name
    return names


def forbidden_imports(root: Path) -> dict[str, list[str]]:
    """{file: [forbidden module, via chain]} for every file under ``root`` (project imports followed)."""
    found: dict[str, list[str]] = {}
    for start in sorted(root.rglob("*.py")):
        seen, stack = set(), [(start, [start.relative_to(PACKAGE.parent).as_posix()])]
        while stack:
            path, chain = stack.pop()
            if path in seen:
                continue
            seen.add(path)
            for name in _imports(path):
                if name.split(".")[0] in FORBIDDEN:
                    found.setdefault(str(start.relative_to(PACKAGE.parent)), []).append(" -> ".join([*chain, name]))
                target = _module_file(name)
                if target is not None:
                    stack.append((target, [*chain, name]))
    return found


def test_models_import_no_distributed_or_logging_library():
    assert list((PACKAGE / "models").rglob("*.py")), "models/ has modules to check"
    assert forbidden_imports(PACKAGE / "models") == {}


def test_the_checker_sees_lazy_and_indirect_imports():
    """A check that cannot fail is no check: the recipe imports all three, the trainer reaches them."""
    found = forbidden_imports(PACKAGE / "train")
    assert any("accelerate" in chain for chains in found.values() for chain in chains)
    assert any(chain.endswith("wandb") for chain in found.get("wakeword_dist/train/run_logger.py", []))
