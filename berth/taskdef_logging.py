"""ECS's `logConfiguration` of a container definition: parse, bound, check, describe.

Drivers the engine has (`json-file`, `local`, `syslog`, `journald`, `fluentd`,
`gelf`) reach Docker's LogConfig with their options, each option name checked
against Docker's documented keys for that driver. `awslogs` and `awsfirelens`
are AWS's own destinations: they are kept as written (so describe shows them
and they register again unchanged) and the container logs to Berth's own log
path: json-file with bounded rotation (AWS_LOG_ROTATION), which `berth logs`
reads and which keeps the host's disk bounded.

Option values pass through untouched: runtime placeholders (`{{.Name}}`,
`{{.ID}}`, which Docker expands in `tag`, and `${ECS_TASK_ID}`, which it does
not) reach the engine as written. Options naming files on the host (syslog's
TLS certificates and key) are refused: a task definition never reaches host
files through its log driver. Log destinations are network addresses (no unix
socket), and since the engine connects from the host's own network namespace,
loopback, link-local and unspecified addresses and `localhost` are refused, as
are IPv4 addresses in spellings other than dotted a.b.c.d; fluentd and gelf
need an explicit address (fluentd's default is the host's localhost:24224).

`secretOptions` of an engine driver are log options whose values are Berth
secrets (`valueFrom` as in `secrets`: berth.secretnames): each `name` is one
of the driver's option keys, checked like an `options` key (host-file keys
refused), and may not also be in `options`. The control plane resolves them
for the task's node only (controlplane.operations.secrets) and checks each
value there as an option value would be (bounded, printable, its shape),
without ever echoing it; the agent merges them into Docker's LogConfig. The
address keys (syslog-address, fluentd-address, gelf-address) are refused as
secretOptions: a destination is checked when it is registered (no loopback,
link-local or unix socket: the engine sends from the host's own network), and
a secret's value is not there to check then. `secretOptions` of awslogs and
awsfirelens carry AWS credentials, which have nowhere to go on Berth: they are
kept as written and not applied (nor resolved).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from berth.ecs_schema import EcsModel
from berth.errors import InvalidArgument
from berth.names import shown
from berth.secretnames import MAX_REFERENCE_LENGTH, parse_reference
from berth.v1 import resources_pb2 as pb

FIELD = "logConfiguration"
MAX_OPTIONS = 32
MAX_OPTION_NAME_LENGTH = 64
MAX_OPTION_VALUE_LENGTH = 1024
MAX_SECRET_OPTIONS = 16

# Options every engine driver takes (the engine's own: delivery mode and its buffer).
_COMMON = frozenset({"mode", "max-buffer-size"})
# Which container metadata a driver attaches to each line, and the line's tag.
_METADATA = frozenset({"labels", "labels-regex", "env", "env-regex", "tag"})
# The engine's "dual logging" cache, which lets `docker logs` read drivers that cannot.
_CACHE = frozenset({"cache-disabled", "cache-max-size", "cache-max-file", "cache-compress"})
_ROTATION = frozenset({"max-size", "max-file", "compress"})

# Docker's documented option keys per driver (Docker 20.10).
ENGINE_DRIVERS: dict[str, frozenset[str]] = {
    "json-file": _COMMON | _ROTATION | _METADATA,
    "local": _COMMON | _ROTATION,
    "syslog": _COMMON
    | _METADATA
    | _CACHE
    | {"syslog-address", "syslog-facility", "syslog-format", "syslog-tls-skip-verify"},
    "journald": _COMMON | _METADATA | _CACHE,
    "fluentd": _COMMON
    | _METADATA
    | _CACHE
    | {
        "fluentd-address",
        "fluentd-async",
        "fluentd-async-connect",
        "fluentd-buffer-limit",
        "fluentd-retry-wait",
        "fluentd-max-retries",
        "fluentd-sub-second-precision",
        "fluentd-request-ack",
    },
    "gelf": _COMMON
    | _METADATA
    | _CACHE
    | {
        "gelf-address",
        "gelf-compression-type",
        "gelf-compression-level",
        "gelf-tcp-max-reconnect",
        "gelf-tcp-reconnect-delay",
    },
}
# Options that name a file on the host, which the engine would read.
_HOST_FILE_OPTIONS = frozenset({"syslog-tls-ca-cert", "syslog-tls-cert", "syslog-tls-key"})
# AWS's drivers, mapped onto Berth's own log path.
AWSLOGS_OPTIONS = frozenset(
    {
        "awslogs-region",
        "awslogs-endpoint",
        "awslogs-group",
        "awslogs-stream",
        "awslogs-stream-prefix",
        "awslogs-create-group",
        "awslogs-datetime-format",
        "awslogs-multiline-pattern",
        "awslogs-credentials-endpoint",
        "awslogs-force-flush-interval-seconds",
        "awslogs-max-buffered-events",
        "awslogs-format",
        "tag",
        "mode",
        "max-buffer-size",
    }
)
AWS_DRIVERS = ("awslogs", "awsfirelens")
DRIVERS = (*ENGINE_DRIVERS, *AWS_DRIVERS)
# Fluent Bit / Fluentd output keys under awsfirelens: free-form names (Name, Match, log_group_name).
_FIRELENS_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_SIZE = re.compile(r"[1-9][0-9]{0,8}[kmg]?")
_COUNT = re.compile(r"[1-9][0-9]{0,3}")
# Network destinations only: a unix socket would reach a daemon on the host (its engine, its etcd).
_HOST_PORT = r"(?:\[(?P<ip6>[0-9A-Fa-f:.]{2,45})\]|(?P<host>[A-Za-z0-9.-]{1,253}))(?::(?P<port>[0-9]{1,5}))?"
_SYSLOG_ADDRESS = re.compile(rf"(udp|tcp|tcp\+tls)://{_HOST_PORT}")
_GELF_ADDRESS = re.compile(rf"(udp|tcp)://{_HOST_PORT}")
_FLUENTD_ADDRESS = re.compile(rf"(tcp://)?{_HOST_PORT}")
_ADDRESSES = {
    "syslog-address": _SYSLOG_ADDRESS,
    "gelf-address": _GELF_ADDRESS,
    "fluentd-address": _FLUENTD_ADDRESS,
}
# Drivers with no safe default destination: fluentd's is the host's own localhost:24224, and
# gelf has none (Docker requires it).
_REQUIRED = {
    "fluentd": ("fluentd-address", " (its default is the host's own localhost:24224)"),
    "gelf": ("gelf-address", ""),
}
# What json-file keeps for awslogs and awsfirelens: bounded on disk, read by `berth logs`.
_AWS_LOG_FILES = 3
_AWS_LOG_FILE_MIB = 10
AWS_LOG_ROTATION = {"max-size": f"{_AWS_LOG_FILE_MIB}m", "max-file": str(_AWS_LOG_FILES)}
_OWN_PATH = f"json-file, at most {_AWS_LOG_FILES} files of {_AWS_LOG_FILE_MIB} MiB per container"
_BOOLEAN = frozenset({"true", "false"})
# Values with a shape the engine would otherwise refuse only when the task starts.
_VALUE_SHAPES: dict[str, tuple[re.Pattern[str] | frozenset[str], str]] = {
    "max-size": (_SIZE, "a size such as 10m (k, m or g)"),
    "max-file": (_COUNT, "a count of files, 1-9999"),
    "max-buffer-size": (_SIZE, "a size such as 4m (k, m or g)"),
    "cache-max-size": (_SIZE, "a size such as 20m (k, m or g)"),
    "cache-max-file": (_COUNT, "a count of files, 1-9999"),
    "mode": (frozenset({"blocking", "non-blocking"}), "blocking or non-blocking"),
    "compress": (_BOOLEAN, "true or false"),
    "cache-disabled": (_BOOLEAN, "true or false"),
    "cache-compress": (_BOOLEAN, "true or false"),
    "fluentd-async": (_BOOLEAN, "true or false"),
    "fluentd-async-connect": (_BOOLEAN, "true or false"),
    "syslog-tls-skip-verify": (_BOOLEAN, "true or false"),
    "syslog-address": (_SYSLOG_ADDRESS, "udp://, tcp:// or tcp+tls://HOST:PORT (no unix socket on the host)"),
    "gelf-address": (_GELF_ADDRESS, "udp:// or tcp://HOST:PORT"),
    "fluentd-address": (_FLUENTD_ADDRESS, "HOST:PORT or tcp://HOST:PORT (no unix socket on the host)"),
}


class _SecretOption(EcsModel):
    name: str = Field(max_length=MAX_OPTION_NAME_LENGTH)
    value_from: str = Field(alias="valueFrom", max_length=MAX_REFERENCE_LENGTH)


class LogSettings(EcsModel):
    """The JSON schema of `logConfiguration`: types and bounds (meaning: check_log_configuration)."""

    log_driver: str = Field(alias="logDriver", max_length=32)
    options: dict[str, str] = Field(default_factory=dict, max_length=MAX_OPTIONS)
    secret_options: list[_SecretOption] = Field(
        default_factory=list, alias="secretOptions", max_length=MAX_SECRET_OPTIONS
    )

    @classmethod
    def take(cls, raw: dict[str, Any]) -> tuple[LogSettings | None, dict[str, Any]]:
        """Split a container definition: its logConfiguration (validated; None if absent), and
        every other field."""
        rest = {key: value for key, value in raw.items() if key != FIELD}
        # Validated through a holder, so an error's location starts with "logConfiguration".
        return _Holder.model_validate({FIELD: raw.get(FIELD)}).log_configuration, rest

    def apply(self, c: pb.ContainerDefinition) -> None:
        c.log_configuration.CopyFrom(
            pb.LogConfiguration(
                log_driver=self.log_driver,
                options=self.options,
                secret_options=[
                    pb.SecretReference(name=s.name, value_from=s.value_from) for s in self.secret_options
                ],
            )
        )


class _Holder(EcsModel):
    log_configuration: LogSettings | None = Field(default=None, alias="logConfiguration")


def note(where: str, c: pb.ContainerDefinition) -> str | None:
    """What a user should read about this container's logging at registration, if anything."""
    if not c.HasField("log_configuration"):
        return None
    driver = c.log_configuration.log_driver
    unapplied = " and its secretOptions are" if c.log_configuration.secret_options else " is"
    if driver == "awslogs":
        return (
            f"{where}.logConfiguration: awslogs runs on Berth's own log path ({_OWN_PATH}; read it "
            f"with berth logs): no CloudWatch log group or stream is written, each "
            f"awslogs option{unapplied} kept as written but not applied"
        )
    if driver == "awsfirelens":
        return (
            f"{where}.logConfiguration: awsfirelens runs on Berth's own log path ({_OWN_PATH}; read "
            f"it with berth logs): no FireLens routing is applied, each option{unapplied} "
            "kept as written but not applied"
        )
    return None


