"""The file names of a model package, in one place.

Training writes a package (``models/candidate/``): the skops pipeline, its checksum, the feature
spec and the model card. Packaging copies those into a BentoML model directory and adds a copy of
the contract, the serving config (task, classes, threshold) and the columns' importance.
Everything that writes or reads a package (training, evaluation, the champion check, packaging,
the served model's loader, the archive publisher) names the files through these constants. It
lives in ``core/`` because it ships in the bento with the service.
"""

from __future__ import annotations

CHECKSUM_SUFFIX = ".sha256"  # a file's checksum is kept beside it, under its name plus this
MODEL_FILE = "model.skops"  # the fitted pipeline (skops, no pickle); its sha256 is a routing slot's model_sha256
CHECKSUM_FILE = f"{MODEL_FILE}{CHECKSUM_SUFFIX}"  # the pipeline's sha256, written beside it
FEATURE_SPEC_FILE = "feature_spec.json"  # the feature spec the pipeline was trained with
MODEL_CARD_FILE = "model_card.json"  # what the model is: params, data digest, metrics, trusted types
CONTRACT_FILE = "contract.yaml"  # the contract's copy inside a BentoML model (the request schema)
SERVING_FILE = "serving.json"  # task, classes, target summary, threshold and class names inside a BentoML model
# Permutation importance of each input column (metrics/importance.json, written by evaluate), shipped
# in the BentoML model when it exists: monitoring weighs each column's drift by it.
IMPORTANCE_FILE = "importance.json"

# What training writes and packaging copies into the BentoML model.
TRAINED_FILES = (MODEL_FILE, CHECKSUM_FILE, FEATURE_SPEC_FILE, MODEL_CARD_FILE)
