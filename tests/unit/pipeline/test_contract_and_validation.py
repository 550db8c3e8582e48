"""The data contract and row validation, in process and without DVC.

Frames are written as small CSV files and read back with the contract's own read rules, so the
"?" markers and ", " separators of the UCI file are exercised exactly as the validate stage sees
them.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mlops_template.core.contract import (
    ContractError,
    build_schema,
    contract_from_dict,
    load_contract,
    read_raw_csv,
)
from mlops_template.pipeline.validation import DataValidationError, validate_file, validate_frame

ROOT = Path(__file__).resolve().parents[3]
ADULT_CONTRACT = ROOT / "contracts" / "adult.yaml"

HEADER = ("age,workclass,fnlwgt,education,education_num,marital_status,occupation,relationship,"
          "race,sex,capital_gain,capital_loss,hours_per_week,native_country,income")
ROWS = [
    "39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 2174, 0, 40, United-States, <=50K",  # noqa: E501 (a raw UCI line)
    "50, Self-emp-not-inc, 83311, Bachelors, 13, Married-civ-spouse, Exec-managerial, Husband, White, Male, 0, 0, 13, United-States, <=50K",  # noqa: E501 (a raw UCI line)
    "38, Private, 215646, HS-grad, 9, Divorced, Handlers-cleaners, Not-in-family, White, Male, 0, 0, 40, United-States, <=50K",  # noqa: E501 (a raw UCI line)
    "52, Self-emp-inc, 287927, HS-grad, 9, Married-civ-spouse, Exec-managerial, Wife, White, Female, 15024, 0, 40, United-States, >50K",  # noqa: E501 (a raw UCI line)
]
# Unknown workclass, occupation and country, marked "?" as in the UCI file (all three nullable).
ROW_WITH_UNKNOWNS = "54, ?, 180211, Some-college, 10, Married-civ-spouse, ?, Husband, Asian-Pac-Islander, Male, 0, 0, 60, ?, >50K"  # noqa: E501 (a raw UCI line)


@pytest.fixture(scope="module")
def adult():
    return load_contract(ADULT_CONTRACT)


@pytest.fixture(scope="module")
def adult_raw() -> dict:
    return yaml.safe_load(ADULT_CONTRACT.read_text(encoding="utf-8"))


def read_rows(tmp_path: Path, contract, rows: list[str], header: str = HEADER) -> pd.DataFrame:
    path = tmp_path / "rows.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return read_raw_csv(path, contract)


def with_field(row: str, column: str, value: str) -> str:
    fields = row.split(", ")
    fields[HEADER.split(",").index(column)] = value
    return ", ".join(fields)


# --- contract loading -------------------------------------------------------------------------

def test_adult_contract_loads(adult):
    assert adult.target == "income"
    assert adult.positive_class == ">50K"
    assert len(adult.columns) == 15
    assert adult.na_values == ("?",)
    assert adult.unique_rows is True
    assert "income" not in [c.name for c in adult.input_columns]


def test_bad_role_is_rejected(adult_raw):
    raw = copy.deepcopy(adult_raw)
    raw["columns"]["age"]["role"] = "feature"
    with pytest.raises(ContractError, match=r"'age'.*role"):
        contract_from_dict(raw)


def test_undeclared_target_is_rejected(adult_raw):
    raw = copy.deepcopy(adult_raw)
    raw["target"]["column"] = "salary"
    with pytest.raises(ContractError, match="'salary' is not declared"):
        contract_from_dict(raw)


def test_positive_class_must_be_allowed(adult_raw):
    raw = copy.deepcopy(adult_raw)
    raw["target"]["positive"] = "rich"
    with pytest.raises(ContractError, match="positive class 'rich'"):
        contract_from_dict(raw)


def test_contract_errors_from_a_file(tmp_path, adult_raw):
    raw = copy.deepcopy(adult_raw)
    del raw["target"]
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ContractError, match="required key"):
        load_contract(path)


# --- row validation ---------------------------------------------------------------------------

def test_schema_is_strict_and_checks_ranges(adult):
    schema = build_schema(adult)
    assert schema.strict is True
    assert set(schema.columns) == set(adult.column_names)
    checks = [str(c) for c in schema.columns["capital_gain"].checks]
    assert any("in_range" in c for c in checks), checks


def test_clean_rows_pass_with_types(tmp_path, adult):
    frame = read_rows(tmp_path, adult, ROWS)
    result = validate_frame(frame, adult)
    assert result.rows_in == 4 and len(result.valid) == 4 and result.rejected.empty
    assert result.valid["age"].dtype == "int64"
    assert result.valid.loc[0, "workclass"] == "State-gov"  # ", " separators stripped


def test_question_mark_in_nullable_columns_passes(tmp_path, adult):
    frame = read_rows(tmp_path, adult, [*ROWS, ROW_WITH_UNKNOWNS])
    assert frame.loc[4, ["workclass", "occupation", "native_country"]].isna().all()
    result = validate_frame(frame, adult)
    assert len(result.valid) == 5, result.rejected
    assert result.rejected.empty


def test_question_mark_in_non_nullable_column_is_rejected(tmp_path, adult):
    frame = read_rows(tmp_path, adult, [*ROWS, with_field(ROWS[0], "education", "?")])
    result = validate_frame(frame, adult)
    assert len(result.valid) == 4
    assert len(result.rejected) == 1
    assert "education:" in result.rejected.loc[0, "failed_checks"]


def test_duplicate_row_is_rejected_first_copy_kept(tmp_path, adult):
    frame = read_rows(tmp_path, adult, [*ROWS, ROWS[1]])
    result = validate_frame(frame, adult)
    assert len(result.valid) == 4
    assert len(result.rejected) == 1
    assert result.rejected.loc[0, "failed_checks"] == "row:duplicate"
    assert result.rejected.loc[0, "source_row"] == 6  # header is line 1, the copy is line 6
    assert result.failures_by_check == {"row:duplicate": 1}


def test_capital_gain_sentinel_is_rejected_by_range_check(tmp_path, adult):
    frame = read_rows(tmp_path, adult, [*ROWS, with_field(ROWS[0], "capital_gain", "99999")])
    result = validate_frame(frame, adult)
    assert len(result.valid) == 4
    (reason,) = result.rejected["failed_checks"]
    assert reason.startswith("capital_gain:in_range("), reason
    assert result.rejected.loc[0, "capital_gain"] == "99999"  # rejected rows keep raw strings


def test_text_in_numeric_cell_rejects_only_that_row(tmp_path, adult):
    rows = [*ROWS, with_field(ROWS[2], "age", "forty"), with_field(ROWS[3], "capital_gain", "99999")]
    frame = read_rows(tmp_path, adult, rows)
    result = validate_frame(frame, adult)
    assert len(result.valid) == 4
    assert len(result.rejected) == 2
    reasons = dict(zip(result.rejected["age"], result.rejected["failed_checks"], strict=True))
    assert "age:" in reasons["forty"] and "dtype" in reasons["forty"], reasons
    # The row failing coercion did not hide the range failure in another column.
    assert any(r.startswith("capital_gain:in_range") for r in reasons.values()), reasons
    assert sorted(result.valid["age"]) == [38, 39, 50, 52]
    assert result.valid["age"].dtype == "int64"


def test_missing_column_names_it(tmp_path, adult):
    frame = read_rows(tmp_path, adult, ROWS).drop(columns=["hours_per_week"])
    with pytest.raises(DataValidationError, match=r"missing column\(s\) \['hours_per_week'\]"):
        validate_frame(frame, adult)


def test_unexpected_column_names_it(tmp_path, adult):
    frame = read_rows(tmp_path, adult, ROWS).assign(zip_code="12345")
    with pytest.raises(DataValidationError, match=r"unexpected column\(s\) \['zip_code'\]"):
        validate_frame(frame, adult)


def test_empty_frame_is_an_error(tmp_path, adult):
    frame = read_rows(tmp_path, adult, [])
    with pytest.raises(DataValidationError, match="no rows"):
        validate_frame(frame, adult)


def test_missing_file_is_an_error(tmp_path, adult):
    with pytest.raises(DataValidationError, match="does not exist"):
        validate_file(tmp_path / "nope.csv", adult)


def test_bundled_adult_data(adult):
    # The bundled file by name: data/raw/ also holds the batches a user's retrain accepted.
    result = validate_file(ROOT / "data" / "raw" / "adult.csv.gz", adult)
    assert result.rows_in == 32561
    assert len(result.rejected) == 183
    assert len(result.valid) == 32561 - 183
    assert result.failures_by_check == {"capital_gain:in_range(0, 99998)": 159, "row:duplicate": 24}
    for column in adult.columns:
        if not column.nullable:
            assert result.valid[column.name].notna().all(), column.name
    nullable = [c.name for c in adult.columns if c.nullable]
    assert result.valid[nullable].isna().any().all()  # the "?" markers became real missing values
    assert result.valid["capital_gain"].max() <= 99998
    assert not result.valid.duplicated().any()
