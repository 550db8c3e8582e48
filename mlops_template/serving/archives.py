"""Model archives published beside the team-mode routing document, checked by their digests.

A model the routing document names is published as a BentoML model archive
(``s3://bucket/prefix/models/<name>/<version>.bentomodel``) before the document names it, and
the document records the archive's sha256 (``archive_sha256``) and the skops file's
(``model_sha256``) in the slot. A replica that does not hold the model fetches the archive and
imports it only when its sha256 is the one the (signed) document records: a tampered archive is
refused before anything of it reaches the local store.

Publishing never overwrites: a key that already holds an archive is reused only when it is the
same model, and refused loudly otherwise (:class:`PublishConflict`). BentoML's export is
byte-identical only on the machine that made it (the tar records file times), so "the same"
means: every file in the archive has the same name and bytes as the local model's directory
(skops file, feature spec, contract, serving config, ``model.yaml``). The digest recorded for a
reused archive is that of the bytes in the store, which is what replicas download.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import tarfile
import tempfile
from pathlib import Path

from mlops_template.core import objectstore
from mlops_template.core.io import sha256_of
from mlops_template.core.package_files import MODEL_FILE  # the file whose digest is a slot's model_sha256
from mlops_template.serving.routing_errors import RoutingError, RoutingRefused

logger = logging.getLogger(__name__)



class PublishConflict(RoutingError):
    """The archive key of a model already holds a different model: nothing is published."""


def archive_url(routing_url: str, model_tag: str) -> objectstore.ObjectUrl:
    """Where a model named by a routing document in the object store is published."""
    name, _, version = model_tag.partition(":")
    return objectstore.ObjectUrl.parse(routing_url).sibling("models", name, f"{version}.bentomodel")


def directory_digests(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every regular file under ``folder``."""
    return {path.relative_to(folder).as_posix(): sha256_of(path)
            for path in sorted(folder.rglob("*")) if path.is_file()}


def archive_digests(archive: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every member of a model archive, read without extracting.

    Directories are skipped; a link or a device cannot be compared with a local file, so it is
    named by its kind and never equals one.
    """
    found: dict[str, str] = {}
    with tarfile.open(archive, mode="r:*") as tar:
        for member in tar.getmembers():
            name = member.name.removeprefix("./").strip("/")
            if member.isdir() or not name:
                continue
            if not member.isfile():
                found[name] = f"<{'link' if member.issym() or member.islnk() else 'special'} member>"
                continue
            digest = hashlib.sha256()
            handle = tar.extractfile(member)
            if handle is None:  # a regular member always has its bytes; say so rather than guess
                found[name] = "<unreadable member>"
                continue
            with handle as fh:
                for block in iter(functools.partial(fh.read, 1 << 20), b""):
                    digest.update(block)
            found[name] = digest.hexdigest()
    return found


def _differences(published: dict[str, str], local: dict[str, str]) -> list[str]:
    names = sorted(set(published) | set(local))
    return [name for name in names if published.get(name) != local.get(name)]


def publish(routing_url: str, model_tag: str, model_sha256: str | None) -> str:
    """Publish ``model_tag`` from the local BentoML store beside the routing document, once;
    return the sha256 of the archive in the store.

    RoutingError when the local model's skops file is not ``model_sha256`` (a local store that
    was altered is not published); :class:`PublishConflict` when the archive key already holds a
    different model.
    """
    import bentoml

    model_dir = Path(bentoml.models.get(model_tag).path)
    actual = sha256_of(model_dir / MODEL_FILE)
    if model_sha256 is not None and actual != model_sha256:
        raise RoutingError(f"model {model_tag} in the local store has sha256 {actual}, its record says "
                           f"{model_sha256}: refusing to publish it")
    target = archive_url(routing_url, model_tag)
    with tempfile.TemporaryDirectory(prefix="model-archive-") as folder:
        archive = Path(folder) / "model.bentomodel"
        try:
            objectstore.download_file(target, archive)
        except FileNotFoundError:
            bentoml.models.export_model(model_tag, str(archive))
            digest = sha256_of(archive)
            objectstore.upload_file(archive, target)
            logger.info("published model %s to %s (sha256 %s)", model_tag, target, digest)
            return digest
        try:
            published = archive_digests(archive)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise PublishConflict(f"{target} already exists and is not a readable model archive ({exc}): "
                                  f"refusing to publish {model_tag} over it; remove it if it is not wanted") from None
        differ = _differences(published, directory_digests(model_dir))
        if differ:
            raise PublishConflict(
                f"{target} already holds a different archive for {model_tag} (files that differ from the "
                f"local model: {differ}): refusing to overwrite or reuse it; find out who wrote it, then "
                f"remove it and deploy again")
        digest = sha256_of(archive)
        logger.info("model %s already published at %s with the same content (sha256 %s)", model_tag, target, digest)
        return digest


def fetch(routing_url: str, model_tag: str, archive_sha256: str) -> None:
    """Import the archive of ``model_tag`` into the local BentoML store if its sha256 is
    ``archive_sha256``; RoutingRefused (``archive_sha256``) before any import otherwise."""
    import bentoml

    source = archive_url(routing_url, model_tag)
    with tempfile.TemporaryDirectory(prefix="model-archive-") as folder:
        archive = Path(folder) / "model.bentomodel"
        objectstore.download_file(source, archive)
        actual = sha256_of(archive)
        if actual != archive_sha256:
            raise RoutingRefused("archive_sha256", f"model archive {source} has sha256 {actual}, the routing "
                                 f"document says {archive_sha256}: not imported")
        bentoml.models.import_model(str(archive))
