"""ECS fields that are plain Docker options: parse, bound, check.

Container fields `interactive`, `pseudoTerminal`, `disableNetworking` and
`links`; task fields `pidMode` and `ipcMode`. `DockerOptions` is the JSON
schema of the container fields and `DockerOptions.apply` fills the protobuf
message; `Namespaces` does the same for the task fields. `check_docker_options`
checks a message's meaning, whichever client sent it. The host's namespaces
are a privilege: berth.taskdef_process.privilege_refusal refuses them without
the cluster's policy.

How they run (agent/runtime/docker_spec.py): `links` are Docker's legacy links
on the engine's default bridge, where Berth runs bridge (and awsvpc) tasks; a
task's shared PID or IPC namespace ("task") is its first container's, which
the others join (so that container must be essential). What the other
settings need of these namespaces is checked by berth.taskdef_namespaces.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool

from berth.ecs_schema import EcsModel
from berth.errors import InvalidArgument
from berth.names import shown
from berth.taskdef_namespaces import check_namespaces
from berth.v1 import resources_pb2 as pb

# The container fields this module owns (the container parser hands them over).
FIELDS = frozenset({"interactive", "pseudoTerminal", "disableNetworking", "links"})
# The task fields this module owns.
DOCUMENT_FIELDS = frozenset({"pidMode", "ipcMode"})

PID_MODES = ("host", "task")
IPC_MODES = ("host", "task", "none")
MAX_LINKS = 10  # a task has at most 10 containers, so at most 9 others to link to
MAX_LINK_LENGTH = 511  # "name:alias", each up to 255 characters
# ECS: a link is "name" or "name:alias"; each up to 255 letters, digits, '-' or '_'.
_LINK_PART = r"[A-Za-z0-9_-]{1,255}"
_LINK = re.compile(rf"({_LINK_PART})(?::({_LINK_PART}))?")


class DockerOptions(EcsModel):
    """The JSON schema of the container fields in FIELDS (meaning: check_docker_options)."""

    # ECS takes JSON booleans only: "yes", "on", "1" or 1 are refused, not read as true.
    interactive: StrictBool = False
    pseudo_terminal: StrictBool = Field(default=False, alias="pseudoTerminal")
    disable_networking: StrictBool = Field(default=False, alias="disableNetworking")
    links: list[Annotated[str, Field(max_length=MAX_LINK_LENGTH)]] = Field(
        default_factory=list, max_length=MAX_LINKS
    )

    @classmethod
    def take(cls, raw: dict[str, Any]) -> tuple[DockerOptions, dict[str, Any]]:
        """Split a container definition: these options (validated), and every other field."""
        mine = {key: value for key, value in raw.items() if key in FIELDS}
        rest = {key: value for key, value in raw.items() if key not in FIELDS}
        return cls.model_validate(mine), rest

    def apply(self, c: pb.ContainerDefinition) -> None:
        c.interactive = self.interactive
        c.pseudo_terminal = self.pseudo_terminal
        c.disable_networking = self.disable_networking
        c.links.extend(self.links)


class Namespaces(EcsModel):
    """The JSON schema of the task fields pidMode and ipcMode."""

    pid_mode: Literal["host", "task"] | None = Field(default=None, alias="pidMode")
    ipc_mode: Literal["host", "task", "none"] | None = Field(default=None, alias="ipcMode")

    @classmethod
    def take(cls, doc: dict[str, Any]) -> tuple[Namespaces, dict[str, Any]]:
        """Split a register document: these fields (validated), and every other field."""
        mine = {key: value for key, value in doc.items() if key in DOCUMENT_FIELDS}
        rest = {key: value for key, value in doc.items() if key not in DOCUMENT_FIELDS}
        return cls.model_validate(mine), rest

    def apply(self, td: pb.TaskDefinition) -> None:
        td.pid_mode = self.pid_mode or ""
        td.ipc_mode = self.ipc_mode or ""


def link_target(link: str) -> tuple[str, str]:
    """(container name, alias) of a valid link; the alias defaults to the name."""
    match = _LINK.fullmatch(link)
    if match is None:
        raise InvalidArgument(f"link {shown(link)} is invalid")
    return match.group(1), match.group(2) or match.group(1)


def _check_links(td: pb.TaskDefinition) -> None:
    order = {c.name: i for i, c in enumerate(td.container_definitions)}
    for i, c in enumerate(td.container_definitions):
        where = f"containerDefinitions[{i}].links"
        if not c.links:
            continue
        if len(c.links) > MAX_LINKS:
            raise InvalidArgument(f"{where} has {len(c.links)} entries: the limit is {MAX_LINKS}")
        if td.network_mode in (pb.NETWORK_MODE_HOST, pb.NETWORK_MODE_NONE):
            raise InvalidArgument(
                f"{where}: links need the bridge network; networkMode host and none have none"
            )
        if c.disable_networking:
            raise InvalidArgument(f"{where}: a container with disableNetworking has no network to link on")
        aliases: set[str] = set()
        for link in c.links:
            if len(link) > MAX_LINK_LENGTH or _LINK.fullmatch(link) is None:
                raise InvalidArgument(
                    f'{where}: {shown(link)} is invalid: write "name" or "name:alias" '
                    "(letters, digits, '-' and '_')"
                )
            target, alias = link_target(link)
            if target not in order or target == c.name:
                raise InvalidArgument(f"{where}: {shown(target)} is not another container of this task")
            if order[target] > i:
                raise InvalidArgument(
                    f"{where}: {target} is listed after {c.name}: Berth starts containers in the order "
                    f"listed and Docker links only to a running container, so list {target} first"
                )
            if td.container_definitions[order[target]].disable_networking:
                raise InvalidArgument(
                    f"{where}: {target} has disableNetworking: it has no network to link to"
                )
            if alias in aliases:
                raise InvalidArgument(f"{where}: the alias {alias} is used twice")
            aliases.add(alias)


def check_docker_options(td: pb.TaskDefinition) -> None:
    """Check the Docker options of a task definition (every client: the gRPC API too)."""
    if td.pid_mode not in ("", *PID_MODES):
        raise InvalidArgument(f"pidMode {shown(td.pid_mode)} is not one of host, task")
    if td.ipc_mode not in ("", *IPC_MODES):
        raise InvalidArgument(f"ipcMode {shown(td.ipc_mode)} is not one of host, task, none")
    _check_links(td)
    check_namespaces(td)


def to_ecs(c: pb.ContainerDefinition) -> dict[str, Any]:
    """These options of a stored container in ECS's JSON (only those set)."""
    out: dict[str, Any] = {}
    if c.interactive:
        out["interactive"] = True
    if c.pseudo_terminal:
        out["pseudoTerminal"] = True
    if c.disable_networking:
        out["disableNetworking"] = True
    if c.links:
        out["links"] = list(c.links)
    return out


def namespaces_to_ecs(td: pb.TaskDefinition) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if td.pid_mode:
        out["pidMode"] = td.pid_mode
    if td.ipc_mode:
        out["ipcMode"] = td.ipc_mode
    return out
