"""Loading the models a replica serves: the pinned one, or those its routing document names.

:class:`ModelLoader` loads one model by tag and verifies it against the digest of the record that
names it (:func:`~mlops_template.serving.models.load_served_model`); in team mode a model missing
from the local store is first fetched from beside the routing document
(:mod:`~mlops_template.serving.archives`), imported only if its archive has the slot's
``archive_sha256``. :meth:`ModelLoader.load_routing` reads a routing document, checks it can be
trusted and loads its models, reusing those already served with the same digest. Its failures
are of two kinds, which the reloader (:mod:`~mlops_template.serving.reloader`) treats apart: a
trust refusal (:class:`~mlops_template.serving.routing.RoutingRefused`: not retried until the
document changes) and a model that cannot be loaded now
(:class:`~mlops_template.serving.models.ModelUnavailable` naming its role and tag: retried).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import NotFound

from mlops_template.core import objectstore
from mlops_template.core.contract import Contract
from mlops_template.serving import archives, routing
from mlops_template.serving.models import (
    ModelDigestMismatch,
    ModelUnavailable,
    ServedModel,
    Serving,
    describe_load_failure,
    load_served_model,
)

logger = logging.getLogger(__name__)


class ModelLoader:
    """Loads and verifies models with one contract and scorer setting (see the module doc)."""

    def __init__(self, contract: Contract, use_replay: bool, routing_location: str | Path | None,
                 verify_key: Any) -> None:
        """``verify_key``: the deploy key's public half that routing documents must be signed with, or None."""
        self.contract = contract
        self.use_replay = use_replay
        self.routing_location = routing_location
        self.verify_key = verify_key

    def load(self, tag: str, expected_sha256: str | None, archive_sha256: str | None = None) -> ServedModel:
        """Load and verify one model; ``expected_sha256`` is the skops digest from the record that
        names it (routing slot, bento argument)."""
        location = self.routing_location
        if location is not None and objectstore.is_url(location):
            try:
                bentoml.models.get(tag)
            except NotFound:
                if archive_sha256 is None:
                    raise routing.RoutingRefused("no_digest", f"model {tag} must be fetched but its slot names "
                                                 "no archive_sha256") from None
                logger.info("model %s not in the local store: fetching it from %s", tag, location)
                archives.fetch(str(location), tag, archive_sha256)
        return load_served_model(tag, self.contract, use_replay=self.use_replay, expected_sha256=expected_sha256)

    def load_routing(self, path: str | Path, current: Serving | None) -> Serving:
        """Read the routing document, check it can be trusted, and load its models, reusing those
        already served with the same digest (RoutingRefused on a failed trust check,
        :class:`~mlops_template.serving.models.ModelUnavailable` naming the model on another failure)."""
        document = routing.check_trusted(routing.read_routing(path), self.verify_key, objectstore.is_url(path))
        loaded = {(m.tag, m.sha256): m for m, _ in current.roles()} if current is not None else {}

        def get(role: str) -> ServedModel | None:
            slot = document[role]
            if slot is None:
                return None
            tag, digest = slot["model_tag"], slot["model_sha256"]
            try:
                return loaded.get((tag, digest)) or self.load(tag, digest, slot.get("archive_sha256"))
            except ModelDigestMismatch as exc:
                raise routing.RoutingRefused("model_sha256", f"its {role} model {tag} "
                                             f"{describe_load_failure(exc)}: {exc}") from None
            except routing.RoutingRefused:
                raise
            except Exception as exc:
                raise ModelUnavailable(f"its {role} model {tag} {describe_load_failure(exc)} "
                                       f"({type(exc).__name__}: {exc})") from exc

        champion = get("champion")
        if champion is None:  # validate_routing requires one; say so rather than serve nothing
            raise routing.RoutingError(f"routing document {path} names no champion")
        return Serving(champion, get("challenger"), float(document["canary_share"]))
