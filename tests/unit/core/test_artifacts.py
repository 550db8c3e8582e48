"""A model file that asks for any type outside the allow-list is refused before anything is built.

The hostile files are hand-written skops archives (tests/support/hostile_models.py) with a
matching ``.sha256`` beside them, as an attacker who can write the model store would leave them:
the digest check passes, so only the type check stands between the file and its payload.
"""

from __future__ import annotations

import contextlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import skops.io

from mlops_template.core import artifacts
from mlops_template.core.artifacts import ModelIntegrityError, load_model, model_types, save_model
from mlops_template.core.features import build_features
from mlops_template.core.io import sha256_of
from mlops_template.pipeline.training import build_pipeline
from tests.support.hostile_models import hostile_model_bytes, write_hostile_model

HOSTILE = ("eval", "exec", "os.system", "attrgetter", "pipeline-eval")
# The type each hostile file is refused for (one at least).
NAMED = {"eval": "builtins.eval", "exec": "builtins.exec", "os.system": "os.system",
         "attrgetter": "operator.attrgetter", "pipeline-eval": "builtins.eval"}


@pytest.fixture(scope="module")
def trained(spec, contract, split):
    """A small logistic regression on the project's data: (pipeline, held-out rows)."""
    train, test = split
    rows = train.iloc[:2000]
    pipeline = build_pipeline(spec, "logistic_regression", {"max_iter": 500}, seed=0)
    pipeline.fit(build_features(rows, spec), (rows[contract.target] == contract.positive_class).astype(int))
    return pipeline, test


@pytest.fixture(scope="module")
def small_model(trained, tmp_path_factory) -> Path:
    """That pipeline saved with its checksum (no model card)."""
    path = tmp_path_factory.mktemp("model") / "model.skops"
    save_model(trained[0], path)
    return path


@pytest.mark.parametrize("kind", HOSTILE)
def test_the_hostile_file_is_live(kind, tmp_path) -> None:
    """Control: trusted the way skops' own review would (every reported name), the payload runs."""
    marker = tmp_path / "ran"
    data = hostile_model_bytes(kind, marker)
    with contextlib.suppress(Exception):  # whatever the payload leaves behind may not be a model
        skops.io.loads(data, trusted=skops.io.get_untrusted_types(data=data))
    assert marker.exists()


@pytest.mark.parametrize("kind", HOSTILE)
def test_a_hostile_file_with_matching_digest_is_refused_without_side_effect(kind, tmp_path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "model.skops"
    digest = write_hostile_model(path, kind, marker)
    with pytest.raises(ModelIntegrityError, match="untrusted types") as refused:
        load_model(path)
    assert NAMED[kind] in str(refused.value)
    with pytest.raises(ModelIntegrityError, match="untrusted types"):
        load_model(path, expected_sha256=digest)  # a digest from a trusted record changes nothing
    with pytest.raises(ModelIntegrityError, match="untrusted types"):
        artifacts.trusted_types(path)  # what the train stage hands MLflow
    assert not marker.exists(), "the payload ran"


def test_reading_the_types_builds_nothing(tmp_path) -> None:
    """skops' get_untrusted_types and our schema reader only read JSON: the payload stays inert."""
    marker = tmp_path / "ran"
    data = hostile_model_bytes("eval", marker)
    assert skops.io.get_untrusted_types(data=data) == ["builtins.eval"]
    assert "builtins.eval" in artifacts.schema_types(data, "x")
    assert not marker.exists()


def test_an_allowed_type_under_another_loader_is_refused(tmp_path) -> None:
    """A Pipeline built by calling it (ConstructorFromReduceNode) is not how skops saves one."""
    schema = {"__class__": "Pipeline", "__module__": "sklearn.pipeline",
              "__loader__": "ConstructorFromReduceNode",
              "content": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
                          "content": []},
              "protocol": 2, "_skops_version": "0.16.0"}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("schema.json", json.dumps(schema))
    path = tmp_path / "model.skops"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(ModelIntegrityError, match="ConstructorFromReduceNode"):
        load_model(path, expected_sha256=sha256_of(path))


