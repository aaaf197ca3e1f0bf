"""`berth-controlplane`: run one control-plane replica until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from prometheus_client import start_http_server

from berth import logs
from berth.errors import BerthError
from controlplane.config import ControlPlaneSettings
from controlplane.server import ControlPlane
from controlplane.validation.images import normalize_registries

log = logging.getLogger("controlplane")


def parse_args(argv: list[str] | None = None) -> ControlPlaneSettings:
    parser = argparse.ArgumentParser(
        prog="berth-controlplane", description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--listen", default="127.0.0.1:7400", help="gRPC address, HOST:PORT")
    parser.add_argument("--data-dir", required=True, type=Path, help="state of this replica (embedded etcd)")
    parser.add_argument("--etcd", default="", help="external etcd endpoints, URL[,URL]; default: embedded")
    parser.add_argument("--key-prefix", default="/berth/")
    parser.add_argument("--leader-ttl", type=int, default=5, help="seconds")
    parser.add_argument("--stopped-task-retention", type=float, default=3600.0, help="seconds")
    parser.add_argument(
        "--scheduler-sample-size", type=int, default=0, help="nodes each task samples first; 0: all"
    )
    parser.add_argument(
        "--service-cidr", default="10.96.0.0/16", help="virtual IPs of services come from here"
    )
    parser.add_argument(
        "--node-grace", type=float, default=3.0, help="seconds without heartbeats before a node is DOWN"
    )
    parser.add_argument("--metrics-listen", default=None, help="Prometheus metrics address, HOST:PORT")
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--allowed-registries",
        default="",
        help="registries images may come from, REGISTRY[,REGISTRY] (e.g. docker.io,ghcr.io); empty: any",
    )
    args = parser.parse_args(argv)
    logs.configure(args.log_level)
    return ControlPlaneSettings(
        listen=args.listen,
        data_dir=args.data_dir,
        etcd_endpoints=[e for e in args.etcd.split(",") if e],
        key_prefix=args.key_prefix,
        leader_ttl=args.leader_ttl,
        stopped_task_retention=args.stopped_task_retention,
        scheduler_sample_size=args.scheduler_sample_size,
        node_grace=args.node_grace,
        service_cidr=args.service_cidr,
        metrics_listen=args.metrics_listen,
        allowed_registries=normalize_registries(args.allowed_registries.split(",")),
    )


async def serve(settings: ControlPlaneSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    plane = ControlPlane(settings)
    try:
        await plane.start()
        await stop.wait()
    finally:
        await plane.stop()


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
