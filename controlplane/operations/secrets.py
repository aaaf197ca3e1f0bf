"""Secrets: put, list, delete (values go in, never out), and their resolution for one node.

`Secrets` is what operators call: a put seals the value (controlplane.sealing)
under the name `berth.secretnames` maps it to, and bumps its version; lists
show names, sizes, versions and dates. Nothing here ever returns or logs a
value.

`SecretValues` is what the desired-state builder calls for the tasks of the
one node it builds a snapshot for (containers' `secrets`, environment files
that are secrets, and an engine log driver's `secretOptions`, whose values it
checks as log option values): it opens the sealed records from the
cache, keeping opened values in memory per record revision (a snapshot is
built often; opening each time would be slow), and says in one line, as ECS
does ("ResourceInitializationError: unable to pull secrets ..."), why a task's
secrets cannot be had, so its agent stops it with TASK_FAILED_TO_START.

Registering a task definition that names a secret that does not exist is
allowed, as in ECS: a secret can be put after the definition that uses it,
or be deleted and put again, and what matters is whether it exists when a
task starts.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from berth.clock import now
from berth.errors import FailedPrecondition, InvalidArgument, NotFound
from berth.names import shown
from berth.secretnames import SecretSource, parse_reference, storage_name
from berth.taskdef_envfiles import names_secrets
from berth.taskdef_envfiles import secret_source as environment_file_source
from berth.taskdef_logging import applied_secret_options, secret_value_refusal
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.sealing import MasterKey, SealError, seal, unseal
from controlplane.store import Condition, Delete, Put, StoreAPI, keys

log = logging.getLogger(__name__)

MAX_VALUE_BYTES = 65_536  # 64 KiB, as a Secrets Manager secret
MAX_SECRETS = 10_000
PULL_FAILED = "ResourceInitializationError: unable to pull secrets"


def info(record: pb.Secret) -> api.SecretInfo:
    """What the API shows of a secret: never the value, nor its ciphertexts."""
    return api.SecretInfo(
        name=record.name,
        version=record.version,
        size=record.size,
        created_at=record.created_at,
        updated_at=record.updated_at,
        updated_by=record.updated_by,
    )


def check_value(value: bytes) -> None:
    if not value:
        raise InvalidArgument("the secret's value is empty")
    if len(value) > MAX_VALUE_BYTES:
        raise InvalidArgument(
            f"the secret's value is {len(value)} bytes: the limit is {MAX_VALUE_BYTES} (64 KiB)"
        )
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument(
            "the secret's value must be UTF-8 text (it becomes an environment variable)"
        ) from None
    if "\0" in text:
        raise InvalidArgument("the secret's value must not contain NUL (it becomes an environment variable)")


class Secrets:
    def __init__(self, store: StoreAPI, master: MasterKey) -> None:
        self._store = store
        self._master = master

    async def put(self, written: str, value: bytes, caller: str) -> api.SecretInfo:
        """Store a new version of the secret `written` names (created at version 1)."""
        name = storage_name(written)
        check_value(value)
        key = keys.secret(name)
        found = await self._store.get(key, pb.Secret)
        if found is None:
            existing, _ = await self._store.scan(keys.SECRETS, pb.Secret)
            if len(existing) >= MAX_SECRETS:
                raise FailedPrecondition(f"the cluster holds {MAX_SECRETS} secrets, the limit: delete some")
            record = pb.Secret(name=name, version=1, created_at=now())
        else:
            record = pb.Secret(name=name, version=found.value.version + 1, created_at=found.value.created_at)
        record.updated_at.CopyFrom(now())
        record.updated_by = caller
        seal(self._master, record, value)
        condition = Condition(key, found.mod_revision if found else 0)
        if await self._store.commit([Put(key, record)], [condition]) is None:
            raise FailedPrecondition(f"secret {name} changed meanwhile; put it again")
        log.info(
            "event=secret_put name=%s version=%d size=%d by=%s", name, record.version, record.size, caller
        )
        return info(record)

    async def all(self) -> list[api.SecretInfo]:
        found, _ = await self._store.scan(keys.SECRETS, pb.Secret)
        return [info(f.value) for f in found]

    async def delete(self, written: str, caller: str) -> api.SecretInfo:
        name = storage_name(written)
        key = keys.secret(name)
        found = await self._store.get(key, pb.Secret)
        if found is None:
            raise NotFound(f"secret {name} does not exist")
        if await self._store.commit([Delete(key)], [Condition(key, found.mod_revision)]) is None:
            raise FailedPrecondition(f"secret {name} changed meanwhile; try again")
        log.info("event=secret_deleted name=%s by=%s", name, caller)
        return info(found.value)


async def check_master_key(store: StoreAPI, master: MasterKey) -> int:
    """Log (once, at start) the secrets sealed under a master key other than this replica's:
    a replica started without a copy of the first one's PKI directory. Returns their count."""
    found, _ = await store.scan(keys.SECRETS, pb.Secret)
    foreign = [f.value.name for f in found if f.value.key_id and f.value.key_id != master.key_id]
    if foreign:
        log.error(
            "event=secrets_master_key_mismatch count=%d example=%s key_id=%s "
            "hint=copy_secrets.key_from_the_first_replicas_pki_dir",
            len(foreign),
            foreign[0],
            master.key_id,
        )
    return len(foreign)


class SecretUnavailable(Exception):
    """A task's secret cannot be had; the message is the task's stopped reason."""


@dataclass(frozen=True)
class _Opened:
    mod_revision: int
    value: str


