"""How much work one request asks of a model, against the manifest's ``limits``.

Every check runs before the model does, cheapest first, so that a hostile request costs no
more than a typical one: rows (one comparison per input), then texts and the UTF-8 bytes of
each (a ``len`` per text), then, for embedding models, tokens. Tokens are counted only for
the texts that could be over a token limit: a token covers at least one byte of text, so a
text of ``b`` bytes has at most ``b`` tokens plus the tokenizer's special ones, and short
texts (nearly all) are never tokenized twice. (A normalizer that expands text, such as
NFKC's ligatures, could break that bound: a text a little over the per-text limit would then
be cut by the runtime's tokenizer rather than refused, so the work stays bounded either way.
The MiniLM tokenizer's bound is checked by a property test.)

A request over a limit is refused with PAYLOAD_TOO_LARGE, whose ``details`` name the limit
(``size_limit``: e.g. ``"max_text_bytes"``) and its value (``allowed``), so that every
adapter can say which limit refused (REST 413, gRPC RESOURCE_EXHAUSTED, OpenAI 400).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import numpy as np

from modelgate.core.serving.manifest import ModelManifest
from modelgate.core.serving.ports import TokenCounter
from modelgate.core.serving.tensors import Tensor
from modelgate.errors import ErrorKind, ModelgateError

__all__ = [
    "REQUEST_LIMITS",
    "TOKEN_LIMITS",
    "check_rows",
    "check_size",
    "check_texts",
    "check_tokens",
    "over_limit",
    "token_counter",
]

#: the names of the per-request limits, as errors' ``details["size_limit"]`` gives them
REQUEST_LIMITS = frozenset(
    {"max_rows", "max_texts", "max_text_bytes", "max_tokens_per_text", "max_total_tokens"}
)
TOKEN_LIMITS = frozenset({"max_tokens_per_text", "max_total_tokens"})

#: texts counted on the event loop at most; more are counted in a worker thread
_INLINE_COUNT_BYTES = 16 * 1024


def over_limit(model: str, limit: str, value: int, what: str) -> ModelgateError:
    """PAYLOAD_TOO_LARGE naming the limit: ``what`` says what the request holds."""
    return ModelgateError(
        ErrorKind.PAYLOAD_TOO_LARGE,
        f"{what}; model '{model}' allows at most {value} (limits.{limit})",
        details={"size_limit": limit, "allowed": value},
    )


def check_rows(manifest: ModelManifest, rows: int) -> None:
    limit = manifest.limits.max_rows
    assert limit is not None  # resolved when the manifest was built
    if rows > limit:
        raise over_limit(manifest.name, "max_rows", limit, f"the request has {rows} rows")


def check_texts(manifest: ModelManifest, name: str, data: np.ndarray[Any, Any], seen: int) -> int:
    """Check one BYTES input's texts (count and bytes each); the texts counted so far."""
    limits = manifest.limits
    assert limits.max_texts is not None  # resolved when the manifest was built
    assert limits.max_text_bytes is not None
    texts = seen + int(data.size)
    if texts > limits.max_texts:
        raise over_limit(
            manifest.name, "max_texts", limits.max_texts, f"the request has {texts} texts"
        )
    if data.size:
        # the codecs decode BYTES as bytes (len is the size, and map(len) runs in C); a
        # caller's str elements are measured in UTF-8
        longest = max(map(len if type(data.item(0)) is bytes else _size, data.flat))
        if longest > limits.max_text_bytes:
            index = next(i for i, t in enumerate(data.flat) if _size(t) == longest)
            raise over_limit(
                manifest.name,
                "max_text_bytes",
                limits.max_text_bytes,
                f"text {index} of input '{name}' is {longest} bytes",
            )
    return texts


def check_size(manifest: ModelManifest, tensors: Iterable[Tensor]) -> None:
    """The rows and texts of decoded inputs against the limits, without the rest of the
    signature (a job's requests at submission; the signature is checked when they run)."""
    texts = 0
    for tensor in tensors:
        shape = tensor.data.shape
        if shape:
            check_rows(manifest, int(shape[0]))
        if tensor.datatype == "BYTES":
            texts = check_texts(manifest, tensor.name, tensor.data, texts)


def _size(text: object) -> int:
    if isinstance(text, bytes):
        return len(text)
    return len(str(text).encode("utf-8"))


def token_counter(runtime: object) -> TokenCounter | None:
    """The predictor under ``runtime``'s wrappers (the batcher's ``inner``, the adapter's
    ``predictor``) when it counts tokens; None for others and for remote models (their node
    counts)."""
    for _ in range(4):  # a batcher over an adapter over a predictor, at most
        # duck-typed: isinstance against a runtime-checkable Protocol costs tens of µs
        if hasattr(runtime, "count_tokens") and hasattr(runtime, "special_tokens"):
            return runtime
        runtime = getattr(runtime, "inner", None) or getattr(runtime, "predictor", None)
        if runtime is None:
            return None
    return None


async def check_tokens(
    manifest: ModelManifest, runtime: object, inputs: dict[str, np.ndarray[Any, Any]]
) -> None:
    """Refuse a request of an embedding model over ``max_tokens_per_text`` or
    ``max_total_tokens``, counting only the texts whose bytes could be over."""
    limits = manifest.limits
    per_text, most = limits.max_tokens_per_text, limits.max_total_tokens
    if per_text is None or most is None:
        return
    arrays = [a for a in inputs.values() if a.dtype.kind == "O" and a.size]
    counter = token_counter(runtime) if arrays else None
    if counter is None:
        return
    special = counter.special_tokens
    # the fast path, in C: bytes bound tokens (see the module docstring)
    sizes = [n for a in arrays for n in map(len if type(a.item(0)) is bytes else _size, a.flat)]
    if max(sizes) + special <= per_text and sum(sizes) + special * len(sizes) <= most:
        return  # the common case: nothing to count
    texts = [t for a in arrays for t in a.flat]
    # an upper bound of each text's tokens, from its bytes
    cut = limits.truncate is not False  # unset: cut, as sentence-transformers does
    bounds = [min(b + special, per_text) if cut else b + special for b in sizes]
    if sum(bounds) <= most and max(bounds) <= per_text:
        return  # long texts, cut to the limit, within the total
    if sum(bounds) > most:
        long = list(range(len(texts)))  # the total needs every count
    else:
        long = [i for i, b in enumerate(bounds) if b > per_text]
    chosen = [_bytes(texts[i]) for i in long]
    size = sum(sizes[i] for i in long)
    counts = (
        counter.count_tokens(chosen)
        if size <= _INLINE_COUNT_BYTES
        else await asyncio.to_thread(counter.count_tokens, chosen)
    )
    for i, count in zip(long, counts, strict=True):
        if count > per_text and not cut:
            raise over_limit(
                manifest.name,
                "max_tokens_per_text",
                per_text,
                f"text {i} has {count} tokens",
            )
        bounds[i] = min(count, per_text)
    total = sum(bounds)
    if total > most:
        raise over_limit(
            manifest.name, "max_total_tokens", most, f"the request's texts have {total} tokens"
        )


def _bytes(text: object) -> bytes:
    return text if isinstance(text, bytes) else str(text).encode("utf-8")
