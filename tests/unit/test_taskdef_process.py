"""ECS's process and security settings: parsed as written for AWS, bounded, refused in one line."""

from __future__ import annotations

from typing import Any

import pytest

from berth.errors import InvalidArgument
from berth.taskdef import parse_container_definitions, validate_task_definition
from berth.taskdef_process import privilege_refusal
from berth.v1 import resources_pb2 as pb

FULL: dict[str, Any] = {
    "name": "app",
    "image": "busybox",
    "memory": 64,
    "user": "1000:1000",
    "workingDirectory": "/srv/app",
    "hostname": "app-1.internal",
    "readonlyRootFilesystem": True,
    "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 4096}],
    "dockerLabels": {"com.example.team": "payments"},
    "extraHosts": [
        {"hostname": "db.local", "ipAddress": "10.0.0.5"},
        {"hostname": "v6.local", "ipAddress": "2001:DB8::0001"},
    ],
    "dnsServers": ["1.1.1.1", "2001:4860:4860::8888"],
    "dnsSearchDomains": ["corp.example"],
    "systemControls": [
        {"namespace": "net.core.somaxconn", "value": "1024"},
        {"namespace": "kernel.shmmax", "value": "68719476736"},
    ],
    "linuxParameters": {
        "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
        "initProcessEnabled": True,
        "sharedMemorySize": 128,
        "tmpfs": [{"containerPath": "/tmp", "size": 64, "mountOptions": ["noexec", "mode=1777"]}],
    },
    "privileged": False,
    "dockerSecurityOptions": [],
}


def _one(**fields: Any) -> pb.ContainerDefinition:
    (container,) = parse_container_definitions([{"name": "app", "image": "busybox", "memory": 64} | fields])
    return container


def test_every_setting_parses_as_written_for_aws() -> None:
    (c,) = parse_container_definitions([FULL])
    assert (c.user, c.working_directory, c.hostname) == ("1000:1000", "/srv/app", "app-1.internal")
    assert c.readonly_root_filesystem
    assert [(u.name, u.soft_limit, u.hard_limit) for u in c.ulimits] == [("nofile", 1024, 4096)]
    assert dict(c.docker_labels) == {"com.example.team": "payments"}
    # Addresses are parsed and stored normalized.
    assert [(h.hostname, h.ip_address) for h in c.extra_hosts] == [
        ("db.local", "10.0.0.5"),
        ("v6.local", "2001:db8::1"),
    ]
    assert list(c.dns_servers) == ["1.1.1.1", "2001:4860:4860::8888"]
    assert list(c.dns_search_domains) == ["corp.example"]
    assert [(s.namespace, s.value) for s in c.system_controls] == [
        ("net.core.somaxconn", "1024"),
        ("kernel.shmmax", "68719476736"),
    ]
    linux = c.linux_parameters
    assert (list(linux.capabilities_add), list(linux.capabilities_drop)) == (["NET_BIND_SERVICE"], ["ALL"])
    assert linux.init_process_enabled and linux.shared_memory_size == 128
    assert [(t.container_path, t.size, list(t.mount_options)) for t in linux.tmpfs] == [
        ("/tmp", 64, ["noexec", "mode=1777"])
    ]
    assert not c.privileged and not c.docker_security_options
    # What a gRPC client sends is checked the same way, and passes.
    validate_task_definition(pb.TaskDefinition(family="f", container_definitions=[c]))


def test_unset_settings_stay_empty() -> None:
    c = _one()
    assert not (c.user or c.working_directory or c.hostname or c.readonly_root_filesystem)
    assert not (c.ulimits or c.docker_labels or c.extra_hosts or c.dns_servers or c.system_controls)
    assert not c.HasField("linux_parameters")


