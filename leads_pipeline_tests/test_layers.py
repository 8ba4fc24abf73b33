"""The package's layers (ARCHITECTURE.md): no module imports from a layer above its own."""

import ast
from pathlib import Path

import leads_pipeline

PACKAGE = Path(leads_pipeline.__file__).parent

#: Each top-level module or package of ``leads_pipeline`` and its layer, lowest first.
LAYERS = {
    "settings": 0,
    "tables": 0,
    "storage": 1,
    "transform": 2,
    "sources": 3,
    "serving": 4,
    "defs": 5,
    "definitions": 6,
    "cli": 6,
}


def _room(module: str) -> str:
    """``leads_pipeline.storage.lake`` → ``storage``."""
    return module.split(".")[1]


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return [name for name in found if name.startswith("leads_pipeline.")]


def test_every_module_belongs_to_a_layer():
    rooms = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" and p.stem != "__init__"}
    rooms |= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert rooms == set(LAYERS), "add the new module to LAYERS and to ARCHITECTURE.md"


def test_no_import_runs_from_a_lower_layer_to_a_higher_one():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(relative.parts)
        if relative.parts[-1] == "__init__" and len(relative.parts) == 2:
            continue  # leads_pipeline/__init__.py
        mine = LAYERS[_room(module)]
        for imported in _imports(path):
            if LAYERS[_room(imported)] > mine:
                upward.append(f"{module} imports {imported}")
    assert upward == []


def _reads_environment(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv"):
            return True
        imported = {a.name for a in node.names} if isinstance(node, ast.ImportFrom) else set()
        if getattr(node, "module", None) == "os" and imported & {"environ", "getenv"}:
            return True
    return False


def test_only_settings_reads_the_environment():
    readers = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "settings.py" and _reads_environment(path)
    ]
    assert readers == []


def _imports_dagster(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import) and any(
            a.name.split(".")[0] == "dagster" for a in node.names
        ):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "dagster":
            return True
    return False


def test_storage_and_transform_do_not_import_dagster():
    """Tables and derivations are plain code: Dagster enters at the sources' resources."""
    dagster_users = [
        str(path.relative_to(PACKAGE))
        for room in ("storage", "transform")
        for path in sorted((PACKAGE / room).rglob("*.py"))
        if _imports_dagster(path)
    ]
    assert dagster_users == []
