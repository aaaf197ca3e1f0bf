"""`berth-agent`: run this host's tasks for a control plane until SIGTERM.

Stopping the agent leaves its containers running: a restarted agent adopts
them by their labels.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

import docker
from prometheus_client import start_http_server

from agent import host
from agent.config import AgentSettings
from agent.credentials import (
    DirectoryStore,
    NodeCredentials,
    default_join_addresses,
    fetch_ca,
    join,
)
from agent.dns import DNSLimits, ServiceDNS, allowed_networks, parse_networks
from agent.metric_endpoint import MetricEndpoint, parse_listen, start_endpoint
from agent.netfilter import backend as netfilter
from agent.netfilter.runner import SubprocessRunner
from agent.netfilter.sync import RuleSync
from agent.runtime.docker_driver import DockerDriver
from agent.runtime.docker_spec import DEFAULT_PIDS_LIMIT
from agent.runtime.docker_volumes import AWS_REGION
from agent.session import AGENT_VERSION, ControlPlaneSession
from agent.supervisor import TaskSupervisor
from agent.usage import DockerEngineStats, UsageSampler, run_usage
from berth import logs, pki, usagelimits
from berth.errors import BerthError, FailedPrecondition, InvalidArgument, Unavailable
from berth.names import DEFAULT_CLUSTER, check_dns_label
from berth.servers import parse_servers
from berth.signals import on_signals
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

log = logging.getLogger("agent")

# How often Berth's DNS relearns the engine's container networks (who may ask it).
DNS_NETWORKS_REFRESH = 60.0


def _attribute(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"attribute {text!r} must look like KEY=VALUE")
    return key, value


def _network(text: str) -> str:
    try:
        parse_networks([text])
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return text


def _positive_int(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 10_000:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number from 1 to 10000")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.1 <= value <= 300:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of seconds from 0.1 to 300")
    return value


def parse_args(argv: list[str] | None = None) -> tuple[AgentSettings, str | None]:
    parser = argparse.ArgumentParser(
        prog="berth-agent", description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--server",
        required=True,
        help="control plane gRPC address, HOST:PORT; several replicas: HOST:PORT,HOST:PORT,...",
    )
    parser.add_argument(
        "--data-dir", required=True, type=Path, help="where the agent keeps its key and certificate"
    )
    parser.add_argument(
        "--join-token",
        default=None,
        help="token from `berth join-token create`; used only when the data dir holds no certificate",
    )
    parser.add_argument(
        "--ca-hash",
        default=None,
        help="the cluster CA's hash, sha256:..., as `berth join-token create` prints it",
    )
    parser.add_argument(
        "--join-server",
        default=None,
        help="the control plane's join listener, HOST:PORT[,HOST:PORT...]; "
        "default: each --server's host and the next port",
    )
    parser.add_argument("--name", default=None, help="node name (a DNS label); default: hostname")
    parser.add_argument(
        "--cluster",
        default=DEFAULT_CLUSTER,
        help="the cluster this node joins (it must exist: `berth cluster create NAME`)",
    )
    parser.add_argument("--address", default=None, help="address other hosts reach this one at")
    parser.add_argument(
        "--attribute", action="append", type=_attribute, default=[], help="KEY=VALUE, repeatable"
    )
    parser.add_argument("--cpu-units", type=int, default=None, help="override: default 1024 per core")
    parser.add_argument("--memory-mib", type=int, default=None, help="override: default total memory")
    parser.add_argument(
        "--docker-url", default=None, help="Docker engine socket; default: DOCKER_HOST or local"
    )
    parser.add_argument(
        "--docker-concurrency", type=int, default=8, help="Docker calls in flight at once (worker threads)"
    )
    parser.add_argument(
        "--no-service-network",
        action="store_true",
        help="do not program service VIPs (nftables/iptables) or serve DNS on this host",
    )
    parser.add_argument(
        "--netfilter",
        choices=netfilter.MODES,
        default=netfilter.AUTO,
        help="how service VIPs are programmed: nftables (one table, ip berth), iptables "
        "(iptables-restore), or auto: nftables where nft works, else iptables",
    )
    parser.add_argument("--dns-port", type=int, default=53, help="DNS for service names, on --address")
    parser.add_argument(
        "--dns-upstream",
        default=None,
        help="HOST[:PORT] other names are forwarded to; default: first nameserver of /etc/resolv.conf",
    )
    parser.add_argument("--resync-interval", type=float, default=30.0, help="seconds")
    parser.add_argument(
        "--usage-interval",
        type=float,
        default=usagelimits.DEFAULT_INTERVAL,
        help="seconds between samples of the tasks' CPU and memory (1-60)",
    )
    parser.add_argument("--metrics-listen", default=None, help="Prometheus metrics address, HOST:PORT")
    parser.add_argument(
        "--metrics-push-listen",
        default=None,
        metavar="ADDRESS",
        help="where this host's containers POST custom metrics (/v1/metrics/NAME): IP:PORT, or "
        "bridge:PORT for the engine's bridge gateway; callers are known by their container's "
        "address (default: off)",
    )
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--pids-limit",
        type=int,
        default=DEFAULT_PIDS_LIMIT,
        help="processes per container; 0 or -1: the engine's default (unlimited)",
    )
    parser.add_argument(
        "--environment-files-dir",
        type=Path,
        default=None,
        help="directory holding tasks' environmentFiles: arn:aws:s3:::BUCKET/KEY.env is read from "
        "DIR/BUCKET/KEY.env (default: none; such tasks fail to start)",
    )
    parser.add_argument(
        "--aws-region",
        default=None,
        help="the node's AWS region, for tasks' EFS volumes; default: AWS_REGION, else none",
    )
    limits = DNSLimits()
    parser.add_argument(
        "--dns-allow",
        action="append",
        type=_network,
        default=[],
        help="CIDR whose clients the DNS also answers (repeatable); it always answers loopback, "
        "this host's addresses and the container engine's networks, and refuses everyone else",
    )
    parser.add_argument(
        "--dns-workers", type=_positive_int, default=limits.workers, help="DNS worker threads per transport"
    )
    parser.add_argument(
        "--dns-queue",
        type=_positive_int,
        default=limits.queue,
        help="DNS queries waiting for a worker; beyond, UDP gets SERVFAIL and TCP is closed",
    )
    parser.add_argument(
        "--dns-tcp-timeout",
        type=_seconds,
        default=limits.tcp_timeout,
        help="seconds a DNS client over TCP has to send each query",
    )
    parser.add_argument(
        "--dns-forward-timeout",
        type=_seconds,
        default=limits.forward_timeout,
        help="seconds a forward to the upstream resolver may take",
    )
    args = parser.parse_args(argv)
    logs.configure(args.log_level)
    name = args.name or host.default_name()
    try:
        check_dns_label("node", name)
        check_dns_label("cluster", args.cluster)
    except InvalidArgument as error:
        parser.error(str(error))
    if args.ca_hash is not None:
        try:
            pki.check_hash(args.ca_hash)
        except InvalidArgument as error:
            parser.error(f"--ca-hash: {error}")
    try:
        parse_servers(args.server)
    except InvalidArgument as error:
        parser.error(f"--server: {error}")
    if args.join_server is not None:
        try:
            parse_servers(args.join_server)
        except InvalidArgument as error:
            parser.error(f"--join-server: {error}")
    if args.metrics_push_listen is not None:
        try:
            parse_listen(args.metrics_push_listen)
        except InvalidArgument as error:
            parser.error(f"--metrics-push-listen: {error}")
    if args.environment_files_dir is not None and not args.environment_files_dir.is_dir():
        parser.error(f"--environment-files-dir {args.environment_files_dir}: not a directory")
    aws_region = args.aws_region if args.aws_region is not None else os.environ.get("AWS_REGION", "")
    if aws_region and not AWS_REGION.fullmatch(aws_region):
        parser.error(f"--aws-region {aws_region!r} is not an AWS region (e.g. us-east-1)")
    if args.pids_limit < -1:
        parser.error(f"--pids-limit {args.pids_limit}: give a number of processes, or 0 or -1 for no limit")
    if not usagelimits.MIN_INTERVAL <= args.usage_interval <= usagelimits.MAX_INTERVAL:
        parser.error(f"--usage-interval {args.usage_interval}: give 1 to 60 seconds")
    settings = AgentSettings(
        server=args.server,
        data_dir=args.data_dir,
        name=name,
        address=args.address or host.default_address(),
        cpu_units=args.cpu_units or host.cpu_units(),
        memory_mib=args.memory_mib or host.memory_mib(),
        attributes=dict(args.attribute),
        docker_url=args.docker_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock",
        resync_interval=args.resync_interval,
        docker_concurrency=args.docker_concurrency,
        service_network=not args.no_service_network,
        netfilter=args.netfilter,
        dns_port=args.dns_port,
        dns_upstream=args.dns_upstream,
        pids_limit=args.pids_limit,
        environment_files_dir=args.environment_files_dir,
        dns_allow=tuple(args.dns_allow),
        dns_workers=args.dns_workers,
        dns_queue=args.dns_queue,
        dns_tcp_timeout=args.dns_tcp_timeout,
        dns_forward_timeout=args.dns_forward_timeout,
        join_token=args.join_token,
        ca_hash=args.ca_hash,
        join_server=args.join_server,
        aws_region=aws_region,
        metrics_push_listen=args.metrics_push_listen,
        usage_interval=args.usage_interval,
        cluster=args.cluster,
    )
    return settings, args.metrics_listen


async def _metrics() -> pb.NodeMetrics | None:
    return await asyncio.to_thread(host.sample_metrics)


async def _dns_networks(driver: DockerDriver, settings: AgentSettings) -> list[str]:
    """Who may ask this host's DNS: loopback, its addresses, its container networks, --dns-allow."""
    try:
        subnets = await driver.network_subnets()
    except Unavailable as error:
        log.warning("event=dns_container_networks_unknown error=%r", str(error))
        subnets = []
    usable = []
    for subnet in subnets:
        try:
            parse_networks([subnet])
            usable.append(subnet)
        except ValueError:
            log.warning("event=dns_container_network_ignored subnet=%r", subnet)
    return allowed_networks(await asyncio.to_thread(host.own_addresses), usable, settings.dns_allow)


