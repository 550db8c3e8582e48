"""What a source file imports, read with ``ast``: shared by the import-boundary and dvc-deps tests."""

from __future__ import annotations

import ast
from pathlib import Path


def imports_of(path: Path) -> set[str]:
    """Dotted names a file imports, anywhere in it (function-level imports included).

    ``from a import b`` gives ``a`` and ``a.b``, since ``b`` may be a module; relative imports
    are not used in this repository and are skipped.
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found
