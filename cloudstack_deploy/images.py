"""Image references, read once for every stage: `[registry/]repository[:tag][@sha256:digest]`.

A role runs either an image whose tag is the deploy's version (the app's image, or any image
written without a tag: csdeploy appends the version) or an image pinned as written (a tag or
a digest: `grafana/grafana:11.2.0`, `ghcr.io/immich-app/immich-server:v1.119@sha256:...`).
The blueprint's rules, the rollout, `status`, `export kamal` and the importers all ask this
module, so "what does this role run at version V" has one answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Docker's reference grammar, narrowed to what csdeploy accepts (lower-case path components).
_REPOSITORY_RE = re.compile(r"^(?:[A-Za-z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:(?:[._]|__|-+|/)[a-z0-9]+)*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")


@dataclass(frozen=True)
class ImageRef:
    repository: str            # registry and path, no tag or digest
    tag: str | None = None
    digest: str | None = None  # sha256:<64 hex>

    @property
    def pinned(self) -> bool:
        """Written with a tag or digest: deployed as written, whatever the version."""
        return self.tag is not None or self.digest is not None

    def __str__(self) -> str:
        return self.repository + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def at(self, version: str) -> str:
        """The reference a deploy of ``version`` runs: as written when pinned, else ``repo:version``."""
        return str(self) if self.pinned else f"{self.repository}:{version}"

    @property
    def lookup(self) -> str:
        """How `docker image inspect` lists it once pulled: by digest (``repo@sha256:...``,
        RepoDigests carry no tag) or by ``repo:tag``."""
        return f"{self.repository}@{self.digest}" if self.digest else str(self)


def parse(text: str) -> ImageRef:
    """Split an image reference; ValueError naming what is wrong."""
    rest, at, digest = text.partition("@")
    if at and not _DIGEST_RE.fullmatch(digest):
        raise ValueError(f"the digest {digest[:80]!r} is not sha256: followed by 64 lower-case hex digits")
    last = rest.rsplit("/", 1)[-1]
    repository, tag = (rest.rsplit(":", 1)) if ":" in last else (rest, None)
    if not _REPOSITORY_RE.fullmatch(repository):
        raise ValueError("not a valid image reference")
    if tag is not None and not _TAG_RE.fullmatch(tag):
        raise ValueError(f"the tag {tag[:80]!r} is not a valid tag (letters, digits, '_', '.', '-'; at most 128)")
    return ImageRef(repository, tag, digest or None)


def at_version(image: str, version: str) -> str:
    """What ``image`` (as the blueprint writes it) runs at ``version``."""
    return parse(image).at(version)


def repository(image: str) -> str:
    """``image`` without its tag and digest."""
    return parse(image).repository


def base_name(image: str) -> str:
    """The repository's last path part: ``registry.lab:5000/postgres:15`` -> ``postgres``."""
    return repository(image).rsplit("/", 1)[-1]
