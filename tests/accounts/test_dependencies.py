"""The apps depend one way: gateway uses accounts, accounts never imports gateway."""

import ast
from pathlib import Path

ACCOUNTS = Path(__file__).resolve().parents[2] / "accounts"


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def test_no_module_of_accounts_imports_gateway():
    offenders = {
        str(path.relative_to(ACCOUNTS.parent)): sorted(
            name for name in imported_modules(path) if name == "gateway" or name.startswith("gateway.")
        )
        for path in sorted(ACCOUNTS.rglob("*.py"))
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_walk_sees_imports_anywhere_in_a_module(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from gateway import errors\n\nimport gateway.metrics as m\n")
    assert imported_modules(module) == {"gateway", "gateway.metrics"}
