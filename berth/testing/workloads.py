"""Container definitions the lab tests and the chaos run deploy: what a small web service is."""

from __future__ import annotations

from typing import Any

IMAGE = "berth-busybox:2"
HEALTHY = "wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1"


def http_revision(version: str, command: str = "", healthy: bool = True) -> list[dict[str, Any]]:
    """An HTTP server on 8080 answering `version`, health-checked by fetching itself.

    `command` replaces the server (a crashing revision); `healthy=False` makes a check that
    never passes (a revision that never becomes healthy).
    """
    serve = (
        f"mkdir -p /www && echo {version} > /www/index.html && "
        "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"
    )
    check = HEALTHY if healthy else "echo never ready; exit 1"
    return [
        {
            "name": "web",
            "image": IMAGE,
            "cpu": 32,
            "memory": 32,
            "stopTimeout": 2,
            "portMappings": [{"containerPort": 8080, "name": "http"}],
            "entryPoint": ["sh", "-c"],
            "command": [command or serve],
            "healthCheck": {"command": ["CMD-SHELL", check], "interval": 5, "timeout": 2, "retries": 1},
        }
    ]
