"""The unit tier reads the bundled data by name, never whatever ``data/raw/`` holds.

After the README's continuous-training step, ``retrain`` has added an accepted batch to
``data/raw/``; ``make test-fast`` must still pass there (issue 21). The README walk
(``tests/e2e/ops/test_readme_walk.py``) runs this module in such a clone.
"""

from __future__ import annotations

from pathlib import Path

from mlops_template.pipeline.validation import validate_file

BUNDLED = Path(__file__).resolve().parents[2] / "data" / "raw" / "adult.csv.gz"


def test_the_shared_split_holds_exactly_the_bundled_rows(split, contract):
    train, test = split
    valid = validate_file(BUNDLED, contract).valid
    assert len(train) + len(test) == len(valid)
