"""The wire format: orjson on arq's job/result layout, size caps, corrupt payloads."""

from __future__ import annotations

import base64
import pickle
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

import taskflow
from taskflow._protocol import codecs as serde
from taskflow._protocol.codecs import CorruptPayload, JobPayload, JobResult

LIMIT = 512 * 1024

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)
task_names = st.text(min_size=1, max_size=40)
millis = st.integers(min_value=0, max_value=4_102_444_800_000)  # up to 2100: arq makes datetimes


def _same(a: Any, b: Any) -> bool:
    """Equality that also tells 1 from 1.0 and True from 1, recursively."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


# -- dumps / loads ------------------------------------------------------------------------


@given(json_values)
def test_dumps_loads_round_trip(value: Any) -> None:
    data = serde.dumps(value)
    assert isinstance(data, bytes)
    assert _same(serde.loads(data), value)
    assert _same(serde.loads(data.decode("utf-8")), value)


def test_dumps_extra_types() -> None:
    class Point(BaseModel):
        x: int
        when: datetime

    when = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    out = serde.loads(
        serde.dumps(
            {"t": (1, 2), "s": {3, 1, 2}, "m": Point(x=1, when=when), "d": when, "u": ident}
        )
    )
    assert out == {
        "t": [1, 2],
        "s": [1, 2, 3],
        "m": {"x": 1, "when": "2024-05-06T07:08:09Z"},
        "d": "2024-05-06T07:08:09+00:00",
        "u": "12345678-1234-5678-1234-567812345678",
    }


@pytest.mark.parametrize(
    ("value", "mentions"),
    [
        (object(), "object"),
        ({1: "int key"}, "key"),
        (2**64, "64-bit"),
        ({"nested": [b"bytes"]}, "bytes"),
    ],
)
def test_dumps_rejects_unencodable(value: Any, mentions: str) -> None:
    with pytest.raises(taskflow.SerializationError, match=mentions):
        serde.dumps(value)


@pytest.mark.parametrize("data", [b"", b"{", b"\x80\x04K\x01.", "not json", b"[1,]"])
def test_loads_rejects_non_json(data: bytes | str) -> None:
    with pytest.raises(taskflow.SerializationError, match="not JSON"):
        serde.loads(data)


# -- jobs ---------------------------------------------------------------------------------


@given(
    task=task_names,
    args=st.lists(json_values, max_size=4),
    kwargs=st.dictionaries(st.text(), json_values, max_size=4),
    job_try=st.none() | st.integers(min_value=1, max_value=1000),
    enqueue_ms=millis,
)
def test_job_round_trip(
    task: str, args: list[Any], kwargs: dict[str, Any], job_try: int | None, enqueue_ms: int
) -> None:
    payload = JobPayload(task, args, kwargs, job_try, enqueue_ms)
    raw = serde.encode_job(payload, LIMIT)
    # byte for byte arq's JobDef layout with a JSON serializer
    assert list(orjson.loads(raw)) == ["t", "f", "a", "k", "et"]
    back = serde.decode_job(raw, LIMIT)
    assert back.task == task and back.job_try == job_try and back.enqueue_ms == enqueue_ms
    assert _same(back.args, args) and _same(back.kwargs, kwargs)


def test_job_written_by_arq_decodes() -> None:
    from arq.jobs import serialize_job

    raw = serialize_job(
        "add", (1, 2), {"c": 3}, None, 1700000000000, serializer=serde.arq_serializer
    )
    assert serde.decode_job(raw, LIMIT) == JobPayload("add", [1, 2], {"c": 3}, None, 1700000000000)


def test_job_defaults_for_missing_optional_fields() -> None:
    assert serde.decode_job(b'{"f": "t"}', LIMIT) == JobPayload("t", [], {}, None, 0)


def test_encode_job_over_cap_names_sizes() -> None:
    payload = JobPayload("big", ["x" * 2000], {}, None, 0)
    size = len(serde.encode_job(payload, 10_000))
    with pytest.raises(taskflow.PayloadTooLarge) as info:
        serde.encode_job(payload, 1024)
    assert info.value.size == size and info.value.limit == 1024
    assert f"{size} bytes" in str(info.value) and "1024-byte cap" in str(info.value)
    assert "'big'" in str(info.value)
    assert isinstance(info.value, taskflow.PayloadError)


def test_check_size_boundary() -> None:
    assert serde.check_size("x", b"a" * 1024, 1024) == b"a" * 1024
    with pytest.raises(taskflow.PayloadTooLarge, match="1025 bytes, over the 1024-byte cap"):
        serde.check_size("x", b"a" * 1025, 1024)


def test_decode_job_over_cap_is_corrupt() -> None:
    raw = serde.encode_job(JobPayload("t", ["y" * 3000], {}, None, 0), LIMIT)
    with pytest.raises(CorruptPayload, match=f"{len(raw)} bytes, over the 1024-byte cap") as info:
        serde.decode_job(raw, 1024)
    assert info.value.raw == raw


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("pickle executed",))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (pickle.dumps({"t": None, "f": "t", "a": [], "k": {}, "et": 0}), "not JSON"),
        (pickle.dumps(_Evil()), "not JSON"),
        (b"\x00\xff garbage", "not JSON"),
        (b"[1, 2]", "JSON list, not an object"),
        (b'"a string"', "JSON str, not an object"),
        (b"null", "JSON NoneType, not an object"),
        (b"{}", "no task name"),
        (b'{"f": 3}', "no task name"),
        (b'{"f": "t", "a": {}}', "'a' must be a list"),
        (b'{"f": "t", "k": []}', "'k' an object"),
        (b'{"f": "t", "et": "yesterday"}', "'et' and 't' must be integers"),
        (b'{"f": "t", "t": "1"}', "'et' and 't' must be integers"),
    ],
)
def test_decode_job_corrupt(raw: bytes, reason: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CorruptPayload, match=reason) as info:
        serde.decode_job(raw, LIMIT)
    assert info.value.raw == raw and info.value.reason in str(info.value)
    assert isinstance(info.value, taskflow.SerializationError)
    assert "pickle executed" not in capsys.readouterr().out


@given(st.binary(max_size=3000))
def test_corrupt_error_keeps_truncated_raw(raw: bytes) -> None:
    record = serde.corrupt_error(CorruptPayload("bad", raw))
    assert record["type"] == "taskflow.CorruptPayload"
    assert record["message"] == "bad" and record["traceback"] == ""
    assert record["raw_size"] == len(raw)
    assert base64.b64decode(record["raw_b64"]) == raw[: serde.RAW_KEEP_BYTES]
    serde.dumps(record)  # the record itself travels


# -- results ------------------------------------------------------------------------------


@given(
    value=json_values,
    status=st.sampled_from(["succeeded", "failed", "cancelled"]),
    attempt=st.integers(min_value=1, max_value=100),
    times=st.tuples(millis, millis, millis),
    queue=st.text(max_size=20),
    worker=st.none() | st.text(max_size=20),
    args=st.lists(json_values, max_size=3),
)
def test_result_round_trip(
    value: Any,
    status: str,
    attempt: int,
    times: tuple[int, int, int],
    queue: str,
    worker: str | None,
    args: list[Any],
) -> None:
    if status != "succeeded":
        value = {"type": "ValueError", "message": str(value), "traceback": ""}
    record = JobResult("job-1", "task", status, value, attempt, *times, queue, worker)
    raw = serde.encode_result(record, args, {"k": 1})
    back = serde.decode_result(raw, "job-1")
    assert back == record
    assert _same(back.value, value)
    assert back.success is (status == "succeeded")
    # arq's own reader accepts it too
    from arq.jobs import deserialize_result

    arq_view = deserialize_result(raw, deserializer=serde.arq_deserializer)
    assert arq_view.success is back.success and arq_view.job_id == "job-1"
    assert arq_view.job_try == attempt and _same(arq_view.args, args)


def test_encode_result_unencodable_value() -> None:
    record = JobResult("j", "t", "succeeded", object(), 1, 0, 0, 0, "q", None)
    with pytest.raises(taskflow.SerializationError):
        serde.encode_result(record, [], {})


def test_decode_result_written_by_plain_arq_worker() -> None:
    from arq.jobs import serialize_result

    ok = serialize_result(
        "f",
        (1,),
        {},
        2,
        10,
        True,
        {"v": 1},
        11,
        12,
        "ref",
        "arq:queue",
        "jid",
        serializer=serde.arq_serializer,
    )
    assert ok is not None
    record = serde.decode_result(ok, "jid")
    assert (record.status, record.value, record.attempt, record.queue, record.worker) == (
        "succeeded",
        {"v": 1},
        2,
        "default",  # arq stores the queue's key; taskflow reports the queue's name
        None,
    )
    # arq stores an unserializable result as a string with s=False
    bad = serialize_result(
        "f",
        (),
        {},
        1,
        0,
        False,
        "unable to serialize result",
        0,
        0,
        "ref",
        "q",
        "jid",
        serializer=serde.arq_serializer,
    )
    assert bad is not None
    failed = serde.decode_result(bad, "jid")
    assert failed.status == "failed" and not failed.success
    assert failed.value == {
        "type": "Exception",
        "message": "unable to serialize result",
        "traceback": "",
    }


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (pickle.dumps({"s": True, "r": 1}), "is not JSON"),
        (b"[true]", "not an arq result object"),
        (b'{"r": 1}', "not an arq result object"),
    ],
)
def test_decode_result_corrupt(raw: bytes, reason: str) -> None:
    with pytest.raises(CorruptPayload, match=reason) as info:
        serde.decode_result(raw, "jid")
    assert info.value.raw == raw and "'jid'" in str(info.value)


# -- exceptions as data -------------------------------------------------------------------


class LocalError(Exception):
    pass


def _raise(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_encode_exception_raised() -> None:
    record = serde.encode_exception(_raise(ValueError("bad value 7")))
    assert set(record) == {"type", "message", "traceback"}
    assert all(isinstance(v, str) for v in record.values())
    assert record["type"] == "ValueError" and record["message"] == "bad value 7"
    assert "Traceback (most recent call last)" in record["traceback"]
    assert "in _raise" in record["traceback"]
    assert record["traceback"].rstrip().endswith("ValueError: bad value 7")


def test_encode_exception_qualifies_non_builtin_types() -> None:
    assert serde.encode_exception(LocalError("x"))["type"] == f"{__name__}.LocalError"
    not_found = serde.encode_exception(taskflow.JobNotFound("j"))
    assert not_found["type"] == "taskflow.errors.JobNotFound"
    never_raised = serde.encode_exception(KeyError("k"))
    assert never_raised == {"type": "KeyError", "message": "'k'", "traceback": "KeyError: 'k'\n"}


def test_encode_exception_chained() -> None:
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise RuntimeError("outer") from inner
    except RuntimeError as exc:
        record = serde.encode_exception(exc)
    assert "KeyError: 'inner'" in record["traceback"]
    assert "RuntimeError: outer" in record["traceback"]


# -- arq serializer hooks -----------------------------------------------------------------


@given(st.dictionaries(st.text(), json_values, max_size=6))
def test_arq_serializer_round_trip(value: dict[str, Any]) -> None:
    assert _same(serde.arq_deserializer(serde.arq_serializer(value)), value)


@pytest.mark.parametrize("raw", [b"[1]", b"3", b"null", b'"s"'])
def test_arq_deserializer_wants_an_object(raw: bytes) -> None:
    with pytest.raises(taskflow.SerializationError, match="expected a JSON object"):
        serde.arq_deserializer(raw)


def test_arq_deserializer_refuses_pickle() -> None:
    with pytest.raises(taskflow.SerializationError, match="not JSON"):
        serde.arq_deserializer(pickle.dumps({"f": "x"}))


def test_arq_serializer_refuses_unencodable() -> None:
    with pytest.raises(taskflow.SerializationError):
        serde.arq_serializer({"a": object()})
