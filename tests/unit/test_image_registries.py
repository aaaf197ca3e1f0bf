"""The registry allow-list (controlplane.validation.images), and its use at task-definition registration."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from berth.errors import InvalidArgument
from berth.v1 import resources_pb2 as pb
from controlplane.operations.taskdefs import TaskDefinitions
from controlplane.store import keys
from controlplane.store.memory import MemoryStore
from controlplane.validation.images import (
    check_image_allowed,
    image_registry,
    normalize_registries,
)


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        ("busybox", "docker.io"),
        ("busybox:1.36", "docker.io"),
        ("busybox@sha256:" + "a" * 64, "docker.io"),
        ("library/busybox", "docker.io"),
        ("grafana/grafana:10.0", "docker.io"),
        ("docker.io/library/busybox", "docker.io"),
        ("index.docker.io/library/busybox", "docker.io"),
        ("ghcr.io/org/app:1", "ghcr.io"),
        ("localhost/app", "localhost"),
        ("localhost:5000/x", "localhost:5000"),
        ("registry:5000/x", "registry:5000"),
        ("[::1]:5000/x", "[::1]:5000"),
        ("Registry/x", "registry"),  # upper case: Docker takes it for a host name
        ("quay.io/a/b/c", "quay.io"),
        ("berth-busybox:2", "docker.io"),
    ],
)
def test_registry_of_an_image_reference_is_dockers(image: str, registry: str) -> None:
    assert image_registry(image) == registry


def test_an_image_from_another_registry_is_refused_naming_the_policy() -> None:
    allowed = normalize_registries("docker.io, GHCR.io,,".split(","))
    assert allowed == ("docker.io", "ghcr.io")
    check_image_allowed("busybox", allowed)
    check_image_allowed("ghcr.io/org/app", allowed)
    with pytest.raises(InvalidArgument) as refused:
        check_image_allowed("evil.example/x", allowed)
    assert str(refused.value) == (
        "image 'evil.example/x' is from registry 'evil.example', "
        "not in --allowed-registries (docker.io, ghcr.io)"
    )
    check_image_allowed("evil.example/x", ())  # empty: any registry


def _taskdef(*images: str) -> pb.TaskDefinition:
    return pb.TaskDefinition(
        family="web",
        container_definitions=[
            pb.ContainerDefinition(name=f"c{i}", image=image, memory=64, essential=True)
            for i, image in enumerate(images)
        ],
    )


async def test_registering_a_task_definition_enforces_the_allow_list_and_writes_nothing() -> None:
    store = MemoryStore()
    taskdefs = TaskDefinitions(store, allowed_registries=("docker.io",))
    with pytest.raises(InvalidArgument, match=r"'evil\.example', not in --allowed-registries"):
        await taskdefs.register(_taskdef("busybox", "evil.example/x"))
    assert (await store.scan(keys.TASKDEFS, pb.TaskDefinition))[0] == []
    registered = await taskdefs.register(_taskdef("busybox", "docker.io/library/nginx"))
    assert registered.revision == 1


LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12)
PORT = st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}"))
TAG = st.one_of(st.just(""), LABEL.map(lambda t: f":{t}"))
REGISTRY = st.one_of(
    st.builds(lambda labels, port: ".".join(labels) + port, st.lists(LABEL, min_size=2, max_size=4), PORT),
    st.builds(lambda label, port: label + f":{port}", LABEL, st.integers(1, 65535)),
    PORT.map(lambda port: f"localhost{port}"),
)
PATH = st.builds(lambda parts, tag: "/".join(parts) + tag, st.lists(LABEL, min_size=1, max_size=4), TAG)
PROPERTY = settings(max_examples=500, deadline=None)


@PROPERTY
@given(registry=REGISTRY, path=PATH)
def test_an_explicit_registry_is_the_one_named(registry: str, path: str) -> None:
    expected = "docker.io" if registry == "index.docker.io" else registry
    assert image_registry(f"{registry}/{path}") == expected
    check_image_allowed(f"{registry}/{path}", normalize_registries([registry.upper()]))


@PROPERTY
@given(
    name=st.builds(lambda labels, tag: "-".join(labels) + tag, st.lists(LABEL, min_size=1, max_size=3), TAG)
)
def test_a_name_without_a_registry_is_on_docker_hub(name: str) -> None:
    assert image_registry(name) == "docker.io"
    if name.partition(":")[0] != "localhost":
        assert image_registry(f"{name.partition(':')[0]}/app") == "docker.io"


@PROPERTY
@given(image=st.text(max_size=200), allowed=st.lists(st.text(max_size=20), max_size=4))
def test_any_reference_has_one_registry_and_is_allowed_or_refused_cleanly(
    image: str, allowed: list[str]
) -> None:
    registry = image_registry(image)
    assert "/" not in registry and registry == registry.lower()
    cleaned = normalize_registries(allowed)
    try:
        check_image_allowed(image, cleaned)
    except InvalidArgument as error:
        assert cleaned and registry not in cleaned and "--allowed-registries" in str(error)
    else:
        assert not cleaned or registry in cleaned
