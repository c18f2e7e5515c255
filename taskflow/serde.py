"""taskflow's wire format for code outside taskflow: plain arq clients and workers.

Jobs are JSON (orjson) in arq's layout, never pickle. Give a plain arq client or worker
these as its serializers to talk to taskflow workers and clients::

    from arq import create_pool
    from taskflow.serde import arq_deserializer, arq_serializer

    redis = await create_pool(
        settings, job_serializer=arq_serializer, job_deserializer=arq_deserializer
    )
"""

from __future__ import annotations

from ._protocol.codecs import JobResult, arq_deserializer, arq_serializer, dumps, loads

__all__ = ("JobResult", "arq_deserializer", "arq_serializer", "dumps", "loads")
