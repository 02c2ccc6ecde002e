"""An embedding request's inputs against the model's context window, as OpenAI treats them.

OpenAI refuses an input over its model's context (400 ``context_length_exceeded``) where
sentence-transformers, and the OIP path, cut it. ``/v1/embeddings`` refuses too, unless the
request (``truncate: true``) or the manifest (``limits.truncate: true``) asks to cut; a
manifest's ``truncate: false`` refuses whatever the request asks.

Token counts here are OpenAI's: the tokens of the input itself, without the [CLS] and [SEP]
the tokenizer adds (so a token-id input of n ids counts n). The context limit in those units
is ``limits.max_tokens_per_text`` less the special tokens (MiniLM: 256 - 2 = 254).

Token-id input is the model's own vocabulary (OpenAI's ids are its models' tokenizer's). The
ids are checked (count first, then range) before they are decoded to text with the model's
tokenizer; that text tokenizes back to the same ids (a property test holds it for ids the
tokenizer made), then takes the text path, limits, cache and batching included.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from modelgate.core.serving.manifest import ModelManifest
from modelgate.core.serving.ports import TokenCounter, TokenDecoder
from modelgate.core.serving.request_size import over_limit, token_counter
from modelgate.errors import ErrorKind, ModelgateError

__all__ = [
    "check_context",
    "decode_token_ids",
    "fit_texts",
    "input_token_limit",
    "truncation",
]

#: bytes or ids worked on the event loop at most; more go to a worker thread
_INLINE = 16 * 1024


def truncation(manifest: ModelManifest, requested: bool | None) -> bool:
    """Whether inputs over the context are cut: the manifest's ``false`` always refuses; else
    the request decides; unset in both, refused (as OpenAI does)."""
    if manifest.limits.truncate is False:
        return False
    return requested if requested is not None else manifest.limits.truncate is True


def input_token_limit(manifest: ModelManifest, counter: TokenCounter) -> int:
    """The most tokens one input may have, special tokens not counted."""
    context = manifest.limits.max_tokens_per_text
    assert context is not None  # an embedding model's limits are resolved
    return context - counter.special_tokens


def _too_long(manifest: ModelManifest, index: int, tokens: int, limit: int) -> ModelgateError:
    return ModelgateError(
        ErrorKind.INVALID_ARGUMENT,
        f"This model's maximum context length is {limit} tokens per input, however input "
        f"{index} has {tokens} tokens (model '{manifest.name}'; [CLS] and [SEP] not counted; "
        f'limits.max_tokens_per_text). Shorten the input, or send "truncate": true to cut it.',
        details={"openai_param": "input", "openai_code": "context_length_exceeded"},
    )


def fit_texts(manifest: ModelManifest, texts: list[bytes], truncate: bool) -> list[bytes]:
    """The texts within ``max_texts`` and ``max_text_bytes`` (checked before anything is
    tokenized): a longer text is cut to the byte limit (at a character) when ``truncate``,
    the model then cutting it to its context; refused otherwise."""
    limits = manifest.limits
    assert limits.max_texts is not None  # resolved when the manifest was built
    assert limits.max_text_bytes is not None
    if len(texts) > limits.max_texts:
        raise over_limit(
            manifest.name, "max_texts", limits.max_texts, f"the request has {len(texts)} texts"
        )
    most = limits.max_text_bytes
    if max(map(len, texts)) <= most:
        return texts  # the common case
    fitted: list[bytes] = []
    for index, text in enumerate(texts):
        if len(text) > most:
            if not truncate:
                raise ModelgateError(
                    ErrorKind.INVALID_ARGUMENT,
                    f"input {index} is {len(text)} bytes of UTF-8; model '{manifest.name}' "
                    f"takes at most {most} bytes per input (limits.max_text_bytes, checked "
                    'before tokenizing). Shorten the input, or send "truncate": true to cut it.',
                    details={"openai_param": "input"},
                )
            text = text[:most].decode("utf-8", errors="ignore").encode("utf-8")
        fitted.append(text)
    return fitted


async def check_context(
    manifest: ModelManifest, counter: TokenCounter, texts: Sequence[bytes], truncate: bool
) -> None:
    """Refuse the first text over the context, unless it is to be cut. Only texts whose bytes
    could be over are tokenized (a token covers at least one byte); their bytes were checked
    against ``max_text_bytes`` before, so the work is bounded by ``max_texts`` of those."""
    if truncate:
        return
    limit = input_token_limit(manifest, counter)
    long = [i for i, text in enumerate(texts) if len(text) > limit]
    if not long:
        return  # the common case: nothing to count
    chosen = [texts[i] for i in long]
    size = sum(map(len, chosen))
    counts = (
        counter.count_tokens(chosen)
        if size <= _INLINE
        else await asyncio.to_thread(counter.count_tokens, chosen)
    )
    for i, count in zip(long, counts, strict=True):
        if count - counter.special_tokens > limit:
            raise _too_long(manifest, i, count - counter.special_tokens, limit)


def token_decoder(runtime: object) -> TokenDecoder | None:
    counter = token_counter(runtime)
    if counter is None or not hasattr(counter, "decode_tokens"):
        return None
    return counter  # type: ignore[return-value]  # duck-typed, as token_counter is


async def decode_token_ids(
    manifest: ModelManifest, runtime: object, inputs: Sequence[list[int]], truncate: bool
) -> list[str]:
    """Token-id inputs as text, after the checks: the number of inputs (``max_texts``), each
    one's length against the context (cut or refused), then each id against the vocabulary."""
    decoder = token_decoder(runtime)
    if decoder is None:
        raise ModelgateError(
            ErrorKind.INVALID_ARGUMENT,
            f"model '{manifest.name}' takes no token-id input here (its tokenizer is not on "
            "this server); send text",
            details={"openai_param": "input"},
        )
    most = manifest.limits.max_texts
    assert most is not None  # resolved when the manifest was built
    if len(inputs) > most:
        raise over_limit(manifest.name, "max_texts", most, f"the request has {len(inputs)} texts")
    limit = input_token_limit(manifest, decoder)
    ids: list[list[int]] = []
    for index, tokens in enumerate(inputs):
        if len(tokens) > limit:
            if not truncate:
                raise _too_long(manifest, index, len(tokens), limit)
            tokens = tokens[:limit]
        low, high = min(tokens), max(tokens)
        if low < 0 or high >= decoder.vocab_size:
            bad = low if low < 0 else high
            raise ModelgateError(
                ErrorKind.INVALID_ARGUMENT,
                f"'$.input' is invalid: token id {bad} at position {tokens.index(bad)} of input "
                f"{index} is not in the vocabulary of model '{manifest.name}' (ids 0 to "
                f"{decoder.vocab_size - 1}); token ids must come from the model's own tokenizer",
                details={"openai_param": "input"},
            )
        ids.append(tokens)
    if sum(map(len, ids)) <= _INLINE:
        return decoder.decode_tokens(ids)
    return await asyncio.to_thread(decoder.decode_tokens, ids)
