"""The cluster's allow-list of image registries (`--allowed-registries`).

An image reference names its registry the way Docker reads it
(distribution/reference's `splitDockerDomain`): the part before the first
'/' is a registry when it contains '.' or ':', is `localhost`, or has an
upper-case letter; otherwise the image is on Docker Hub, `docker.io`
(`busybox`, `library/busybox`, `grafana/grafana`). `index.docker.io` is
Docker Hub's old name and counts as `docker.io`. Registry names are
compared without regard to case, as host names are.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from berth.errors import InvalidArgument
from berth.v1 import resources_pb2 as pb

DOCKER_HUB = "docker.io"
_LEGACY_DOCKER_HUB = "index.docker.io"


def image_registry(image: str) -> str:
    """The registry an image reference pulls from, lower-cased."""
    first, slash, _ = image.partition("/")
    if not slash or (
        "." not in first and ":" not in first and first != "localhost" and first == first.lower()
    ):
        return DOCKER_HUB
    registry = first.lower()
    return DOCKER_HUB if registry == _LEGACY_DOCKER_HUB else registry


def normalize_registries(registries: Iterable[str]) -> tuple[str, ...]:
    """The allow-list as configured ("docker.io, ghcr.io"), cleaned: lower case, no blanks."""
    cleaned = (r.strip().lower() for r in registries)
    return tuple(DOCKER_HUB if r == _LEGACY_DOCKER_HUB else r for r in cleaned if r)


def check_image_allowed(image: str, allowed: Sequence[str]) -> None:
    """Raise unless the image's registry is allowed; an empty allow-list allows any."""
    if not allowed:
        return
    registry = image_registry(image)
    if registry not in allowed:
        raise InvalidArgument(
            f"image {image!r} is from registry {registry!r}, not in --allowed-registries "
            f"({', '.join(allowed)})"
        )


def check_task_definition_images(td: pb.TaskDefinition, allowed: Sequence[str]) -> None:
    for container in td.container_definitions:
        check_image_allowed(container.image, allowed)