class SecretValues:
    """Opens the secrets a node's tasks name, from the cache, once per record revision."""

    def __init__(self, cache: ClusterCache, master: MasterKey) -> None:
        self._cache = cache
        self._master = master
        self._opened: dict[str, _Opened] = {}

    def revisions(self, definition: pb.TaskDefinition) -> tuple[int, ...]:
        """The mod revisions (0: absent) of the records a task definition names, in order:
        part of an assignment's version, so a put or delete rebuilds it."""
        found = []
        for container in definition.container_definitions:
            sources = [_source(reference) for reference in container.secrets]
            sources += [s for f in container.environment_files if (s := _known_file_source(f)) is not None]
            sources += [_source(reference) for reference in applied_secret_options(container)]
            for source in sources:
                record = self._cache.secret(source.name)
                found.append(record.mod_revision if record is not None else 0)
        return tuple(found)

    def environment(self, definition: pb.TaskDefinition) -> list[agent_pb.ContainerSecrets]:
        """Each container's secret variables; SecretUnavailable names the first that is missing."""
        result = []
        for container in definition.container_definitions:
            if not container.secrets:
                continue
            variables = [
                pb.KeyValuePair(name=reference.name, value=self._value(_source(reference)))
                for reference in container.secrets
            ]
            result.append(agent_pb.ContainerSecrets(container=container.name, environment=variables))
        return result

    def environment_files(self, definition: pb.TaskDefinition) -> list[agent_pb.ContainerSecrets]:
        """The text of each container's environment files that are Berth secrets, by the file's
        value as registered; SecretUnavailable names the first that is missing."""
        result = []
        for container in definition.container_definitions:
            files = [
                pb.KeyValuePair(name=file.value, value=self._value(source))
                for file in container.environment_files
                if (source := _file_source(file)) is not None
            ]
            if files:
                result.append(agent_pb.ContainerSecrets(container=container.name, environment=files))
        return result

    def log_options(self, definition: pb.TaskDefinition) -> list[agent_pb.ContainerSecrets]:
        """Each container's log options from its engine driver's secretOptions, by option key;
        SecretUnavailable names the first that is missing or whose value the option cannot take
        (the reason never quotes a value)."""
        result = []
        for container in definition.container_definitions:
            references = applied_secret_options(container)
            if not references:
                continue
            options = []
            for reference in references:
                source = _source(reference)
                value = self._value(source)
                refusal = secret_value_refusal(container.log_configuration.log_driver, reference.name, value)
                if refusal is not None:
                    raise SecretUnavailable(
                        f"{PULL_FAILED}: container {container.name}: logConfiguration.secretOptions"
                        f"[{reference.name}]: the value of secret {source.name} is refused: {refusal}"
                    )
                options.append(pb.KeyValuePair(name=reference.name, value=value))
            result.append(agent_pb.ContainerSecrets(container=container.name, environment=options))
        return result

    def _value(self, source: SecretSource) -> str:
        value = self._open(source.name)
        if not source.json_key:
            return value
        try:
            document = json.loads(value)
        except ValueError:
            document = None
        if not isinstance(document, dict) or source.json_key not in document:
            raise SecretUnavailable(
                f"{PULL_FAILED}: secret {source.name} is not a JSON object with the key {source.json_key!r}"
            )
        selected = document[source.json_key]
        return selected if isinstance(selected, str) else json.dumps(selected)

    def _open(self, name: str) -> str:
        record = self._cache.secret(name)
        if record is None:
            self._opened.pop(name, None)
            raise SecretUnavailable(f"{PULL_FAILED}: secret {name} does not exist (berth secret put {name})")
        opened = self._opened.get(name)
        if opened is not None and opened.mod_revision == record.mod_revision:
            return opened.value
        try:
            value = unseal(self._master, name, record.value).decode("utf-8")
        except (SealError, UnicodeDecodeError) as error:
            log.error("event=secret_unsealable name=%s error=%r", name, str(error))
            raise SecretUnavailable(
                f"{PULL_FAILED}: secret {name} cannot be decrypted (tampered with, or sealed under "
                "another master key)"
            ) from None
        self._opened[name] = _Opened(record.mod_revision, value)
        return value


def names_any(definition: pb.TaskDefinition) -> bool:
    """A task of this definition needs secrets resolved: its `secrets`, environment files that
    are Berth secrets, or an engine log driver's secretOptions."""
    return any(
        c.secrets or names_secrets(c) or applied_secret_options(c) for c in definition.container_definitions
    )


def _file_source(file: pb.EnvironmentFile) -> SecretSource | None:
    """The secret an environment file names, None for a file on the agent's host.

    Validated at registration; a record written some other way fails its task's start with a
    reason that names the bad value (SecretUnavailable), and crashes nothing."""
    try:
        return environment_file_source(file.value)
    except InvalidArgument as error:
        raise SecretUnavailable(
            f"{PULL_FAILED}: the environment file {shown(file.value[:300])} is invalid: {error}"
        ) from None


def _known_file_source(file: pb.EnvironmentFile) -> SecretSource | None:
    """As _file_source, None for an invalid value (whose start fails in environment_files)."""
    try:
        return _file_source(file)
    except SecretUnavailable:
        return None


def _source(reference: pb.SecretReference) -> SecretSource:
    # Validated at registration; a record written some other way fails to resolve, not crash.
    try:
        return parse_reference(reference.value_from)
    except InvalidArgument:
        return SecretSource(name="")
