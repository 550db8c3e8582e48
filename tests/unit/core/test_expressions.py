"""Derived-feature expressions: arithmetic over columns only, the same values as before, never code.

Before this check, expressions went to ``DataFrame.eval(engine="python")``, which resolves
``@name`` in the caller's scope and follows attributes and method calls:
``@pd.io.common.os.system('...')`` ran a shell command and ``age.to_csv('/any/path')`` wrote a file
when the featurize stage, the evaluate stage or the service computed features.
"""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pandas as pd
import pytest

from mlops_template.core.expressions import FUNCTIONS, ExpressionError, evaluate, parse_expression
from mlops_template.core.features import FeatureError, FeatureSpec, build_features, feature_spec_from
from mlops_template.pipeline.params_check import problems_with
from mlops_template.pipeline.training import build_pipeline
from mlops_template.serving.scoring import compile_scorer, pipeline_probabilities

# (expression, a part the refusal must name); {marker} is a file the payload would create.
HOSTILE = [
    ("@pd.io.common.os.system('touch {marker}')", "not a valid expression"),
    ("age + @pd.io.common.os.system('touch {marker}')", "not a valid expression"),
    ("__import__('os').system('touch {marker}')", "__import__('os').system"),
    ("age + 0 * age.to_csv('{marker}')", "the call \"age.to_csv("),  # valid Python: wrote the file
    ("age.__class__", "age.__class__"),
    ("age.__class__.__mro__[-1].__subclasses__()", "__subclasses__"),
    ("(lambda: 1)()", "(lambda: 1)()"),
    ("age[0]", "a subscript"),
    ("'abc'", "the constant 'abc'"),
    ("age * (sex == 'Male')", "the constant 'Male'"),
    ("__age__ + 1", "'__age__'"),
    ("[a for a in age]", "a comprehension"),
    ("clip(age, 0, 1, out=age)", "keyword arguments"),
    ("log(*age)", "unpacking"),
    ("exp(age, age)", "exp takes 1 argument"),
    ("getattr(age, 'real')", "only ["),
    ("age if age else 1", "if/else"),
    ("age and 1", "and/or"),
    ("log", "the function name 'log'"),
    ("True + age", "the constant True"),
    ("1j * age", "the constant 1j"),
    ("9007199254740993 * age", "beyond 2**53"),
    ("(x := age)", "an assignment"),
    ("age +", "not a valid expression"),
]
LEGIT_PANDAS = [  # what DataFrame.eval(engine="python") also computes: compared with it
    "capital_gain - capital_loss",
    "hours_per_week * 52 / (age + 1)",
    "age ** 2 - education_num ** 0.5",
    "capital_gain // 1000 + capital_loss % 7",
    "-education_num + sqrt(hours_per_week)",
    "log1p(capital_gain) - log(hours_per_week)",
    "exp(-age / 50) * abs(capital_gain - capital_loss)",
    "(age > 40) * 1.0 + (hours_per_week >= 40)",
    "age == 39",
    "age != 39",
    "2.5e-3 * capital_gain",
    "capital_gain / capital_loss",  # 0/0 and x/0: NaN and inf as pandas gives them
]
LEGIT_NUMPY = {  # functions pandas' eval lacks: compared with numpy directly
    "where(age > 30, log1p(capital_gain), 0)": lambda f: np.where(f.age > 30, np.log1p(f.capital_gain), 0.0),
    "minimum(age, 40) + maximum(hours_per_week, 10)":
        lambda f: np.minimum(f.age, 40) + np.maximum(f.hours_per_week, 10),
    "clip(capital_gain, 0, 5000)": lambda f: np.clip(f.capital_gain, 0, 5000),
    "floor(age / 10) - ceil(hours_per_week / 7)": lambda f: np.floor(f.age / 10) - np.ceil(f.hours_per_week / 7),
    "20 < age < 30": lambda f: ((f.age > 20) & (f.age < 30)).astype(float),
}


@pytest.fixture(scope="module")
def rows(split) -> pd.DataFrame:
    return split[0].head(2000)


@pytest.mark.parametrize(("expression", "named"), HOSTILE)
def test_a_hostile_expression_is_refused_before_use(expression, named, rows, tmp_path) -> None:
    """Refused when a spec is made (so a spec read from an artifact never computes it)."""
    marker = tmp_path / "payload-ran"
    expression = expression.format(marker=marker)
    try:
        spec = FeatureSpec(("age",), (), {"bad": expression})
    except FeatureError as exc:
        refused: FeatureError | None = exc
    else:  # accepted: computed as the featurize stage and the service would
        refused = None
        with contextlib.suppress(FeatureError):
            build_features(rows, spec)
    assert not marker.exists(), "the expression ran"
    assert refused is not None, f"{expression!r} was accepted"
    assert named in str(refused).split(repr(expression), 1)[-1]  # the part, not the quoted whole
    with pytest.raises(ExpressionError):  # the evaluator refuses on its own too
        evaluate(expression, {"age": rows.age.to_numpy(dtype=float)}, len(rows))


@pytest.mark.parametrize("expression", ["@pd.io.common.os.system('touch {marker}')",
                                        "age + 0 * age.to_csv('{marker}')", "age.__class__", "age[0]",
                                        "'abc'"])
def test_a_spec_file_with_a_hostile_expression_is_refused_when_read(expression, tmp_path) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "feature_spec.json"
    path.write_text(json.dumps({"numeric": ["age"], "categorical": [],
                                "derived": {"bad": expression.format(marker=marker)}}))
    with pytest.raises(FeatureError, match="'bad'"):
        FeatureSpec.from_json(path)
    assert not marker.exists()


