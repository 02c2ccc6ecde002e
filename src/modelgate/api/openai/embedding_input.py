"""The ``input`` of ``POST /v1/embeddings`` in the four forms OpenAI takes: a string, a list
of strings, a list of token ids (one input) or a list of lists of token ids (what
langchain-openai's ``OpenAIEmbeddings`` sends by default). Refusals read like OpenAI's
(``'$.input' is invalid...``), with what was wrong and where.

Token ids are checked here for type only; their range is the model's vocabulary, checked
in the core once the model is known (:mod:`modelgate.core.pipeline.embedding_context`).
"""

from __future__ import annotations

from typing import Any

from modelgate.core.pipeline.embeddings import MAX_INPUTS
from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["embedding_input", "truncate_option"]

_FORMS = "a non-empty string, a list of them, a list of token ids or a list of such lists"


def _invalid(reason: str) -> ModelgateError:
    return ModelgateError(
        ErrorKind.INVALID_ARGUMENT,
        f"'$.input' is invalid: {reason}. It must be {_FORMS}.",
        details={"openai_param": "input"},
    )


def _is_id(value: object) -> bool:
    return type(value) is int  # bool is not a token id


def embedding_input(value: Any) -> list[str] | list[list[int]]:
    """The inputs as a list of texts or a list of token-id lists, or INVALID_ARGUMENT."""
    if isinstance(value, str):
        if not value:
            raise _invalid("it is an empty string")
        return [value]
    if not isinstance(value, list):
        raise _invalid(f"it is {_json_type(value)}")
    if not value:
        raise _invalid("it is an empty list")
    if len(value) > MAX_INPUTS:  # before any input is looked at
        raise _invalid(f"it has {len(value)} inputs; at most {MAX_INPUTS} are allowed")
    first = value[0]
    if isinstance(first, str):
        for index, text in enumerate(value):
            if not isinstance(text, str):
                raise _invalid(f"input {index} is {_json_type(text)} among strings")
            if not text:
                raise _invalid(f"input {index} is an empty string")
        return value
    if _is_id(first):
        _check_ids(value, 0)
        return [value]
    if isinstance(first, list):
        for index, ids in enumerate(value):
            if not isinstance(ids, list):
                raise _invalid(f"input {index} is {_json_type(ids)} among lists of token ids")
            _check_ids(ids, index)
        return value
    raise _invalid(f"input 0 is {_json_type(first)}")


def _check_ids(ids: list[Any], index: int) -> None:
    if not ids:
        raise _invalid(f"input {index} is an empty list of token ids")
    # in C, about 10 ns an id: no more than parsing it cost (the body limit bounds both)
    if set(map(type, ids)) != {int}:
        position = next(p for p, v in enumerate(ids) if not _is_id(v))
        raise _invalid(
            f"position {position} of input {index} is {_json_type(ids[position])}, not a token id"
        )


def truncate_option(doc: dict[str, Any]) -> bool | None:
    """modelgate's extra body field ``truncate`` (the openai SDK sends it with
    ``extra_body={"truncate": True}``): cut inputs over the model's context rather than
    refuse them. Absent: the manifest decides."""
    value = doc.get("truncate")
    if value is not None and not isinstance(value, bool):
        raise ModelgateError(
            ErrorKind.INVALID_ARGUMENT,
            "'truncate' must be true or false",
            details={"openai_param": "truncate"},
        )
    return value


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"