def _clean(text: str) -> bool:
    return text.isprintable() and "\0" not in text


def _host_refusal(matched: re.Match[str]) -> str | None:
    """Why a log destination may not be used, or None: the engine connects from the host's own
    network namespace, where loopback and link-local addresses reach the host's own daemons and
    its cloud metadata."""
    port = matched.group("port")
    if port is not None and not 1 <= int(port) <= 65535:
        return f"the port {port} is not 1-65535"
    host = matched.group("ip6") or matched.group("host") or ""
    if matched.group("ip6") is None:
        name = host.rstrip(".").lower()
        if name == "localhost" or name.endswith(".localhost"):
            return f"{host} is the host itself, as the engine sends from the host's network"
        last = name.rsplit(".", 1)[-1]
        if not (last.isdigit() or last.startswith("0x")):
            return None  # a DNS name
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        # No DNS name ends in a number: 127.1, 0x7f.1, 2130706433 and the like are IPv4 in
        # other spellings, which resolvers accept.
        return f"{host} is neither a DNS name nor an IP address written a.b.c.d or [IPv6]"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for refused, said in (
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_unspecified, "the unspecified address"),
    ):
        if refused:
            return (
                f"{host} is {said}: the engine sends from the host's own network, where it reaches "
                "the host itself"
            )
    return None