@pytest.mark.parametrize("content", ['[]', '{"numeric": "age", "categorical": [], "derived": {}}',
                                     '{"numeric": [], "categorical": [], "derived": {"x": 1}}',
                                     '{"numeric": [], "categorical": [], "derived": {"_x": "age"}}', 'nope'])
def test_a_malformed_spec_file_is_refused(content, tmp_path) -> None:
    path = tmp_path / "feature_spec.json"
    path.write_text(content)
    with pytest.raises(FeatureError, match="feature spec|derived feature name"):
        FeatureSpec.from_json(path)


@pytest.mark.parametrize(("expression", "named"), [h for h in HOSTILE if "{marker}" not in h[0]])
def test_params_check_names_the_key_and_the_offending_part(params, contract, expression, named) -> None:
    changed = {**params, "featurize": {**params["featurize"], "derived": {"odd": expression}}}
    problems = problems_with(changed, contract)
    assert len(problems) == 1, problems
    assert "featurize.derived.odd" in problems[0] and named in problems[0], problems


def test_params_check_refuses_text_columns(params, contract) -> None:
    changed = {**params, "featurize": {**params["featurize"], "derived": {"odd": "sex * 2"}}}
    assert problems_with(changed, contract) == [
        "featurize.derived.odd reads the text columns ['sex']; derived features take numeric columns only"]


@pytest.mark.parametrize(("derived", "expected"), [
    ({"_hidden": "age"}, "featurize.derived._hidden: a derived column name must be text not starting with '_'"),
    ({"five": 5}, "featurize.derived.five must be an expression (a string), got 5"),
])
def test_params_check_refuses_odd_names_and_values(params, contract, derived, expected) -> None:
    changed = {**params, "featurize": {**params["featurize"], "derived": derived}}
    assert problems_with(changed, contract) == [expected]


@pytest.mark.parametrize("expression", LEGIT_PANDAS)
def test_legit_expressions_compute_what_pandas_eval_computed(expression, rows) -> None:
    spec = FeatureSpec(("age",), (), {"value": expression})
    ours = build_features(rows, spec)["value"]
    before = pd.to_numeric(rows.eval(expression, engine="python")).astype("float64")
    np.testing.assert_array_equal(ours.to_numpy(), before.to_numpy())
    assert ours.dtype == np.float64


@pytest.mark.parametrize("expression", sorted(LEGIT_NUMPY))
def test_numpy_functions_compute_what_numpy_computes(expression, rows) -> None:
    spec = FeatureSpec(("age",), (), {"value": expression})
    expected = np.asarray(LEGIT_NUMPY[expression](rows.astype({c: "float64" for c in ("age", "capital_gain")})),
                          dtype=np.float64)
    np.testing.assert_array_equal(build_features(rows, spec)["value"].to_numpy(), expected)


def test_nulls_and_constants() -> None:
    """A null in a nullable int column is NaN in the result (0.0 compared); a constant fills every row."""
    frame = pd.DataFrame({"a": pd.array([1, None, 3], dtype="Int64"), "b": [0.5, 1.0, np.nan]})
    spec = FeatureSpec(("a",), (), {"d": "a - b", "k": "2 ** 3", "big": "10 ** 400", "c": "a > 0"})
    out = build_features(frame, spec)
    np.testing.assert_array_equal(out["d"].to_numpy(), [0.5, np.nan, np.nan])
    np.testing.assert_array_equal(out["c"].to_numpy(), [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(out["k"].to_numpy(), [8.0, 8.0, 8.0])
    assert np.isinf(out["big"]).all()


def test_every_function_is_callable_with_its_arity() -> None:
    columns = {"x": np.array([0.5, 2.0, 9.0])}
    for name, (_, arity) in FUNCTIONS.items():
        values = evaluate(f"{name}({', '.join(['x'] * arity)})", columns, 3)
        assert values.shape == (3,) and values.dtype == np.float64, name
    assert parse_expression("x") is parse_expression("x")  # parsed once, then cached


def test_service_replay_computes_the_pipeline_features(contract, split) -> None:
    """The service's numpy replay and build_features use one evaluator: identical features."""
    derived = {"net": "capital_gain - capital_loss",
               "gain_log": "where(capital_gain > 0, log1p(capital_gain), 0)",
               "hours_per_year": "clip(hours_per_week, 1, 80) * 52 / (age + 1)",
               "older": "age >= 45"}
    spec = feature_spec_from(contract, ["fnlwgt", "education"], derived)
    train = split[0].head(3000)
    pipeline = build_pipeline(spec, "logistic_regression", {"max_iter": 500}, seed=0)
    pipeline.fit(build_features(train, spec), (train[contract.target] == contract.positive_class).astype(int))
    scorer = compile_scorer(pipeline, spec, contract)
    assert scorer is not None
    test = split[1].head(300)
    inputs = [c.name for c in contract.input_columns]
    records = [{k: v for k, v in row.items() if v is not None}
               for row in json.loads(test[inputs].to_json(orient="records"))]
    replayed = scorer._columns(records)
    offline = build_features(test, spec)
    for name in derived:
        np.testing.assert_array_equal(replayed[name], offline[name].to_numpy(), err_msg=name)
    np.testing.assert_allclose(scorer.predict_proba(records),
                               pipeline_probabilities(pipeline, spec, contract, records), rtol=0, atol=1e-12)
