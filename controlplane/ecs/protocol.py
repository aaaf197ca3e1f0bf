"""The wire protocol of ECS's API (AWS JSON 1.1): targets, request checks, error bodies.

A request is `POST /` with `X-Amz-Target: AmazonEC2ContainerServiceV20141113.<Operation>`
and a JSON object body; an answer is a JSON object, and an error is
`{"__type": "<ErrorType>", "message": "<one line>"}` with a 4xx status (5xx only for
Berth's own faults), which botocore turns into the client's exception class.

The input of every operation is checked against ECS's own service model as botocore
ships it (the same model the aws CLI and boto3 build requests from): unknown members,
wrong types and missing required members are refused before any handler sees the
request. Berth's handlers then bound what the model leaves open (lengths, ranges).
"""

from __future__ import annotations

import functools
import json
from typing import Any

import botocore.session
from botocore.model import OperationModel, ServiceModel
from botocore.validate import ParamValidator

TARGET_PREFIX = "AmazonEC2ContainerServiceV20141113."
CONTENT_TYPE = "application/x-amz-json-1.1"
# Requests larger than this are refused before they are read: a task definition may be
# at most 64 KiB in ECS; the rest of a request is small.
MAX_BODY = 1024 * 1024
# Nesting deeper than any ECS request has is refused (JSON bombs of brackets).
MAX_DEPTH = 32
MAX_MESSAGE = 1000


class EcsError(Exception):
    """An answer in ECS's error shape: its type (the client's exception class) and one line."""

    def __init__(self, error_type: str, message: str, status: int = 400) -> None:
        line = " ".join(message.split())
        super().__init__(line[:MAX_MESSAGE])
        self.error_type = error_type
        self.status = status

    def body(self) -> dict[str, str]:
        return {"__type": self.error_type, "message": str(self)}


def invalid(message: str) -> EcsError:
    return EcsError("InvalidParameterException", message)


@functools.cache
def service_model() -> ServiceModel:
    """ECS's model as this botocore knows it (the version in requirements.lock)."""
    return botocore.session.get_session().get_service_model("ecs")


def operation_name(target: str | None) -> str:
    """The operation an X-Amz-Target names; UnknownOperationException when it names none of ECS's."""
    if not target:
        raise EcsError("MissingAction", "the X-Amz-Target header is missing: it names the ECS operation")
    if not target.startswith(TARGET_PREFIX) or len(target) > 200:
        raise EcsError("UnknownOperationException", "X-Amz-Target does not name an ECS operation")
    name = target[len(TARGET_PREFIX) :]
    if name not in service_model().operation_names:
        raise EcsError("UnknownOperationException", "X-Amz-Target does not name an ECS operation")
    return name


def _depth(value: Any, limit: int) -> bool:
    """True when `value` nests no deeper than `limit` (iterative: a hostile body cannot recurse us)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return False
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return True


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request's JSON object; SerializationException for anything else."""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise EcsError("SerializationException", f"the body is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise EcsError("SerializationException", "the body must be a JSON object")
    if not _depth(data, MAX_DEPTH):
        raise EcsError("SerializationException", f"the body nests deeper than {MAX_DEPTH} levels")
    return data


def _no_booleans_as_numbers(params: Any, shape: Any, where: str) -> None:
    """JSON `true` is a Python int too: refuse it where the model wants a number."""
    if shape.type_name in ("integer", "long", "double", "float") and isinstance(params, bool):
        raise EcsError("SerializationException", f"{where} must be a number, not {json.dumps(params)}")
    if shape.type_name == "structure" and isinstance(params, dict):
        for name, member in shape.members.items():
            if name in params:
                _no_booleans_as_numbers(params[name], member, f"{where}.{name}")
    elif shape.type_name == "list" and isinstance(params, list):
        for index, item in enumerate(params):
            _no_booleans_as_numbers(item, shape.member, f"{where}[{index}]")
    elif shape.type_name == "map" and isinstance(params, dict):
        for key, item in params.items():
            _no_booleans_as_numbers(item, shape.value, f"{where}.{key}")


def check_input(operation: str, params: dict[str, Any]) -> OperationModel:
    """Refuses input the ECS model does not allow, with botocore's own first complaint."""
    model = service_model().operation_model(operation)
    shape = model.input_shape
    if shape is None:
        if params:
            raise invalid(f"{operation} takes no parameters")
        return model
    report = ParamValidator().validate(params, shape)
    if report.has_errors():
        first = report.generate_report().splitlines()[0]
        error_type = (
            "SerializationException" if first.startswith("Invalid type") else "InvalidParameterException"
        )
        raise EcsError(error_type, first)
    _no_booleans_as_numbers(params, shape, "input")
    return model