def _check_key(field: str, driver: str, key: str) -> None:
    """An option's key (`field`: where it was written, options or secretOptions)."""
    if not key or len(key) > MAX_OPTION_NAME_LENGTH or not _clean(key) or any(ch.isspace() for ch in key):
        raise InvalidArgument(
            f"{field}: name {shown(key[:100])} is invalid: use 1-{MAX_OPTION_NAME_LENGTH} "
            "printable characters"
        )
    if key in _HOST_FILE_OPTIONS:
        raise InvalidArgument(
            f"{field}: {key} names a file on the host, which a task definition may not reach; "
            "use syslog over udp or tcp, or tcp+tls with the host's own trust store"
        )
    if driver == "awsfirelens":
        known = _FIRELENS_KEY.fullmatch(key) is not None
    elif driver == "awslogs":
        known = key in AWSLOGS_OPTIONS
    else:
        known = key in ENGINE_DRIVERS[driver]
    if not known:
        allowed = AWSLOGS_OPTIONS if driver == "awslogs" else ENGINE_DRIVERS.get(driver, frozenset())
        hint = (
            "use letters, digits, '_', '.' and '-'"
            if driver == "awsfirelens"
            else f"{driver} takes {', '.join(sorted(allowed))}"
        )
        raise InvalidArgument(f"{field}: {shown(key)} is not an option of {driver}: {hint}")


