"""Public datasets of different shapes for the bad-batch guard's attack tests and benchmark.

Each is read offline (the repository's Adult file, the datasets bundled in ``statsmodels``),
turned into the raw strings a batch file holds, deduplicated (the contracts declare unique rows)
and given a contract, so that any guard code is tried on more than Adult's columns:

- ``adult``: 32k census rows, 8 categorical and 6 numeric columns, two unused by the model;
- ``fair``: 5k survey rows (statsmodels ``fair``: had an affair?), small integer scales as
  categories, plus a record number the model ignores (role ``ignore``);
- ``randhie``: 4k rows of the RAND health insurance experiment (any doctor visit?), mostly
  numeric, coarse, with many rows that differ only in the label.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mlops_template.core.contract import Contract, contract_from_dict, load_contract, read_raw_csv
from mlops_template.ops.guard import Accepted
from mlops_template.pipeline.validation import validate_frame

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Dataset:
    """Raw rows of one dataset, its contract, the model's columns, and where attacks aim."""

    name: str
    raw: pd.DataFrame              # every cell a string, as read_raw_csv returns a batch
    contract: Contract
    model_columns: list[str]
    ignored: str                   # a column the model does not use
    group: tuple[str, str]         # (column, value) a targeted flip aims at

    @property
    def positive(self) -> str:
        return self.contract.positive_class

    @property
    def negative(self) -> str:
        return self.contract.negative_class

    def split(self, accepted_share: float, seed: int) -> tuple[Accepted, pd.DataFrame]:
        """Accepted data (a random ``accepted_share`` of the rows) and the held-out rest, shuffled."""
        order = np.random.default_rng(seed).permutation(len(self.raw))
        cut = int(len(order) * accepted_share)
        accepted = self.raw.iloc[order[:cut]]
        held_out = self.raw.iloc[order[cut:]].reset_index(drop=True)
        return Accepted.from_frame(validate_frame(accepted, self.contract).valid, self.contract), held_out


def _strings(frame: pd.DataFrame) -> pd.DataFrame:
    """Numbers written as a CSV writer would (integral floats without ``.0``)."""
    out = {}
    for name, values in frame.items():
        if pd.api.types.is_float_dtype(values) and (values.dropna() % 1 == 0).all():
            values = values.astype("Int64")
        out[name] = values.astype("string").astype(object)
    return pd.DataFrame(out)


def _categorical(values: pd.Series) -> dict:
    return {"type": "str", "role": "categorical", "allowed": sorted(values.dropna().unique().tolist())}


def adult() -> Dataset:
    """The repository's Adult file, as the guard reads a batch of it."""
    contract = load_contract(REPO / "contracts/adult.yaml")
    raw = read_raw_csv(REPO / "data/raw/adult.csv.gz", contract).drop_duplicates(ignore_index=True)
    model = [c.name for c in contract.columns if c.role in ("numeric", "categorical")
             and c.name not in ("fnlwgt", "education")]  # params.yaml: featurize.drop
    return Dataset("adult", raw, contract, model, "fnlwgt", ("sex", "Female"))


def fair() -> Dataset:
    """statsmodels' ``fair`` survey: did the respondent have an affair (yes/no)?"""
    import statsmodels.api as sm

    data = sm.datasets.fair.load_pandas().data
    data = data.assign(affair=np.where(data.pop("affairs") > 0, "yes", "no"))
    data = _strings(data).drop_duplicates(ignore_index=True)
    data.insert(0, "record", [str(100000 + i) for i in range(len(data))])
    categorical = ["rate_marriage", "religious", "educ", "occupation", "occupation_husb"]
    columns = {"record": {"type": "int", "role": "ignore"},
               **{c: _categorical(data[c]) for c in categorical},
               **{c: {"type": "float", "role": "numeric"} for c in ("age", "yrs_married", "children")},
               "affair": {"type": "str", "role": "target", "allowed": ["no", "yes"]}}
    contract = contract_from_dict({"name": "fair", "unique_rows": True, "columns": columns,
                                   "target": {"column": "affair", "positive": "yes"}})
    model = [c for c in columns if c not in ("record", "affair")]
    return Dataset("fair", data[list(columns)], contract, model, "record", ("religious", "1"))


def randhie() -> Dataset:
    """statsmodels' ``randhie``: did the person see a doctor in the year (yes/no)?"""
    import statsmodels.api as sm

    data = sm.datasets.randhie.load_pandas().data
    data = data.assign(visit=np.where(data.pop("mdvis") > 0, "yes", "no"))
    data = _strings(data).drop_duplicates(ignore_index=True)
    data.insert(0, "record", [str(200000 + i) for i in range(len(data))])
    categorical = ["idp", "hlthg", "hlthf", "hlthp"]
    numeric = ["lncoins", "lpi", "fmde", "physlm", "disea"]
    columns = {"record": {"type": "int", "role": "ignore"},
               **{c: _categorical(data[c]) for c in categorical},
               **{c: {"type": "float", "role": "numeric"} for c in numeric},
               "visit": {"type": "str", "role": "target", "allowed": ["no", "yes"]}}
    contract = contract_from_dict({"name": "randhie", "unique_rows": True, "columns": columns,
                                   "target": {"column": "visit", "positive": "yes"}})
    return Dataset("randhie", data[list(columns)], contract, categorical + numeric, "record", ("hlthg", "1"))


LOADERS = {"adult": adult, "fair": fair, "randhie": randhie}
