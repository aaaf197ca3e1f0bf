"""`berth-controlplane`: run one control-plane replica until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import sys
import threading
from pathlib import Path

from prometheus_client import start_http_server

from berth import logs
from berth.errors import BerthError
from berth.gcpauses import quiet_gc
from berth.signals import on_signals
from controlplane import tls
from controlplane.config import ControlPlaneSettings, default_ecs_listen
from controlplane.limits import parse_ports
from controlplane.server import ControlPlane
from controlplane.validation.host_paths import normalize_prefixes
from controlplane.validation.images import normalize_registries
from controlplane.validation.volume_drivers import normalize_drivers

log = logging.getLogger("controlplane")

# Seconds SIGTERM leaves the clean shutdown; then the process exits anyway. Nothing
# acknowledged is lost: etcd holds it (the embedded etcd dies with this process).
STOP_DEADLINE = 8.0

_ECS_REGION = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")
_ECS_ACCOUNT = re.compile(r"[0-9]{12}")


def parse_args(argv: list[str] | None = None) -> ControlPlaneSettings:
    parser = argparse.ArgumentParser(
        prog="berth-controlplane", description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--listen", default="127.0.0.1:7400", help="gRPC address, HOST:PORT")
    parser.add_argument("--data-dir", required=True, type=Path, help="state of this replica (embedded etcd)")
    parser.add_argument(
        "--etcd",
        default="",
        help="external etcd endpoints, URL[,URL...]: every member's, a dead one is left for the next; "
        "default: embedded",
    )
    parser.add_argument("--etcd-cacert", type=Path, default=None, help="CA of the external etcd (TLS)")
    parser.add_argument(
        "--etcd-cert", type=Path, default=None, help="client certificate for the external etcd (TLS)"
    )
    parser.add_argument("--etcd-key", type=Path, default=None, help="its private key")
    parser.add_argument("--key-prefix", default="/berth/")
    parser.add_argument("--leader-ttl", type=int, default=5, help="seconds")
    parser.add_argument(
        "--stopped-task-retention",
        type=float,
        default=259200.0,
        help="seconds a STOPPED task (exit code, stop code, reason) is kept before it is purged",
    )
    parser.add_argument(
        "--scheduler-sample-size", type=int, default=0, help="nodes each task samples first; 0: all"
    )
    parser.add_argument(
        "--service-cidr", default="10.96.0.0/16", help="virtual IPs of services come from here"
    )
    parser.add_argument(
        "--node-grace",
        type=float,
        default=10.0,
        help="seconds without heartbeats before a node is DOWN and its tasks replaced",
    )
    parser.add_argument(
        "--agent-restart-grace",
        type=float,
        default=60.0,
        help="seconds an agent that said it is restarting (SIGTERM) may stay silent before its node "
        "is judged; never less than --node-grace",
    )
    parser.add_argument(
        "--mass-failure-share",
        type=float,
        default=0.33,
        help="share of nodes (0-1) silent within one grace above which the control plane suspects "
        "itself or the network and marks none DOWN; 1: never (clusters of 3 nodes or more)",
    )
    parser.add_argument("--metrics-listen", default=None, help="Prometheus metrics address, HOST:PORT")
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--allowed-registries",
        default="",
        help="registries images may come from, REGISTRY[,REGISTRY] (e.g. docker.io,ghcr.io); empty: any",
    )
    parser.add_argument(
        "--allow-privileged",
        action="store_true",
        help="task definitions may use privileged, dockerSecurityOptions, capabilities beyond "
        "Docker's defaults and real-time ulimits",
    )
    parser.add_argument(
        "--allow-devices", action="store_true", help="task definitions may map host devices (linuxParameters)"
    )
    parser.add_argument(
        "--allow-host-path",
        action="append",
        default=[],
        metavar="PREFIX",
        help="task definitions may mount host paths under this absolute PREFIX (volumes' host.sourcePath, "
        "a local volume's bind device); repeatable; none by default",
    )
    parser.add_argument(
        "--allow-volume-driver",
        action="append",
        default=[],
        metavar="NAME",
        help="task definitions may use this Docker volume driver with any options (local: any "
        "type and options of Docker's local driver); repeatable; by default only the local driver "
        "without options, type tmpfs, or a bind of an allowed host path",
    )
    parser.add_argument(
        "--allow-network-volumes",
        action="store_true",
        help="task definitions may mount NFS/CIFS servers they name through the local driver "
        "(EFS volumes are always allowed)",
    )
    parser.add_argument(
        "--lb-allowed-ports", default="", help="ports below 1024 services may be exposed on, e.g. 80,443"
    )
    parser.add_argument(
        "--lb-reserved-ports", default="", help="more host ports no service may be exposed on, e.g. 9100"
    )
    parser.add_argument(
        "--node-gc-after", type=float, default=86400.0, help="seconds a DOWN node is kept; 0: forever"
    )
    parser.add_argument(
        "--register-rate", type=float, default=50.0, help="new nodes per second per replica; 0: no limit"
    )
    parser.add_argument("--register-burst", type=int, default=1000, help="new nodes at once")
    parser.add_argument("--max-clusters", type=int, default=1_000, help="quota")
    parser.add_argument("--max-services-per-cluster", type=int, default=10_000, help="quota")
    parser.add_argument(
        "--max-tasks-per-service", type=int, default=10_000, help="quota: highest desired count"
    )
    parser.add_argument(
        "--max-revisions-per-family", type=int, default=1_000, help="quota: task definition revisions"
    )
    parser.add_argument("--max-nodes", type=int, default=5_000, help="quota")
    parser.add_argument(
        "--crash-backoff-first", type=float, default=5.0, help="seconds before a crash loop's second attempt"
    )
    parser.add_argument(
        "--crash-backoff-max", type=float, default=300.0, help="seconds: the crash-loop backoff's cap"
    )
    parser.add_argument(
        "--crash-backoff-reset",
        type=float,
        default=600.0,
        help="seconds a task stays up to end a crash loop's streak",
    )
    parser.add_argument(
        "--keep-failed-tasks", type=int, default=10, help="failed stopped tasks kept per service"
    )
    parser.add_argument(
        "--join-listen",
        default="",
        help="address of the join listener agents join through, HOST:PORT (default: --listen's port + 1)",
    )
    parser.add_argument(
        "--pki-dir",
        type=Path,
        default=None,
        help="the cluster CA (ca.crt, ca.key); default DATA_DIR/pki; replicas share a copy",
    )
    parser.add_argument(
        "--certificate-lifetime",
        type=float,
        default=30 * 86400.0,
        help="seconds the control plane's and nodes' certificates live; renewed at two thirds",
    )
    parser.add_argument(
        "--admin-config",
        default=None,
        help="where to write the administrator's CLI config when it is missing "
        "(default ~/.config/berth/config; 'none' writes nothing)",
    )
    parser.add_argument(
        "--advertise",
        default="",
        help="HOST:PORT the CLI config and join instructions give (default: --listen, loopback for 0.0.0.0)",
    )
    parser.add_argument(
        "--ecs-listen",
        default=None,
        help="address of the ECS-compatible API (aws CLI, boto3), HOST:PORT, or 'off' "
        "(default: --listen's host, its port + 2)",
    )
    parser.add_argument(
        "--ecs-insecure-http",
        action="store_true",
        help="serve the ECS API as plain HTTP instead of HTTPS (only behind a TLS proxy or on loopback)",
    )
    parser.add_argument("--ecs-region", default="local", help="the region the ECS API's ARNs name")
    parser.add_argument(
        "--ecs-account", default="000000000000", help="the account (12 digits) the ECS API's ARNs name"
    )
    parser.add_argument(
        "--aws-profile-dir",
        default=None,
        help="where to write the AWS profile 'berth' (credentials, config) with the admin config; "
        "'none' writes none (default: ~/.aws when the admin config goes to its default place, else none)",
    )
    args = parser.parse_args(argv)
    admin_config = (
        None
        if args.admin_config == "none"
        else Path(args.admin_config)
        if args.admin_config
        else tls.home_config()
    )
    etcd_files = [args.etcd_cacert, args.etcd_cert, args.etcd_key]
    if any(etcd_files) and not args.etcd:
        parser.error("--etcd-cacert, --etcd-cert and --etcd-key are for an external etcd: give --etcd too")
    if (args.etcd_cert is None) != (args.etcd_key is None):
        parser.error("--etcd-cert and --etcd-key go together")
    for path in filter(None, etcd_files):
        if not path.is_file():
            parser.error(f"{path} is not a readable file")
    if args.certificate_lifetime < 60:
        parser.error("--certificate-lifetime must be at least 60 seconds")
    if not 0 < args.crash_backoff_first <= args.crash_backoff_max:
        parser.error("--crash-backoff-first must be above 0 and at most --crash-backoff-max")
    if args.crash_backoff_reset <= 0:
        parser.error("--crash-backoff-reset must be above 0")
    if not _ECS_REGION.fullmatch(args.ecs_region):
        parser.error(
            "--ecs-region: use 1-32 lowercase letters, digits or '-', not starting or ending with '-'"
        )
    if not _ECS_ACCOUNT.fullmatch(args.ecs_account):
        parser.error("--ecs-account: use 12 digits")
    ecs_listen = "" if args.ecs_listen == "off" else args.ecs_listen or default_ecs_listen(args.listen)
    if ecs_listen:
        host, _, port = ecs_listen.rpartition(":")
        if not (host and port.isascii() and port.isdigit() and len(port) <= 5 and int(port) <= 65535):
            parser.error("--ecs-listen: write HOST:PORT (port 0-65535) or 'off'")
    if not 0 < args.node_grace <= 86400:
        parser.error("--node-grace: give seconds above 0 and at most 86400")
    if not 0 < args.mass_failure_share <= 1:
        parser.error("--mass-failure-share: give a share above 0 and at most 1 (e.g. 0.33)")
    if not 0 <= args.agent_restart_grace <= 86400:
        parser.error("--agent-restart-grace: give 0 to 86400 seconds")
    if args.keep_failed_tasks < 1:
        parser.error("--keep-failed-tasks must be at least 1")
    try:
        lb_allowed_ports = parse_ports(args.lb_allowed_ports, "--lb-allowed-ports")
        lb_reserved_ports = parse_ports(args.lb_reserved_ports, "--lb-reserved-ports")
        allowed_host_paths = normalize_prefixes(args.allow_host_path)
        allowed_volume_drivers = normalize_drivers(args.allow_volume_driver)
    except ValueError as error:
        parser.error(str(error))
    logs.configure(args.log_level)
    return ControlPlaneSettings(
        listen=args.listen,
        data_dir=args.data_dir,
        etcd_endpoints=[e for e in args.etcd.split(",") if e],
        etcd_cacert=args.etcd_cacert,
        etcd_cert=args.etcd_cert,
        etcd_key=args.etcd_key,
        key_prefix=args.key_prefix,
        leader_ttl=args.leader_ttl,
        stopped_task_retention=args.stopped_task_retention,
        scheduler_sample_size=args.scheduler_sample_size,
        node_grace=args.node_grace,
        agent_restart_grace=args.agent_restart_grace,
        mass_failure_share=args.mass_failure_share,
        service_cidr=args.service_cidr,
        metrics_listen=args.metrics_listen,
        allowed_registries=normalize_registries(args.allowed_registries.split(",")),
        allow_privileged=args.allow_privileged,
        allow_devices=args.allow_devices,
        allowed_host_paths=allowed_host_paths,
        allowed_volume_drivers=allowed_volume_drivers,
        allow_network_volumes=args.allow_network_volumes,
        lb_allowed_ports=lb_allowed_ports,
        lb_reserved_ports=lb_reserved_ports,
        node_gc_after=args.node_gc_after,
        register_rate=args.register_rate,
        register_burst=args.register_burst,
        max_clusters=args.max_clusters,
        max_services_per_cluster=args.max_services_per_cluster,
        max_tasks_per_service=args.max_tasks_per_service,
        max_revisions_per_family=args.max_revisions_per_family,
        max_nodes=args.max_nodes,
        crash_backoff_first=args.crash_backoff_first,
        crash_backoff_max=args.crash_backoff_max,
        crash_backoff_reset=args.crash_backoff_reset,
        keep_failed_tasks=args.keep_failed_tasks,
        join_listen=args.join_listen,
        pki_dir=args.pki_dir,
        certificate_lifetime=args.certificate_lifetime,
        admin_config=admin_config,
        advertise=args.advertise,
        ecs_listen=ecs_listen,
        ecs_insecure_http=args.ecs_insecure_http,
        ecs_region=args.ecs_region,
        ecs_account=args.ecs_account,
        aws_profile_dir=_aws_profile_dir(args.aws_profile_dir, admin_config),
    )


def _aws_profile_dir(flag: str | None, admin_config: Path | None) -> Path | None:
    """--aws-profile-dir; by default ~/.aws, but only for the admin config's home location:
    a plane given its own --admin-config (tests, second clusters) leaves ~/.aws alone."""
    if flag == "none":
        return None
    if flag:
        return Path(flag)
    home = tls.home_config()
    if admin_config is None or home is None or admin_config != home:
        return None
    return home.parents[2] / ".aws"  # ~/.config/berth/config -> ~/.aws


async def serve(settings: ControlPlaneSettings, stop_deadline: float = STOP_DEADLINE) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    deadline = StopDeadline(loop, stop_deadline)
    # The deadline is armed in the signal handler itself: the process exits in time even if
    # the loop never gets to the shutdown (berth/signals.py says how a busy loop can miss it).
    on_signals(loop, (signal.SIGTERM, signal.SIGINT), stop.set, at_once=deadline.arm)
    plane = ControlPlane(settings)
    # SIGTERM during start-up (etcd slow to come up, say) stops it too.
    starting = asyncio.create_task(plane.start(), name="start")
    stopping = asyncio.create_task(stop.wait(), name="wait-for-signal")
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # a failed start raises here
            quiet_gc()
            await stopping
    finally:
        deadline.arm()  # a failed start stops under the deadline too
        try:
            stopping.cancel()
            if not starting.done():
                starting.cancel()
                await asyncio.gather(starting, return_exceptions=True)
            await plane.stop()
        finally:
            deadline.cancel()


class StopDeadline:
    """Exits the process `seconds` after it is armed, unless cancelled: a clean shutdown's limit.

    A thread of its own, so it fires even if the event loop never gets a turn again.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        self._loop = loop
        self._seconds = seconds
        # Re-entrant: the signal handler runs in the main thread, possibly inside arm() or cancel().
        self._lock = threading.RLock()
        self._armed = False
        self._cancelled = False
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        """Start counting (once; arming again changes nothing). Safe in a signal handler."""
        with self._lock:
            if self._armed or self._cancelled:
                return
            self._armed = True
            timer = threading.Timer(self._seconds, _exit_abandoning, (self._loop, self._seconds))
            timer.daemon = True
            timer.start()
            self._timer = timer

    def cancel(self) -> None:
        """The shutdown finished: never fire."""
        with self._lock:
            self._cancelled = True
            if self._timer is not None:
                self._timer.cancel()


def _exit_abandoning(loop: asyncio.AbstractEventLoop, seconds: float) -> None:
    """The clean shutdown overran its deadline: say what it left running, and exit."""
    try:
        # Read from another thread: good enough for a last log line.
        abandoned = sorted({task.get_name() for task in asyncio.all_tasks(loop)})
    except RuntimeError:
        abandoned = []
    log.error(
        "event=stop_deadline_passed seconds=%.0f action=exit abandoned=%s",
        seconds,
        ",".join(abandoned[:20]) or "-",
    )
    logging.shutdown()
    os._exit(1)


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv)
    if settings.metrics_listen:
        host, _, port = settings.metrics_listen.rpartition(":")
        start_http_server(int(port), addr=host or "0.0.0.0")
    try:
        asyncio.run(serve(settings))
    except BerthError as error:
        log.error("event=fatal error=%r", str(error))
        sys.exit(1)


if __name__ == "__main__":
    main()
