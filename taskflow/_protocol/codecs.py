"""The wire format: orjson on arq's job and result layout. No pickle anywhere.

A job payload is the JSON object ``{"t": try, "f": task, "a": [args], "k": {kwargs},
"et": enqueue_ms}``, byte for byte what arq writes with a JSON serializer, so a plain arq
client configured with :func:`arq_serializer` reaches a taskflow worker and the reverse.
Results add arq's ``s``/``r``/``st``/``ft``/``q``/``id`` and taskflow's ``status`` and ``w``.
Exceptions travel as ``{"type", "message", "traceback"}`` data.
"""

from __future__ import annotations

import base64
import traceback
from dataclasses import dataclass
from typing import Any, Final

import orjson
from pydantic import BaseModel

from ..errors import CorruptPayload, FailureKind, PayloadTooLarge, SerializationError
from .keys import queue_name_of

__all__ = (
    "RAW_KEEP_BYTES",
    "CorruptPayload",
    "JobPayload",
    "JobResult",
    "arq_deserializer",
    "arq_serializer",
    "check_size",
    "corrupt_error",
    "decode_job",
    "decode_result",
    "dumps",
    "encode_exception",
    "encode_job",
    "encode_node_job",
    "encode_node_spec",
    "encode_node_static",
    "encode_result",
    "loads",
)

