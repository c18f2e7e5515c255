"""Validation of task arguments against the coroutine's signature, with pydantic.

The client validates before anything is written (fail fast); the worker validates again
before the body runs (never trust Redis). The validator is built once per task.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, get_type_hints

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PydanticUserError,
    TypeAdapter,
    ValidationError,
    create_model,
)
from pydantic_core import PydanticSerializationError

from ._options import did_you_mean
from .errors import ArgumentError, ConfigurationError, SerializationError

__all__ = ("Signature",)

_P = inspect.Parameter


class Signature:
    """A task's parameters, compiled into one pydantic model.

    ``encode`` turns call arguments into JSON-ready ``(args, kwargs)``; ``decode`` turns
    stored ``(args, kwargs)`` back into validated Python values ready to call the task with.
    """

    __slots__ = (
        "_adapters",
        "_annotations",
        "_kinds",
        "_model",
        "_names",
        "_sig",
        "_required",
        "_simple",
        "task_name",
    )

    def __init__(self, fn: Callable[..., Any], task_name: str) -> None:
        self.task_name = task_name
        self._sig = inspect.signature(fn)
        try:
            hints = get_type_hints(fn, include_extras=True)
        except Exception as exc:  # unresolvable forward references
            raise ConfigurationError(
                f"cannot resolve the type hints of task {task_name!r}: {exc}"
            ) from exc
        fields: dict[str, Any] = {}
        self._kinds: dict[str, inspect._ParameterKind] = {}
        self._annotations: dict[str, Any] = {}
        self._adapters: dict[str, TypeAdapter[Any]] = {}
        for index, (name, param) in enumerate(self._sig.parameters.items()):
            annotation = hints.get(name, Any)
            if param.kind is _P.VAR_POSITIONAL:
                annotation = tuple[annotation, ...]  # type: ignore[valid-type]
            elif param.kind is _P.VAR_KEYWORD:
                annotation = dict[str, annotation]  # type: ignore[valid-type]
            default = (
                ... if param.default is _P.empty and param.kind not in _VARIADIC else param.default
            )
            if param.kind in _VARIADIC:
                default = () if param.kind is _P.VAR_POSITIONAL else {}
            # field names are positional so parameters called e.g. `schema` cannot clash
            fields[f"p{index}"] = (annotation, Field(default, alias=name))
            self._annotations[name] = annotation
            self._kinds[name] = param.kind
        self._names = {name: f"p{i}" for i, name in enumerate(self._sig.parameters)}
        plain = (_P.POSITIONAL_OR_KEYWORD, _P.KEYWORD_ONLY)
        self._simple: list[str] | None = (
            [n for n, k in self._kinds.items() if k is _P.POSITIONAL_OR_KEYWORD]
            if all(k in plain for k in self._kinds.values())
            else None
        )
        self._required = frozenset(
            n for n, p in self._sig.parameters.items() if p.default is _P.empty
        )
        config = ConfigDict(extra="forbid", populate_by_name=False, arbitrary_types_allowed=True)
        self._model: type[BaseModel] = create_model(
            f"{task_name}_arguments", __config__=config, **fields
        )

    def bind(self, args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any]) -> None:
        """Raise ArgumentError (a TypeError) unless the arguments fit the signature (no type
        checks)."""
        self._bind(args, kwargs)

    def _bind(
        self, args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any]
    ) -> inspect.BoundArguments:
        try:
            return self._sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise ArgumentError(f"{self.task_name}(): {self._explain(kwargs, exc)}") from None

    def _explain(self, kwargs: dict[str, Any], exc: TypeError) -> str:
        """inspect's message, or for a keyword the task does not take, that keyword named as
        unknown with the closest parameter (a misspelt ``widht=`` is not "missing width")."""
        if _P.VAR_KEYWORD in self._kinds.values():
            return str(exc)
        keywords = [n for n, k in self._kinds.items() if k is not _P.POSITIONAL_ONLY]
        keywords = [n for n in keywords if self._kinds[n] not in _VARIADIC]
        unknown = [name for name in kwargs if name not in self._kinds]
        if not unknown:
            return str(exc)
        takes = ", ".join(keywords) if keywords else "no keyword arguments"
        return (
            f"unknown keyword argument {unknown[0]!r}{did_you_mean(unknown[0], keywords)}; "
            f"it takes {takes}"
        )

    def _arguments(
        self, args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """Arguments by parameter name, as ``inspect.Signature.bind`` would give them."""
        simple = self._simple
        if simple is not None and len(args) <= len(simple):
            # the common signature (no positional-only, no *args/**kwargs): bind by hand;
            # inspect's bind costs more than the validation itself
            data = dict(zip(simple, args, strict=False))
            for name, value in kwargs.items():
                if name in data or name not in self._kinds:
                    break
                data[name] = value
            else:
                if self._required.issubset(data):
                    return data
        # anything unusual (and every error): inspect's bind, for its exact messages
        return dict(self._bind(args, kwargs).arguments)

    def _validate(self, args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any]) -> BaseModel:
        data = self._arguments(args, kwargs)
        try:
            return self._model.model_validate(data)
        except ValidationError as exc:
            raise ArgumentError(_describe(self.task_name, exc)) from None

    def encode(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[list[Any], dict[str, Any]]:
        """Validate call arguments and return them JSON-ready, split as arq stores them."""
        model = self._validate(args, kwargs)
        try:
            data = model.model_dump(mode="json", by_alias=True, exclude_unset=True)
        except PydanticSerializationError as exc:
            raise SerializationError(
                f"{self.task_name}(): cannot encode arguments: {exc}"
            ) from None
        return self._split(data)

    def encode_template(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        is_deferred: Callable[[Any], bool],
        encode_deferred: Callable[[Any], Any],
    ) -> tuple[list[Any], dict[str, Any]]:
        """Like :meth:`encode` for a graph node: arguments holding parent nodes are only
        encoded (validated later, by the worker, once the parents' results exist)."""
        bound = self._bind(args, kwargs)
        data: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            if is_deferred(value):
                data[name] = encode_deferred(value)
                continue
            adapter = self._adapter(name)
            try:
                data[name] = adapter.dump_python(adapter.validate_python(value), mode="json")
            except ValidationError as exc:
                raise ArgumentError(_describe(self.task_name, exc, prefix=(name,))) from None
            except PydanticSerializationError as exc:
                raise SerializationError(
                    f"{self.task_name}(): cannot encode argument {name!r}: {exc}"
                ) from None
        return self._split(data)

    def _adapter(self, name: str) -> TypeAdapter[Any]:
        adapter = self._adapters.get(name)
        if adapter is None:
            annotation = self._annotations[name]
            try:
                adapter = TypeAdapter(annotation, config=ConfigDict(arbitrary_types_allowed=True))
            except PydanticUserError:  # models, dataclasses, TypedDicts carry their own config
                adapter = TypeAdapter(annotation)
            self._adapters[name] = adapter
        return adapter

    def decode(self, args: list[Any], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """Validate stored arguments; return Python values to call the coroutine with."""
        model = self._validate(args, kwargs)
        data = {name: getattr(model, field) for name, field in self._names.items()}
        return self._split(data)

    def _split(self, data: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        positional: list[Any] = []
        keywords: dict[str, Any] = {}
        # with a non-empty *args, every parameter before it must travel positionally too
        star = next((n for n in data if self._kinds[n] is _P.VAR_POSITIONAL), None)
        before_star = star is not None and bool(data[star])
        for name, value in data.items():
            kind = self._kinds[name]
            if kind is _P.VAR_POSITIONAL:
                before_star = False
            if kind is _P.POSITIONAL_ONLY or (before_star and kind is _P.POSITIONAL_OR_KEYWORD):
                positional.append(value)
            elif kind is _P.VAR_POSITIONAL:
                positional.extend(value)
            elif kind is _P.VAR_KEYWORD:
                keywords.update(value)
            else:
                keywords[name] = value
        return positional, keywords


_VARIADIC = (_P.VAR_POSITIONAL, _P.VAR_KEYWORD)


def _describe(task: str, exc: ValidationError, prefix: tuple[str, ...] = ()) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        loc = [*prefix, *(str(p) for p in err["loc"])]
        where = loc[0] if loc else "?"
        path = "".join(f"[{p}]" for p in loc[1:])
        got = repr(err.get("input"))
        if len(got) > 60:
            got = got[:57] + "..."
        msg = err["msg"]
        parts.append(f"argument {where!r}{path}: {msg[:1].lower()}{msg[1:]} (got {got})")
    more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return f"{task}(): " + "; ".join(parts) + more