async def _refresh_dns_networks(dns: ServiceDNS, driver: DockerDriver, settings: AgentSettings) -> None:
    """Containers may join networks created after start: relearn them now and then."""
    while True:
        await asyncio.sleep(DNS_NETWORKS_REFRESH)
        try:
            networks = await _dns_networks(driver, settings)
            if parse_networks(networks) != dns.allowed_networks:
                dns.allow(networks)
                log.info("event=dns_allowed_changed allowed=%s", ",".join(networks))
        except Exception as error:  # never stop the agent over a refresh; the last set stays
            log.error("event=dns_allowed_refresh_failed error=%r", str(error))


async def node_credentials(settings: AgentSettings, store: DirectoryStore) -> NodeCredentials:
    """The node's credentials from its data directory, or from joining with the token given."""
    credentials = await asyncio.to_thread(store.load)
    if credentials is not None:
        if settings.join_token:
            log.info(
                "event=join_token_ignored node=%s reason=%r",
                credentials.node_id,
                "the data directory already holds this node's certificate",
            )
        return credentials
    if not settings.join_token or not settings.ca_hash:
        raise FailedPrecondition(
            f"{settings.data_dir} holds no node certificate: give --join-token and --ca-hash "
            "(`berth join-token create` prints both) to join the cluster"
        )
    join_servers = (
        parse_servers(settings.join_server)
        if settings.join_server
        else default_join_addresses(settings.server)
    )
    backoff = 1.0
    attempt = 0
    while True:
        join_server = join_servers[attempt % len(join_servers)]
        attempt += 1
        try:
            ca = await fetch_ca(join_server, settings.ca_hash)
            credentials = await join(join_server, settings.join_token, ca, settings.name)
            break
        except Unavailable as error:
            # The control plane may still be starting (both units come up at boot);
            # with several replicas the next one is asked at once, then all again after a pause.
            wait = backoff if attempt % len(join_servers) == 0 else 0.0
            log.warning(
                "event=join_retry join_server=%s error=%r retry_in=%.0fs", join_server, str(error), wait
            )
            await asyncio.sleep(wait)
            if wait:
                backoff = min(backoff * 2, 30.0)
    await asyncio.to_thread(store.save, credentials)
    return credentials