RAW_KEEP_BYTES: Final = 1024
"""How much of an undecodable payload is kept (base64) in its failure record."""


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, BaseException):
        return encode_exception(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    raise TypeError(f"type {type(value).__name__!r} is not JSON serializable")


def dumps(value: Any) -> bytes:
    """Encode ``value`` as JSON bytes.

    Besides JSON types, accepts tuples, sets, datetimes, UUIDs, enums, dataclasses and
    pydantic models. Raises :class:`SerializationError` naming the offending type.
    """
    try:
        return orjson.dumps(value, default=_default)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise SerializationError(f"cannot encode value as JSON: {exc}") from None


def loads(data: bytes | str) -> Any:
    """Decode JSON bytes; raises :class:`SerializationError` for anything that is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SerializationError(f"not JSON: {exc}") from None


def arq_serializer(value: dict[str, Any]) -> bytes:
    """``job_serializer`` for plain arq clients and workers that talk to taskflow."""
    return dumps(value)


def arq_deserializer(data: bytes) -> dict[str, Any]:
    """``job_deserializer`` for plain arq clients and workers that talk to taskflow."""
    value = loads(data)
    if not isinstance(value, dict):
        raise SerializationError(f"expected a JSON object, got {type(value).__name__}")
    return value


def check_size(what: str, data: bytes, limit: int) -> bytes:
    """Return ``data`` unchanged, or raise :class:`PayloadTooLarge` if over ``limit``."""
    if len(data) > limit:
        raise PayloadTooLarge(what, len(data), limit)
    return data


def encode_exception(exc: BaseException) -> dict[str, str]:
    """An exception as data: qualified type name, message and formatted traceback."""
    cls = type(exc)
    module = cls.__module__
    name = (
        cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"
    )
    return {
        "type": name,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }


@dataclass(frozen=True, slots=True)
class JobPayload:
    """A decoded job: what arq calls ``JobDef``."""

    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    job_try: int | None
    enqueue_ms: int
    graph: tuple[str, int] | None = None  #: (run id, node index) of a graph node's job
    #: (schedule name, tick ms, ticks missed before it) of a schedule's job
    tick: tuple[str, int, int] | None = None


def encode_job(payload: JobPayload, limit: int) -> bytes:
    fields: dict[str, Any] = {
        "t": payload.job_try,
        "f": payload.task,
        "a": payload.args,
        "k": payload.kwargs,
        "et": payload.enqueue_ms,
    }
    if payload.tick is not None:
        fields["s"] = list(payload.tick)  # arq's workers ignore keys they do not know
    data = dumps(fields)
    return check_size(f"job payload of {payload.task!r}", data, limit)


def decode_job(raw: bytes, limit: int) -> JobPayload:
    """Decode a job; raises :class:`CorruptPayload` for anything but a well-formed JSON job."""
    if len(raw) > limit:
        raise CorruptPayload(f"job payload is {len(raw)} bytes, over the {limit}-byte cap", raw)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise CorruptPayload(
            "job payload is not JSON (pickle or other binary data?)", raw
        ) from None
    if not isinstance(data, dict):
        raise CorruptPayload(f"job payload is a JSON {type(data).__name__}, not an object", raw)
    task, args, kwargs = data.get("f"), data.get("a", []), data.get("k", {})
    job_try, enqueue_ms = data.get("t"), data.get("et", 0)
    if not isinstance(task, str):
        raise CorruptPayload("job payload has no task name ('f')", raw)
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise CorruptPayload("job payload's 'a' must be a list and 'k' an object", raw)
    if not isinstance(enqueue_ms, int) or not (job_try is None or isinstance(job_try, int)):
        raise CorruptPayload("job payload's 'et' and 't' must be integers", raw)
    graph = _pair(data.get("g"), raw)
    tick = _tick(data.get("s"), raw)
    return JobPayload(task, args, kwargs, job_try, enqueue_ms, graph, tick)


def _pair(graph: Any, raw: bytes) -> tuple[str, int] | None:
    if graph is None:
        return None
    if not (
        isinstance(graph, list)
        and len(graph) == 2
        and isinstance(graph[0], str)
        and isinstance(graph[1], int)
    ):
        raise CorruptPayload("job payload's 'g' must be [run id, node index]", raw)
    return graph[0], graph[1]


def _tick(tick: Any, raw: bytes) -> tuple[str, int, int] | None:
    if tick is None:
        return None
    if not (
        isinstance(tick, list)
        and len(tick) == 3
        and isinstance(tick[0], str)
        and all(isinstance(v, int) for v in tick[1:])
    ):
        raise CorruptPayload("job payload's 's' must be [schedule, tick ms, missed]", raw)
    return tick[0], tick[1], tick[2]


def corrupt_error(exc: CorruptPayload) -> dict[str, Any]:
    """The failure record of an undecodable payload, raw bytes kept truncated."""
    return {
        "type": FailureKind.CORRUPT_PAYLOAD.value,
        "message": exc.reason,
        "traceback": "",
        "raw_size": len(exc.raw),
        "raw_b64": base64.b64encode(exc.raw[:RAW_KEEP_BYTES]).decode("ascii"),
    }


@dataclass(frozen=True, slots=True)
class JobResult:
    """A finished job as stored in ``arq:result:<id>``."""

    job_id: str
    task: str
    status: str  # succeeded | failed | cancelled
    value: Any  # the return value, or the error dict when not succeeded
    attempt: int
    enqueue_ms: int
    start_ms: int
    finish_ms: int
    queue: str
    worker: str | None

    @property
    def success(self) -> bool:
        return self.status == "succeeded"


def encode_result(r: JobResult, args: list[Any], kwargs: dict[str, Any]) -> bytes:
    """Encode a result in arq's layout; raises SerializationError if the value cannot be."""
    return dumps(
        {
            "t": r.attempt,
            "f": r.task,
            "a": args,
            "k": kwargs,
            "et": r.enqueue_ms,
            "s": r.success,
            "r": r.value,
            "st": r.start_ms,
            "ft": r.finish_ms,
            "q": r.queue,
            "id": r.job_id,
            "status": r.status,
            "w": r.worker,
        }
    )


def decode_result(raw: bytes, job_id: str) -> JobResult:
    """Decode a result written by taskflow or by a plain arq worker using :func:`arq_serializer`."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise CorruptPayload(f"result of job {job_id!r} is not JSON", raw) from None
    if not isinstance(data, dict) or "s" not in data:
        raise CorruptPayload(f"result of job {job_id!r} is not an arq result object", raw)
    success = bool(data["s"])
    value = data.get("r")
    status = data.get("status") or ("succeeded" if success else "failed")
    if not success and not isinstance(value, dict):
        value = {"type": "Exception", "message": str(value), "traceback": ""}
    return JobResult(
        job_id=str(data.get("id") or job_id),
        task=str(data.get("f", "")),
        status=str(status),
        value=value,
        attempt=int(data.get("t") or 1),
        enqueue_ms=int(data.get("et") or 0),
        start_ms=int(data.get("st") or 0),
        finish_ms=int(data.get("ft") or 0),
        queue=queue_name_of(str(data.get("q", ""))),  # plain arq workers store the key
        worker=data.get("w"),
    )


# -- graph node records: written at submission, read by the graph scripts and the worker ----


def encode_node_job(task: str, run_id: str, index: int, submitted_ms: int) -> bytes:
    """The arq job payload of a graph node, stored whole at submission and copied verbatim
    into ``arq:job:<run>.<index>`` by the script that releases the node. Its arguments come
    from the run when the node starts, so ``a``/``k`` are empty; ``g`` names the node and
    ``et`` is the run's submission time.
    """
    return dumps({"t": None, "f": task, "a": [], "k": {}, "et": submitted_ms, "g": [run_id, index]})


def encode_node_static(
    trigger: str, queue_key: str, children: list[int], data_parents: list[int], job: bytes
) -> bytes:
    """What the graph scripts need of a node, as one value (``lua/node_lib.lua`` parse_static):
    trigger, queue key, child indexes, data-parent indexes, job payload; newline-separated.
    """
    for field, text in (("trigger", trigger), ("queue key", queue_key)):
        if "\n" in text:
            raise SerializationError(f"node {field} {text!r} contains a newline")
    return b"\n".join(
        (
            trigger.encode(),
            queue_key.encode(),
            ",".join(map(str, children)).encode(),
            ",".join(map(str, data_parents)).encode(),
            job,
        )
    )


def encode_node_spec(
    *,
    name: str,
    task: str,
    queue: str,
    trigger: str,
    parents: list[int],
    data_parents: list[int],
    args: Any,
    kwargs: Any,
) -> bytes:
    """A node's spec (the run's ``nodes`` hash): what status reads and the worker runs."""
    return dumps(
        {
            "name": name,
            "task": task,
            "queue": queue,
            "trigger": trigger,
            "parents": parents,
            "data": data_parents,
            "a": args,
            "k": kwargs,
        }
    )
