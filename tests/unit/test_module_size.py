"""No package module grows into a warehouse: each stays under a size a reader can hold at once."""

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "mlops_template"
MAX_LINES = 400


def test_no_package_module_is_over_the_limit():
    too_long = {str(path.relative_to(PACKAGE.parent)): lines
                for path in sorted(PACKAGE.rglob("*.py"))
                if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not too_long, f"split these modules (over {MAX_LINES} lines): {too_long}"