async def run(settings: AgentSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    on_signals(loop, (signal.SIGTERM, signal.SIGINT), stop.set)
    network: RuleSync | None = None
    dns: ServiceDNS | None = None
    container_dns: list[str] = []
    if settings.service_network:
        if settings.address.startswith("127."):
            # Containers cannot reach the host's loopback: a VIP would be
            # DNATed to an endpoint they cannot reach, and they would not get
            # Berth's DNS. Say so instead of failing quietly.
            log.warning(
                "event=loopback_address address=%s effect=%r",
                settings.address,
                "containers cannot reach service VIPs or Berth's DNS; "
                "pass --address with an address containers reach (or drop it for the default)",
            )
        # A forced backend that cannot work here is fatal (FailedPrecondition), said in one line.
        backend = await asyncio.to_thread(netfilter.choose, settings.netfilter, SubprocessRunner())
        network = netfilter.make_network(backend, settings.address)
        # Containers reach the host's address, not its loopback.
        if not settings.address.startswith("127."):
            container_dns = [settings.address]
    driver = DockerDriver(
        settings.docker_url,
        settings.docker_concurrency,
        dns_servers=container_dns,
        pids_limit=settings.pids_limit,
        environment_files_dir=settings.environment_files_dir,
        aws_region=settings.aws_region,
    )
    if settings.service_network:
        try:
            dns = ServiceDNS(
                settings.address,
                settings.dns_port,
                settings.dns_upstream,
                allowed_networks=await _dns_networks(driver, settings),
                limits=DNSLimits(
                    workers=settings.dns_workers,
                    queue=settings.dns_queue,
                    tcp_timeout=settings.dns_tcp_timeout,
                    forward_timeout=settings.dns_forward_timeout,
                ),
            )
            dns.start()
        except OSError as error:
            # Rules still work without names; say so and carry on.
            log.error(
                "event=dns_unavailable address=%s port=%d error=%r",
                settings.address,
                settings.dns_port,
                str(error),
            )
            dns = None
    host.prepare_data_dir(settings.data_dir)
    store = DirectoryStore(settings.data_dir)
    try:
        credentials = await node_credentials(settings, store)
    except BaseException:
        await driver.close()
        if dns is not None:
            dns.stop()
        raise
    node_id = credentials.node_id
    previous = host.load_node_id(settings.data_dir)
    if previous and previous != node_id:
        log.warning("event=old_node_id_ignored old=%s node=%s", previous, node_id)
    supervisor = TaskSupervisor(driver, node_id, settings.resync_interval)
    registration = agent_pb.RegisterRequest(
        node_id=node_id,
        name=settings.name,
        address=settings.address,
        cpu_units=settings.cpu_units,
        memory_mib=settings.memory_mib,
        attributes=settings.attributes,
        agent_version=AGENT_VERSION,
        cluster=settings.cluster,
    )

    def registered(response: agent_pb.RegisterResponse) -> None:
        if network is not None:
            network.service_cidr = response.service_cidr

    def desired(state: agent_pb.DesiredState) -> None:
        if network is not None:
            network.update(list(state.routes), state.revision)
        if dns is not None:
            dns.resolver.update(list(state.routes))

    session = ControlPlaneSession(
        settings.server,
        registration,
        supervisor,
        credentials,
        store,
        on_registered=registered,
        sample_metrics=_metrics,
        on_desired=desired,
    )
    log.info(
        "event=agent_started server=%s node=%s name=%s cluster=%s address=%s cpu_units=%d memory_mib=%d",
        settings.server,
        node_id,
        settings.name,
        settings.cluster,
        settings.address,
        settings.cpu_units,
        settings.memory_mib,
    )
    endpoint: MetricEndpoint | None = None
    push_listen = settings.metrics_push_listen
    if push_listen:
        try:
            endpoint = await start_endpoint(push_listen, driver, node_id, session.push_metric)
        except (OSError, BerthError) as error:
            # Tasks run without it; say so and carry on.
            log.error("event=metric_endpoint_unavailable listen=%s error=%r", push_listen, str(error))
    workers = [
        asyncio.create_task(supervisor.run(), name="supervisor"),
        asyncio.create_task(session.run(), name="session"),
        asyncio.create_task(
            run_usage(
                UsageSampler(DockerEngineStats(docker.APIClient(base_url=settings.docker_url))),
                lambda: supervisor.observed,
                session.send_usage,
                settings.usage_interval,
            ),
            name="usage",
        ),
    ]
    if network is not None:
        workers.append(asyncio.create_task(network.run(), name="service-network"))
    if dns is not None:
        workers.append(asyncio.create_task(_refresh_dns_networks(dns, driver, settings), name="dns-networks"))
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([*workers, stopper], return_when=asyncio.FIRST_COMPLETED)
    if stop.is_set():
        # SIGTERM is how a service manager restarts (upgrades) the agent: say so first, so
        # the control plane waits for it instead of replacing this host's tasks.
        await session.goodbye(restarting=True)
    for task in [*workers, stopper]:
        task.cancel()
    for task in workers:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if endpoint is not None:
        await endpoint.close()
    await driver.close()
    if dns is not None:
        dns.stop()
    log.info("event=agent_stopped containers=left_running")


def main(argv: list[str] | None = None) -> None:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["rules"]:
        # `berth-agent rules`: print the rules this host's agent owns (either backend).
        print(netfilter.owned_rules())
        return
    if arguments[:1] == ["remove-rules"]:
        # `berth-agent remove-rules [SERVICE_CIDR]`: take them off the host (a
        # stopped agent leaves them in place on purpose: static stability).
        netfilter.remove_owned_rules(arguments[1] if len(arguments) > 1 else None)
        print("removed Berth's rules from this host")
        return
    settings, metrics_listen = parse_args(argv)
    if metrics_listen:
        address, _, port = metrics_listen.rpartition(":")
        start_http_server(int(port), addr=address or "0.0.0.0")
    try:
        asyncio.run(run(settings))
    except BerthError as error:
        log.error("event=fatal error=%r", str(error))
        sys.exit(1)


if __name__ == "__main__":
    main()