def _check_option(where: str, driver: str, key: str, value: str) -> None:
    _check_key(f"{where}.options", driver, key)
    if len(value) > MAX_OPTION_VALUE_LENGTH or not _clean(value):
        raise InvalidArgument(
            f"{where}.options[{key}]: the value must be at most {MAX_OPTION_VALUE_LENGTH} printable "
            "characters"
        )
    said = _misshapen(driver, key, value)
    if said is not None:
        raise InvalidArgument(f"{where}.options[{key}] {shown(value)} is invalid: use {said}")
    address = _ADDRESSES.get(key)
    if address is not None and driver in ENGINE_DRIVERS:
        matched = address.fullmatch(value)
        refusal = _host_refusal(matched) if matched is not None else None
        if refusal is not None:
            raise InvalidArgument(f"{where}.options[{key}] {shown(value)} is refused: {refusal}")


def check_log_configuration(where: str, c: pb.ContainerDefinition) -> None:
    """Check one container's logConfiguration (every client: the gRPC API too)."""
    if not c.HasField("log_configuration"):
        return
    config = c.log_configuration
    where = f"{where}.logConfiguration"
    driver = config.log_driver
    if driver not in DRIVERS:
        raise InvalidArgument(
            f"{where}.logDriver {shown(driver[:64])} is not supported: use {', '.join(DRIVERS)}"
        )
    if len(config.options) > MAX_OPTIONS:
        raise InvalidArgument(
            f"{where}.options has {len(config.options)} entries: the limit is {MAX_OPTIONS}"
        )
    for key, value in sorted(config.options.items()):
        _check_option(where, driver, key, value)
    required, default = _REQUIRED.get(driver, ("", ""))
    if required and required not in config.options:
        raise InvalidArgument(f"{where}.options: {driver} needs {required}, the address to send to{default}")
    if not config.secret_options:
        return
    if len(config.secret_options) > MAX_SECRET_OPTIONS:
        raise InvalidArgument(f"{where}.secretOptions: at most {MAX_SECRET_OPTIONS} entries")
    seen: set[str] = set()
    for option in config.secret_options:
        if not option.name or len(option.name) > MAX_OPTION_NAME_LENGTH or not _clean(option.name):
            raise InvalidArgument(
                f"{where}.secretOptions: name {shown(option.name[:100])} is invalid: use "
                f"1-{MAX_OPTION_NAME_LENGTH} printable characters"
            )
        if driver in ENGINE_DRIVERS:
            if option.name in seen or option.name in config.options:
                raise InvalidArgument(
                    f"{where}.secretOptions: {option.name} is set twice (in options or secretOptions)"
                )
            seen.add(option.name)
            _check_engine_secret_option(where, driver, option)
            continue
        # Never resolved (they carry AWS credentials for AWS's log services), so any bounded,
        # printable reference is kept as written: real files carry placeholders here.
        if (
            not option.value_from
            or len(option.value_from) > MAX_REFERENCE_LENGTH
            or not _clean(option.value_from)
        ):
            raise InvalidArgument(
                f"{where}.secretOptions[{option.name}].valueFrom: use 1-{MAX_REFERENCE_LENGTH} "
                "printable characters"
            )


