"""Usage plumbing: the agent's outbox keeps only the latest usage report; /metrics follows the window;
`berth top` renders what GetUsage returns."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, generate_latest

from agent.session import Outbox
from berth.cli.top import render, utilization_line
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb
from controlplane.registry import AgentRegistry
from controlplane.usage import UsageWindow
from controlplane.usage_metrics import UsageCollector

T1 = "a" * 32


def test_outbox_sends_reports_first_and_only_the_latest_usage() -> None:
    async def scenario() -> list[str]:
        outbox = Outbox()
        outbox.usage(agent_pb.UsageReport(tasks=[agent_pb.TaskUsage(task_id="old")]))
        outbox.usage(agent_pb.UsageReport(tasks=[agent_pb.TaskUsage(task_id="new")]))
        outbox.report(agent_pb.TaskStatusReport(task_id="status"))
        sent = []
        while (message := await outbox.next(0.01)) is not None:
            body = message.WhichOneof("body")
            sent.append(message.status.task_id if body == "status" else message.usage.tasks[0].task_id)
        return sent

    assert asyncio.run(scenario()) == ["status", "new"]


def test_metrics_follow_the_window() -> None:
    task = pb.Task(id=T1, cluster="default", service="web", node_id="n1", last_status=pb.RUNNING)
    window = UsageWindow({T1: task}.get)
    agents = AgentRegistry()
    session = agents.connected("n1")
    agents.record_heartbeat(
        session, pb.NodeMetrics(cpu_percent=12.5, memory_used_bytes=5, memory_total_bytes=9)
    )
    registry = CollectorRegistry()
    registry.register(UsageCollector(agents, window))
    window.record(
        "n1",
        agent_pb.UsageReport(
            tasks=[
                agent_pb.TaskUsage(task_id=T1, containers=[pb.ContainerUsage(name="web", cpu_units=300.0)])
            ]
        ),
        1.0,
    )
    text = generate_latest(registry).decode()
    assert f'berth_task_cpu_units{{cluster="default",service="web",task="{T1}"}} 300.0' in text
    assert 'berth_node_cpu_percent{node="n1"} 12.5' in text
    window.record("n1", agent_pb.UsageReport(), 2.0)  # the task stopped: its series ends
    assert T1 not in generate_latest(registry).decode()


def test_render_and_utilization_line() -> None:
    usage = api.GetUsageResponse(
        nodes=[pb.NodeUsage(node_id="n1", name="h1", cpu_percent=50, memory_total_bytes=2 << 30, tasks=1)],
        tasks=[
            pb.TaskUsageSummary(
                task_id=T1,
                service="web",
                node_id="n1",
                containers=[pb.ContainerUsage(name="web", cpu_units=512, memory_bytes=64 << 20)],
                cpu_units=512,
                memory_bytes=64 << 20,
                cpu_percent=100.0,
            )
        ],
        services=[pb.ServiceUsage(cluster="default", service="web", cpu_percent=100.0, counted=1, warming=1)],
    )
    assert len(render(usage).renderables) == 5
    assert utilization_line(usage.services[0]) == "cpu 100% memory - (1 tasks, 1 warming up)"
    assert utilization_line(pb.ServiceUsage(missing=2)) == "no recent figures (2 running tasks without one)"
