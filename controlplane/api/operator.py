"""The operator API (`berth.v1.Operator`): gRPC requests in, operations called, responses out.

Each method only translates: the work, validation included, is in
`controlplane.operations`, which every front door shares.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from berth import pki
from berth.api_warnings import WARNING_METADATA
from berth.ecs.arns import Arns
from berth.errors import FailedPrecondition
from berth.v1 import operator_pb2 as api
from berth.v1 import operator_pb2_grpc
from berth.v1 import resources_pb2 as pb
from controlplane.api import peers
from controlplane.api.access import Access, guarded
from controlplane.api.errors import Context, grpc_errors, grpc_stream_errors
from controlplane.operations import Operations
from controlplane.operations.membership import Membership, Users, public
from controlplane.operations.metrics import Metrics
from controlplane.operations.services import ServiceChange, ServiceSpec, description
from controlplane.rightsizing_view import RightsizingView
from controlplane.usage_view import UsageView


@guarded(lambda service: service.access)
class OperatorService(operator_pb2_grpc.OperatorServicer):
    """Every RPC is checked against the caller's role and audited (`controlplane.api.access`)."""

    def __init__(
        self,
        operations: Operations,
        access: Access,
        membership: Membership,
        users: Users,
        metrics: Metrics | None = None,
        usage: UsageView | None = None,
        rightsizing: RightsizingView | None = None,
        arns: Arns | None = None,
    ) -> None:
        self._ops = operations
        self._arns = arns or Arns()
        self._metrics = metrics
        self._usage = usage
        self._rightsizing = rightsizing
        self.access = access
        self._membership = membership
        self._users = users
        self._join_address = ""

    def advertise_join(self, address: str) -> None:
        """The join listener's address, for the output of CreateJoinToken."""
        self._join_address = address

    # -- clusters ----------------------------------------------------------

    @grpc_errors
    async def CreateCluster(self, request: api.CreateClusterRequest, context: Context) -> pb.Cluster:
        return await self._ops.clusters.create(request.name, tags=request.tags)

    @grpc_errors
    async def ListClusters(
        self, request: api.ListClustersRequest, context: Context
    ) -> api.ListClustersResponse:
        descriptions = await self._ops.clusters.describe_all()
        return api.ListClustersResponse(clusters=await self._ops.clusters.all(), descriptions=descriptions)

    @grpc_errors
    async def DeleteCluster(self, request: api.DeleteClusterRequest, context: Context) -> pb.Cluster:
        return await self._ops.clusters.delete(request.name)

    # -- task definitions --------------------------------------------------

    @grpc_errors
    async def RegisterTaskDefinition(
        self, request: api.RegisterTaskDefinitionRequest, context: Context
    ) -> pb.TaskDefinition:
        return await self._ops.taskdefs.register(
            pb.TaskDefinition(
                family=request.family,
                container_definitions=request.container_definitions,
                cpu=request.cpu,
                memory=request.memory,
                network_mode=request.network_mode,
                pid_mode=request.pid_mode,
                ipc_mode=request.ipc_mode,
                aws_only_fields=request.aws_only_fields,
                volumes=request.volumes,
                tags=request.tags,
            )
        )

    @grpc_errors
    async def ListTaskDefinitions(
        self, request: api.ListTaskDefinitionsRequest, context: Context
    ) -> api.ListTaskDefinitionsResponse:
        return api.ListTaskDefinitionsResponse(task_definitions=await self._ops.taskdefs.all(request.family))

    @grpc_errors
    async def DescribeTaskDefinition(
        self, request: api.DescribeTaskDefinitionRequest, context: Context
    ) -> pb.TaskDefinition:
        return await self._ops.taskdefs.resolve(request.task_definition, require_active=False)

    @grpc_errors
    async def DeregisterTaskDefinition(
        self, request: api.DescribeTaskDefinitionRequest, context: Context
    ) -> pb.TaskDefinition:
        return await self._ops.taskdefs.deregister(request.task_definition)

    # -- services ------------------------------------------------------------

    @grpc_errors
    async def CreateService(self, request: api.CreateServiceRequest, context: Context) -> pb.Service:
        return await self._ops.services.create(
            ServiceSpec(
                cluster=request.cluster,
                name=request.name,
                task_definition=request.task_definition,
                desired_count=request.desired_count,
                placement_strategy=list(request.placement_strategy),
                placement_constraints=list(request.placement_constraints),
                ports=list(request.ports),
                deployment=request.deployment,
                tags=list(request.tags),
            )
        )

    @grpc_errors
    async def ListServices(
        self, request: api.ListServicesRequest, context: Context
    ) -> api.ListServicesResponse:
        return api.ListServicesResponse(services=await self._ops.services.all(request.cluster))

    @grpc_errors
    async def DescribeService(self, request: api.ServiceRef, context: Context) -> api.ServiceDescription:
        return description(await self._ops.services.describe(request.cluster, request.name))

    @grpc_errors
    async def UpdateService(self, request: api.UpdateServiceRequest, context: Context) -> pb.Service:
        return await self._ops.services.update(
            request.cluster,
            request.name,
            ServiceChange(
                desired_count=request.desired_count if request.HasField("desired_count") else None,
                task_definition=request.task_definition,
                force_new_deployment=request.force_new_deployment,
                deployment=request.deployment,
            ),
        )

    @grpc_errors
    async def DeleteService(self, request: api.ServiceRef, context: Context) -> pb.Service:
        return await self._ops.services.delete(request.cluster, request.name)

    @grpc_errors
    async def ExposeService(self, request: api.ExposeServiceRequest, context: Context) -> pb.Service:
        return await self._ops.services.expose(
            request.cluster, request.name, request.type, request.port, request.service_port, request.protocol
        )

    @grpc_errors
    async def UnexposeService(self, request: api.UnexposeServiceRequest, context: Context) -> pb.Service:
        return await self._ops.services.unexpose(
            request.cluster, request.name, request.port, request.protocol
        )

    @grpc_errors
    async def ListEndpoints(self, request: api.ServiceRef, context: Context) -> api.ListEndpointsResponse:
        found, not_ready = await self._ops.services.endpoints(request.cluster, request.name)
        return api.ListEndpointsResponse(endpoints=found, not_ready=not_ready)

    @grpc_errors
    async def ListServiceEvents(
        self, request: api.ListServiceEventsRequest, context: Context
    ) -> api.ListServiceEventsResponse:
        events = await self._ops.services.events(request.cluster, request.name, request.limit)
        return api.ListServiceEventsResponse(events=events)

    # -- tasks -----------------------------------------------------------------

    @grpc_errors
    async def ListTasks(self, request: api.ListTasksRequest, context: Context) -> api.ListTasksResponse:
        page = await self._ops.tasks.page(
            request.cluster,
            service=request.service,
            node=request.node,
            family=request.family,
            desired_status=request.desired_status,
            last_status=request.last_status,
            include_stopped=request.include_stopped,
            size=request.page_size,
            token=request.page_token,
        )
        return api.ListTasksResponse(tasks=page.tasks, next_page_token=page.next_token, total=page.total)

    @grpc_errors
    async def DescribeTask(self, request: api.TaskRef, context: Context) -> pb.Task:
        task, _ = await self._ops.tasks.find(request.cluster, request.id)
        return task

    @grpc_errors
    async def RunTask(self, request: api.RunTaskRequest, context: Context) -> pb.Task:
        return await self._ops.tasks.run(
            request.cluster,
            request.task_definition,
            request.placement_strategy,
            request.placement_constraints,
            tags=request.tags,
        )

    @grpc_errors
    async def StopTask(self, request: api.StopTaskRequest, context: Context) -> pb.Task:
        return await self._ops.tasks.stop(request.cluster, request.id, request.reason)

    # -- nodes -------------------------------------------------------------------

    @grpc_errors
    async def ListNodes(self, request: api.ListNodesRequest, context: Context) -> api.ListNodesResponse:
        warning = self._ops.nodes.mass_failure()
        if warning:
            # Beside the list, not in it: `berth node list` prints it as a warning line.
            context.set_trailing_metadata(((WARNING_METADATA, f"mass failure suspected {warning}"),))
        return api.ListNodesResponse(nodes=[summary.message() for summary in self._ops.nodes.summaries()])

    @grpc_errors
    async def UpdateNodeStatus(self, request: api.UpdateNodeStatusRequest, context: Context) -> pb.Node:
        return await self._ops.nodes.set_status(request.node, request.status)

    @grpc_errors
    async def RemoveNode(self, request: api.RemoveNodeRequest, context: Context) -> pb.Node:
        return await self._ops.nodes.remove(request.node, request.force)

    # -- logs ------------------------------------------------------------------

    @grpc_stream_errors
    async def StreamLogs(
        self, request: api.StreamLogsRequest, context: Context
    ) -> AsyncIterator[pb.LogChunk]:
        async for chunk in self._ops.logs.stream(request):
            yield chunk

    # -- exec ------------------------------------------------------------------

    @grpc_stream_errors
    async def Exec(
        self, request_iterator: AsyncIterator[pb.ExecInput], context: Context
    ) -> AsyncIterator[pb.ExecOutput]:
        async for output in self._ops.execs.run(request_iterator):
            yield output

    # -- membership ------------------------------------------------------------

    @grpc_errors
    async def CreateJoinToken(
        self, request: api.CreateJoinTokenRequest, context: Context
    ) -> api.CreatedJoinToken:
        caller = peers.identity(context).name
        token, record = await self._membership.create_token(
            request.ttl_seconds, request.uses, request.description, caller
        )
        return api.CreatedJoinToken(
            token=token,
            ca_hash=pki.ca_hash(self._membership.ca_certificate),
            record=public(record),
            join_address=self._join_address,
        )

    @grpc_errors
    async def ListJoinTokens(
        self, request: api.ListJoinTokensRequest, context: Context
    ) -> api.ListJoinTokensResponse:
        return api.ListJoinTokensResponse(tokens=await self._membership.tokens())

    @grpc_errors
    async def RevokeJoinToken(self, request: api.RevokeJoinTokenRequest, context: Context) -> pb.JoinToken:
        return await self._membership.revoke_token(request.id)

    @grpc_errors
    async def CreateUser(self, request: api.CreateUserRequest, context: Context) -> api.CreatedUser:
        caller = peers.identity(context).name
        user, certificate = await self._users.issue(request.name, request.role, request.csr, caller)
        return api.CreatedUser(
            user=user, certificate=certificate, ca_certificate=self._membership.ca_certificate
        )

    @grpc_errors
    async def ListUsers(self, request: api.ListUsersRequest, context: Context) -> api.ListUsersResponse:
        return api.ListUsersResponse(users=await self._users.all())

    @grpc_errors
    async def DeleteUser(self, request: api.DeleteUserRequest, context: Context) -> pb.User:
        return await self._users.delete(request.name, peers.identity(context).name)

    # -- access keys (the ECS-compatible API's credentials) --------------------------

    @grpc_errors
    async def CreateAccessKey(
        self, request: api.CreateAccessKeyRequest, context: Context
    ) -> api.CreatedAccessKey:
        key, secret = await self._ops.access_keys.create(request.user, peers.identity(context).name)
        return api.CreatedAccessKey(key=key, secret_access_key=secret)

    @grpc_errors
    async def ListAccessKeys(
        self, request: api.ListAccessKeysRequest, context: Context
    ) -> api.ListAccessKeysResponse:
        return api.ListAccessKeysResponse(keys=await self._ops.access_keys.all(request.user))

    @grpc_errors
    async def DeleteAccessKey(self, request: api.DeleteAccessKeyRequest, context: Context) -> pb.AccessKey:
        return await self._ops.access_keys.delete(request.id)

    # -- secrets -----------------------------------------------------------------

    @grpc_errors
    async def PutSecret(self, request: api.PutSecretRequest, context: Context) -> api.SecretInfo:
        return await self._ops.secrets.put(request.name, request.value, peers.identity(context).name)

    @grpc_errors
    async def ListSecrets(self, request: api.ListSecretsRequest, context: Context) -> api.ListSecretsResponse:
        return api.ListSecretsResponse(secrets=await self._ops.secrets.all())

    @grpc_errors
    async def DeleteSecret(self, request: api.DeleteSecretRequest, context: Context) -> api.SecretInfo:
        return await self._ops.secrets.delete(request.name, peers.identity(context).name)

    # -- scaling -----------------------------------------------------------------

    @grpc_errors
    async def PutScalingPolicy(self, request: api.PutScalingPolicyRequest, context: Context) -> pb.Service:
        return await self._ops.scaling.put(request.cluster, request.service, request.policy)

    @grpc_errors
    async def DeleteScalingPolicy(
        self, request: api.DeleteScalingPolicyRequest, context: Context
    ) -> pb.Service:
        return await self._ops.scaling.delete(request.cluster, request.service)

    # -- custom metrics ------------------------------------------------------------

    def _custom_metrics(self) -> Metrics:
        if self._metrics is None:
            raise FailedPrecondition("this control plane keeps no custom metrics")
        return self._metrics

    @grpc_errors
    async def PutMetric(self, request: api.PutMetricRequest, context: Context) -> api.PutMetricResponse:
        self._custom_metrics().put(
            request.cluster, request.service, request.name, request.value, request.task_id, time.time()
        )
        return api.PutMetricResponse()

    @grpc_errors
    async def ListMetrics(self, request: api.ListMetricsRequest, context: Context) -> api.ListMetricsResponse:
        now = time.time()
        samples = self._custom_metrics().latest(request.cluster, request.service, now)
        return api.ListMetricsResponse(
            samples=[
                api.MetricSample(
                    name=s.name, task_id=s.task_id, value=s.value, age_seconds=max(0.0, now - s.at)
                )
                for s in samples
            ]
        )

    # -- usage (`berth top`) -------------------------------------------------

    @grpc_errors
    async def GetUsage(self, request: api.GetUsageRequest, context: Context) -> api.GetUsageResponse:
        if self._usage is None:
            return api.GetUsageResponse()
        return self._usage.get(request)

    @grpc_errors
    async def RecommendResources(
        self, request: api.RecommendResourcesRequest, context: Context
    ) -> api.RecommendResourcesResponse:
        if self._rightsizing is None:
            raise FailedPrecondition("this control plane keeps no usage window")
        return self._rightsizing.recommend(request)

    # -- the ECS vocabulary ------------------------------------------------------

    @grpc_errors
    async def GetApiSettings(self, request: api.GetApiSettingsRequest, context: Context) -> api.ApiSettings:
        return api.ApiSettings(region=self._arns.region, account=self._arns.account)