def _check_engine_secret_option(where: str, driver: str, option: pb.SecretReference) -> None:
    """One secretOption of an engine driver: a key of the driver's, its value a Berth secret."""
    key = option.name
    _check_key(f"{where}.secretOptions", driver, key)
    if key in _ADDRESSES:
        raise InvalidArgument(
            f"{where}.secretOptions: {key} is an address, which is checked when registered (the "
            "engine sends from the host's own network) and a secret's value never is: put it in options"
        )
    try:
        parse_reference(option.value_from)
    except InvalidArgument as error:
        raise InvalidArgument(f"{where}.secretOptions[{key}].valueFrom: {error}") from None


def applied_secret_options(c: pb.ContainerDefinition) -> Sequence[pb.SecretReference]:
    """The secretOptions the engine is given (resolved for the task's node): an engine driver's;
    none for awslogs and awsfirelens, whose are kept as written only."""
    if not c.HasField("log_configuration") or c.log_configuration.log_driver not in ENGINE_DRIVERS:
        return ()
    return c.log_configuration.secret_options


def secret_value_refusal(driver: str, key: str, value: str) -> str | None:
    """Why a secret's value cannot be the log option `key` of `driver`, or None. The reason
    never quotes the value: it becomes the task's stopped reason."""
    if len(value) > MAX_OPTION_VALUE_LENGTH or not _clean(value):
        return f"a log option's value is at most {MAX_OPTION_VALUE_LENGTH} printable characters"
    said = _misshapen(driver, key, value)
    return f"{key} takes {said}" if said is not None else None


def _misshapen(driver: str, key: str, value: str) -> str | None:
    """What an engine driver's option `key` takes, when `value` is not of that shape; else None."""
    shape = _VALUE_SHAPES.get(key)
    if shape is None or driver not in ENGINE_DRIVERS:
        return None
    accepted, said = shape
    fits = value in accepted if isinstance(accepted, frozenset) else accepted.fullmatch(value) is not None
    return None if fits else said


def to_ecs(c: pb.ContainerDefinition) -> dict[str, Any]:
    """The logConfiguration as registered, in ECS's JSON (the inverse of `LogSettings.apply`)."""
    if not c.HasField("log_configuration"):
        return {}
    config = c.log_configuration
    out: dict[str, Any] = {"logDriver": config.log_driver}
    if config.options:
        out["options"] = dict(sorted(config.options.items()))
    if config.secret_options:
        out["secretOptions"] = [{"name": s.name, "valueFrom": s.value_from} for s in config.secret_options]
    return {FIELD: out}