W = "containerDefinitions[0]"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"user": "root; rm -rf /"}, f"{W}.user 'root; rm -rf /' is invalid"),
        ({"user": "a:b:c"}, f"{W}.user 'a:b:c' is invalid"),
        ({"user": "u" * 256}, f"{W}.user: String should have at most 255 characters"),
        ({"workingDirectory": "srv"}, f"{W}.workingDirectory 'srv' is invalid: use an absolute path"),
        ({"workingDirectory": "/a/../etc"}, f"{W}.workingDirectory '/a/../etc' is invalid"),
        ({"workingDirectory": "/a\nb"}, f"{W}.workingDirectory '/a\\nb' is invalid"),
        ({"hostname": "bad_host"}, f"{W}.hostname 'bad_host' is invalid"),
        ({"hostname": "h" * 64}, f"{W}.hostname: String should have at most 63 characters"),
        ({"readonlyRootFilesystem": "maybe"}, f"{W}.readonlyRootFilesystem: Input should be a valid boolean"),
        (
            {"ulimits": [{"name": "nofiles", "softLimit": 1, "hardLimit": 1}]},
            f"{W}.ulimits: 'nofiles' is not one of core, cpu,",
        ),
        (
            {"ulimits": [{"name": "nofile", "softLimit": 10, "hardLimit": 5}]},
            f"{W}.ulimits['nofile']: softLimit must not exceed hardLimit",
        ),
        (
            {"ulimits": [{"name": "nofile", "softLimit": 10, "hardLimit": 2_000_000}]},
            f"{W}.ulimits['nofile'].hardLimit must be at most 1048576",
        ),
        (
            {"ulimits": [{"name": "core", "softLimit": -2, "hardLimit": 5}]},
            f"{W}.ulimits[0].softLimit: Input should be greater than or equal to -1",
        ),
        (
            {"ulimits": [{"name": "core", "softLimit": 0, "hardLimit": 2**40}]},
            f"{W}.ulimits[0].hardLimit: Input should be less than or equal to 2147483647",
        ),
        (
            {"ulimits": [{"name": "core", "softLimit": 0, "hardLimit": 0}] * 2},
            f"{W}.ulimits['core'] is set twice",
        ),
        ({"ulimits": [{"name": "core"}]}, f"{W}.ulimits[0].softLimit: required field is missing"),
        ({"dockerLabels": {"berth.managed": "false"}}, f"{W}.dockerLabels: key 'berth.managed' is reserved"),
        ({"dockerLabels": {"BERTH.task-id": "x"}}, f"{W}.dockerLabels: key 'BERTH.task-id' is reserved"),
        ({"dockerLabels": {"a b": "x"}}, f"{W}.dockerLabels: key 'a b' is invalid"),
        ({"dockerLabels": {"k": "x" * 4097}}, f"{W}.dockerLabels['k']: the value must be at most 4096"),
        (
            {"dockerLabels": {f"k{i}": "" for i in range(101)}},
            f"{W}.dockerLabels: Dictionary should have at most",
        ),
        ({"dockerLabels": {"k": 1}}, f"{W}.dockerLabels.k: Input should be a valid string"),
        (
            {"extraHosts": [{"hostname": "db", "ipAddress": "10.0.0.300"}]},
            f"{W}.extraHosts[db].ipAddress: '10.0.0.300' is not an IPv4 or IPv6 address",
        ),
        (
            {"extraHosts": [{"hostname": "db x", "ipAddress": "10.0.0.3"}]},
            f"{W}.extraHosts: hostname 'db x' is invalid",
        ),
        ({"dnsServers": ["dns.google"]}, f"{W}.dnsServers: 'dns.google' is not an IPv4 or IPv6 address"),
        ({"dnsServers": ["1.1.1.1"] * 4}, f"{W}.dnsServers: List should have at most 3 items"),
        ({"dnsSearchDomains": ["a..b"]}, f"{W}.dnsSearchDomains: 'a..b' is invalid"),
        (
            {"systemControls": [{"namespace": "kernel.panic", "value": "1"}]},
            f"{W}.systemControls: 'kernel.panic' is not a sysctl a container may set",
        ),
        (
            {"systemControls": [{"namespace": "vm.swappiness", "value": "1"}]},
            f"{W}.systemControls: 'vm.swappiness' is not a sysctl a container may set",
        ),
        (
            {"systemControls": [{"namespace": "net.core.somaxconn", "value": "1\n2"}]},
            f"{W}.systemControls[net.core.somaxconn].value must be 1-255 characters",
        ),
        (
            {"linuxParameters": {"capabilities": {"add": ["CAP_NET_ADMIN"]}}},
            f"{W}.linuxParameters.capabilities.add: 'CAP_NET_ADMIN' is not an ECS capability name",
        ),
        (
            {"linuxParameters": {"sharedMemorySize": 0}},
            f"{W}.linuxParameters.sharedMemorySize: Input should be greater than or equal to 1",
        ),
        (
            {"linuxParameters": {"tmpfs": [{"containerPath": "/t", "size": 0}]}},
            f"{W}.linuxParameters.tmpfs[0].size: Input should be greater than or equal to 1",
        ),
        (
            {"linuxParameters": {"tmpfs": [{"containerPath": "/t", "size": 1, "mountOptions": ["size=9g"]}]}},
            f"{W}.linuxParameters.tmpfs[/t].mountOptions: 'size=9g' is not a tmpfs option",
        ),
        (
            {
                "linuxParameters": {
                    "tmpfs": [{"containerPath": "/t", "size": 1, "mountOptions": ["mode=1,exec"]}]
                }
            },
            f"{W}.linuxParameters.tmpfs[/t].mountOptions: 'mode=1,exec' is not a tmpfs option",
        ),
        (
            {"linuxParameters": {"tmpfs": [{"containerPath": "/t,x", "size": 1}]}},
            f"{W}.linuxParameters.tmpfs.containerPath '/t,x' is invalid",
        ),
        (
            {"linuxParameters": {"devices": [{"hostPath": "/dev/fuse", "permissions": ["all"]}]}},
            f"{W}.linuxParameters.devices: permission 'all' is not one of read, write, mknod",
        ),
        ({"linuxParameters": {"maxSwap": 1}}, f"{W}.linuxParameters.maxSwap: unknown field 'maxSwap'"),
        (
            {"dockerSecurityOptions": ["seccomp:unconfined;x"]},
            f"{W}.dockerSecurityOptions: 'seccomp:unconfined;x' is not supported",
        ),
    ],
)
def test_bad_settings_are_refused_in_one_line(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        _one(**fields)
    assert str(raised.value).startswith(message), str(raised.value)
    assert "\n" not in str(raised.value)


def test_settings_sent_over_grpc_are_checked_too() -> None:
    td = pb.TaskDefinition(
        family="f",
        container_definitions=[
            pb.ContainerDefinition(
                name="app",
                image="busybox",
                memory=64,
                essential=True,
                docker_labels={"berth.node-id": "elsewhere"},
            )
        ],
    )
    with pytest.raises(InvalidArgument, match=r"key 'berth.node-id' is reserved"):
        validate_task_definition(td)
    td.container_definitions[0].docker_labels.clear()
    td.container_definitions[0].dns_servers.append("not-an-address")
    with pytest.raises(InvalidArgument, match=r"dnsServers: 'not-an-address' is not an IPv4"):
        validate_task_definition(td)
    td.container_definitions[0].ClearField("dns_servers")
    td.container_definitions[0].ulimits.add(name="nofile", soft_limit=-5, hard_limit=1)
    with pytest.raises(InvalidArgument, match=r"softLimit -5 is out of range"):
        validate_task_definition(td)


def _policy_cases() -> list[tuple[dict[str, Any], str | None, str | None]]:
    """(fields, refusal without any flag, refusal with both flags)."""
    device = {"linuxParameters": {"devices": [{"hostPath": "/dev/fuse"}]}}
    return [
        ({"privileged": False, "dockerSecurityOptions": []}, None, None),
        ({"linuxParameters": {"capabilities": {"add": ["CHOWN"], "drop": ["NET_RAW"]}}}, None, None),
        (
            {"privileged": True},
            "privileged is refused: the control plane runs without --allow-privileged",
            None,
        ),
        ({"dockerSecurityOptions": ["apparmor:unconfined"]}, "without --allow-privileged", None),
        (
            {"linuxParameters": {"capabilities": {"add": ["SYS_ADMIN", "NET_ADMIN"]}}},
            "capabilities.add NET_ADMIN, SYS_ADMIN is refused: capabilities beyond Docker's defaults "
            "need --allow-privileged",
            None,
        ),
        (
            {"ulimits": [{"name": "rtprio", "softLimit": 99, "hardLimit": 99}]},
            "ulimits rtprio is refused: real-time scheduling limits need --allow-privileged",
            None,
        ),
        (device, "devices is refused: the control plane runs without --allow-devices", None),
    ]


@pytest.mark.parametrize(("fields", "refused", "refused_with_flags"), _policy_cases())
def test_cluster_policy_decides_privileged_settings(
    fields: dict[str, Any], refused: str | None, refused_with_flags: str | None
) -> None:
    td = pb.TaskDefinition(family="f", container_definitions=[_one(**fields)])
    reason = privilege_refusal(td, allow_privileged=False, allow_devices=False)
    if refused is None:
        assert reason is None
    else:
        assert reason is not None and reason.startswith(f"{W}.") and reason.endswith(refused.split(": ")[-1])
        assert refused in reason
    assert privilege_refusal(td, allow_privileged=True, allow_devices=True) == refused_with_flags


def test_devices_need_their_own_flag() -> None:
    td = pb.TaskDefinition(
        family="f", container_definitions=[_one(linuxParameters={"devices": [{"hostPath": "/dev/fuse"}]})]
    )
    assert privilege_refusal(td, allow_privileged=True, allow_devices=False) is not None
    assert privilege_refusal(td, allow_privileged=False, allow_devices=True) is None
