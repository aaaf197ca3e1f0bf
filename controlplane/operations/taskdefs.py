"""Task definitions: register (family + revision), look up, list, deregister."""

from __future__ import annotations

import logging

from berth import tags as tag_rules
from berth.clock import now
from berth.errors import FailedPrecondition, InvalidArgument, NotFound
from berth.names import check_family, parse_task_definition_ref, shown
from berth.taskdef import validate_task_definition
from berth.v1 import resources_pb2 as pb
from controlplane.limits import Quotas
from controlplane.store import RETRY, Retry, StoreAPI, keys, optimistic
from controlplane.validation.host_paths import HostPathPolicy
from controlplane.validation.images import check_task_definition_images
from controlplane.validation.privileges import PrivilegePolicy

log = logging.getLogger(__name__)


class TaskDefinitions:
    def __init__(
        self,
        store: StoreAPI,
        quotas: Quotas | None = None,
        allowed_registries: tuple[str, ...] = (),
        privileges: PrivilegePolicy | None = None,
        host_paths: HostPathPolicy | None = None,
    ) -> None:
        self._store = store
        self._quotas = quotas or Quotas()
        self._allowed_registries = allowed_registries  # empty: any registry
        self._privileges = privileges or PrivilegePolicy()  # default: nothing privileged
        self._host_paths = host_paths or HostPathPolicy()  # default: no host path

    async def register(self, td: pb.TaskDefinition) -> pb.TaskDefinition:
        """Validate and store as the family's next revision."""
        td.status = pb.ACTIVE
        validate_task_definition(td)
        tags = tag_rules.check_tags(td.tags)
        del td.tags[:]
        td.tags.extend(tags)
        check_task_definition_images(td, self._allowed_registries)
        self._privileges.check(td)
        self._host_paths.check(td)

        async def attempt() -> pb.TaskDefinition | Retry:
            existing, _ = await self._store.scan(keys.taskdef_family(td.family), pb.TaskDefinition)
            self._quotas.check(
                f"the number of revisions of family {td.family}",
                len(existing),
                self._quotas.revisions_per_family,
                "--max-revisions-per-family",
            )
            td.revision = max((e.value.revision for e in existing), default=0) + 1
            td.registered_at.CopyFrom(now())
            if await self._store.put_if_unchanged(keys.taskdef(td.family, td.revision), td, 0) is None:
                return RETRY  # another registration took this revision number
            return td

        registered = await optimistic(attempt, what=f"task definition family {td.family!r}")
        log.info("event=taskdef_registered taskdef=%s:%s", registered.family, registered.revision)
        return registered

    async def runnable(self, ref: str) -> pb.TaskDefinition:
        """resolve(ref), re-judged by today's host-path and volume-driver policy: an older
        revision registered under a wider flag does not run once the operator narrowed it."""
        td = await self.resolve(ref)
        self._host_paths.check(td)
        return td

    async def all(self, family: str = "") -> list[pb.TaskDefinition]:
        if family:
            check_family(family)
        prefix = keys.taskdef_family(family) if family else keys.TASKDEFS
        found, _ = await self._store.scan(prefix, pb.TaskDefinition)
        return [f.value for f in found]

    async def families(self, status: str = "ACTIVE", prefix: str = "") -> list[str]:
        """Family names starting with `prefix`, sorted, as ECS's ListTaskDefinitionFamilies
        filters them: ACTIVE, families with an ACTIVE revision; INACTIVE, families whose
        revisions are all INACTIVE; ALL, both."""
        if status not in ("ACTIVE", "INACTIVE", "ALL"):
            raise InvalidArgument(f"family status {shown(status)} is invalid: use ACTIVE, INACTIVE or ALL")
        if prefix:
            check_family(prefix)  # a prefix of a family is written like one
        found, _ = await self._store.scan(keys.taskdef_families(prefix), pb.TaskDefinition)
        active: dict[str, bool] = {}
        for revision in found:
            family = revision.value.family
            active[family] = active.get(family, False) or revision.value.status == pb.ACTIVE
        wanted = {"ACTIVE": (True,), "INACTIVE": (False,), "ALL": (True, False)}[status]
        return sorted(family for family, is_active in active.items() if is_active in wanted)

    async def resolve(self, ref: str, require_active: bool = True) -> pb.TaskDefinition:
        """FAMILY:REVISION exactly, or FAMILY's newest ACTIVE revision."""
        if not ref:
            raise InvalidArgument("a task definition is required: give FAMILY or FAMILY:REVISION")
        family, revision = parse_task_definition_ref(ref)
        if revision is not None:
            found = await self._store.get(keys.taskdef(family, revision), pb.TaskDefinition)
            if found is None:
                raise NotFound(f"task definition {family}:{revision} does not exist")
            if require_active and found.value.status != pb.ACTIVE:
                raise FailedPrecondition(f"task definition {family}:{revision} is INACTIVE (deregistered)")
            return found.value
        revisions = await self.all(family)
        active = [td for td in revisions if td.status == pb.ACTIVE]
        if not active:
            raise NotFound(f"task definition family {family!r} has no active revision")
        return max(active, key=lambda td: td.revision)

    async def deregister(self, ref: str) -> pb.TaskDefinition:
        family, revision = parse_task_definition_ref(ref)
        if revision is None:
            raise InvalidArgument("deregister needs an exact revision: FAMILY:REVISION")

        def deactivate(td: pb.TaskDefinition) -> pb.TaskDefinition | None:
            if td.status == pb.INACTIVE:
                return None
            td.status = pb.INACTIVE
            return td

        updated = await self._store.update(keys.taskdef(family, revision), pb.TaskDefinition, deactivate)
        if updated is None:
            raise NotFound(f"task definition {family}:{revision} does not exist")
        # Like ECS: running services keep using an INACTIVE revision; only new uses are refused.
        log.info("event=taskdef_deregistered taskdef=%s:%s", family, revision)
        return updated
