"""`--allow-privileged` and `--allow-devices` at task-definition registration: refused in one
line naming the flag, nothing written; allowed when the control plane runs with the flag."""

from __future__ import annotations

import pytest

from berth.errors import InvalidArgument
from berth.v1 import resources_pb2 as pb
from controlplane.main import parse_args
from controlplane.operations.taskdefs import TaskDefinitions
from controlplane.store import keys
from controlplane.store.memory import MemoryStore
from controlplane.validation.privileges import PrivilegePolicy


def _container() -> pb.ContainerDefinition:
    return pb.ContainerDefinition(name="app", image="busybox", memory=64, essential=True)


PRIVILEGED = _container()
PRIVILEGED.privileged = True
DEVICES = _container()
DEVICES.linux_parameters.devices.add(host_path="/dev/fuse")


def _taskdef(container: pb.ContainerDefinition) -> pb.TaskDefinition:
    return pb.TaskDefinition(family="web", container_definitions=[container])


@pytest.mark.parametrize(
    ("container", "flag"), [(PRIVILEGED, "--allow-privileged"), (DEVICES, "--allow-devices")]
)
async def test_refused_by_default_and_nothing_is_written(
    container: pb.ContainerDefinition, flag: str
) -> None:
    store = MemoryStore()
    with pytest.raises(InvalidArgument, match=f"the control plane runs without {flag}$"):
        await TaskDefinitions(store).register(_taskdef(container))
    assert (await store.scan(keys.TASKDEFS, pb.TaskDefinition))[0] == []


@pytest.mark.parametrize("container", [PRIVILEGED, DEVICES])
async def test_allowed_where_the_policy_says_so(container: pb.ContainerDefinition) -> None:
    store = MemoryStore()
    policy = PrivilegePolicy(allow_privileged=True, allow_devices=True)
    registered = await TaskDefinitions(store, privileges=policy).register(_taskdef(container))
    assert registered.revision == 1


def test_the_flags_reach_the_settings() -> None:
    assert parse_args(["--data-dir", "/tmp/x", "--allow-privileged"]).allow_privileged
    assert not parse_args(["--data-dir", "/tmp/x"]).allow_devices