@pytest.mark.parametrize("content", [b"not a zip", b"PK\x05\x06" + b"\0" * 18])
def test_a_file_that_is_not_skops_is_refused(content, tmp_path) -> None:
    path = tmp_path / "model.skops"
    path.write_bytes(content)
    with pytest.raises(ModelIntegrityError, match="not a readable skops file"):
        load_model(path, expected_sha256=sha256_of(path))


def test_a_real_model_loads_and_its_recorded_types_are_checked(trained, spec, small_model, tmp_path) -> None:
    """A trained pipeline loads; the card's list, when there is one, must cover the file."""
    pipeline, test = trained
    frame = test.head(20)
    expected = pipeline.predict_proba(build_features(frame, spec))
    recorded = model_types(small_model)
    assert set(recorded) <= set(artifacts.ALLOWED_MODEL_TYPES)
    assert "sklearn.pipeline.Pipeline" in recorded
    loaded = load_model(small_model, expected_types=recorded)
    np.testing.assert_array_equal(loaded.predict_proba(build_features(frame, spec)), expected)

    # The same file beside a card that records a narrower list (another model's) is refused.
    model = tmp_path / "model.skops"
    model.write_bytes(small_model.read_bytes())
    artifacts.checksum_path(model).write_text(artifacts.checksum_path(small_model).read_text())
    narrower = [t for t in recorded if t != "sklearn.pipeline.Pipeline"]
    (tmp_path / "model_card.json").write_text(json.dumps({"model_types": narrower}))
    with pytest.raises(ModelIntegrityError, match=r"does not record: \['sklearn.pipeline.Pipeline'\]"):
        load_model(model)
    (tmp_path / "model_card.json").write_text(json.dumps({"model_types": recorded}))
    assert load_model(model) is not None
    (tmp_path / "model_card.json").write_text(json.dumps({"model_types": "everything"}))
    with pytest.raises(ModelIntegrityError, match="not a list of type names"):
        load_model(model)


def test_the_load_failure_description_still_says_untrusted_types(tmp_path) -> None:
    """The service's /readyz reason (serving.models.describe_load_failure) maps our message."""
    from mlops_template.serving.models import describe_load_failure

    path = tmp_path / "model.skops"
    write_hostile_model(path, "eval", tmp_path / "ran")
    with pytest.raises(ModelIntegrityError) as refused:
        load_model(path)
    assert describe_load_failure(refused.value) == "failed its integrity check (untrusted types)"


def test_training_records_the_types_and_loading_checks_them(params, contract, spec, split, tmp_path) -> None:
    """The model card train_candidate writes lists the file's types; load_model holds the file to it."""
    from mlops_template.core.params import TrainSection
    from mlops_template.pipeline.training import train_candidate

    cfg = {**params["train"], "estimator": "logistic_regression"}
    spec_path = tmp_path / "feature_spec.json"
    spec.to_json(spec_path)
    out = tmp_path / "candidate"
    candidate = train_candidate(TrainSection.parse(cfg), params["deploy"]["model_name"], contract, spec,
                                split[0].head(2000), "0" * 64, out, spec_path)
    card = json.loads((out / "model_card.json").read_text())
    assert card["model_types"] == candidate.card["model_types"] == model_types(out / "model.skops")
    assert "sklearn.linear_model._logistic.LogisticRegression" in card["model_types"]
    assert load_model(out / "model.skops") is not None
    # A forest swapped in with matching digests, under the logistic model's card: refused by the card.
    forest = build_pipeline(spec, "random_forest", {"n_estimators": 5}, seed=0)
    rows = split[0].head(500)
    forest.fit(build_features(rows, spec), (rows[contract.target] == contract.positive_class).astype(int))
    save_model(forest, out / "model.skops")
    with pytest.raises(ModelIntegrityError, match="does not record") as refused:
        load_model(out / "model.skops")
    assert "sklearn.ensemble._forest.RandomForestClassifier" in str(refused.value)
