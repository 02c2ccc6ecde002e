"""The context rules of ``/v1/embeddings`` (core/pipeline/embedding_context.py) with a word
tokenizer stand-in: who decides to cut, the byte limit before tokens, the refusal's numbers,
and token-id inputs checked (count, length, range) before they are decoded."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelgate.core.pipeline.embedding_context import (
    check_context,
    decode_token_ids,
    fit_texts,
    truncation,
)
from modelgate.core.serving.manifest import ModelManifest, parse_manifest
from modelgate.errors import ErrorKind, ModelgateError

EMBEDDING: dict[str, Any] = {
    "runtime": "text-embedding",
    "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
    "outputs": [{"name": "embedding", "datatype": "FP32", "shape": [-1, 4]}],
    "embedding": {"dimensions": 4, "max_tokens": 8},
}


def _manifest(**limits: Any) -> ModelManifest:
    return parse_manifest("m", {**EMBEDDING, "limits": limits})


class Words:
    """A token per word plus [CLS] and [SEP]; ids are word lengths, decoded as that many x."""

    special_tokens = 2
    vocab_size = 10

    def __init__(self) -> None:
        self.counted: list[bytes] = []
        self.decoded: list[list[int]] = []

    def count_tokens(self, texts: list[bytes]) -> list[int]:
        self.counted.extend(texts)
        return [len(t.split()) + 2 for t in texts]

    def decode_tokens(self, ids: list[list[int]]) -> list[str]:
        self.decoded.extend(ids)
        return [" ".join("x" * i for i in row) for row in ids]


@pytest.mark.parametrize(
    ("manifest", "request_", "cut"),
    [
        (None, None, False),  # unset: refused, as OpenAI does
        (None, True, True),
        (None, False, False),
        (True, None, True),
        (True, False, False),  # a request may ask for the stricter answer
        (False, None, False),
        (False, True, False),  # the operator's false wins
    ],
)
def test_who_decides_to_cut(manifest: bool | None, request_: bool | None, cut: bool) -> None:
    limits = {} if manifest is None else {"truncate": manifest}
    assert truncation(_manifest(**limits), request_) is cut


async def test_an_input_over_the_context_is_refused_with_its_numbers() -> None:
    counter = Words()
    ok = [b"a b", b"a b c d e f"]  # 6 words: the limit (8 less [CLS] and [SEP])
    await check_context(_manifest(), counter, ok, truncate=False)
    assert counter.counted == [b"a b c d e f"]  # 3 bytes cannot be over 6 tokens: not counted
    with pytest.raises(ModelgateError) as info:
        await check_context(_manifest(), counter, [*ok, b"a b c d e f g"], truncate=False)
    assert info.value.kind is ErrorKind.INVALID_ARGUMENT
    assert "maximum context length is 6 tokens per input" in info.value.message
    assert "input 2 has 7 tokens" in info.value.message
    assert info.value.details["openai_code"] == "context_length_exceeded"
    await check_context(_manifest(), Words(), [b"a b c d e f g"], truncate=True)


@given(text=st.text(min_size=1, max_size=40), most=st.integers(1, 30))
def test_a_text_over_the_byte_limit_is_cut_at_a_character(text: str, most: int) -> None:
    manifest = _manifest(max_text_bytes=most)
    (cut,) = fit_texts(manifest, [text.encode()], truncate=True)
    assert len(cut) <= most and text.encode().startswith(cut)
    cut.decode("utf-8")  # never a broken character
    if len(text.encode()) > most:
        with pytest.raises(ModelgateError, match=r"input 0 is \d+ bytes of UTF-8"):
            fit_texts(manifest, [text.encode()], truncate=False)


def test_too_many_texts_are_refused_before_their_bytes() -> None:
    with pytest.raises(ModelgateError, match=r"limits\.max_texts") as info:
        fit_texts(_manifest(max_texts=2), [b"a", b"b", b"x" * 10_000], truncate=True)
    assert info.value.details["size_limit"] == "max_texts"


class Runtime:
    def __init__(self, predictor: Words) -> None:
        self.inner = predictor


async def test_token_ids_are_checked_before_they_are_decoded() -> None:
    words = Words()
    runtime = Runtime(words)
    assert await decode_token_ids(_manifest(), runtime, [[1, 3]], False) == ["x xxx"]
    for ids, says in [
        ([[1] * 7], "input 0 has 7 tokens"),
        ([[1], [2, 10]], "token id 10 at position 1 of input 1"),
        ([[1, -1]], "token id -1 at position 1 of input 0"),
    ]:
        with pytest.raises(ModelgateError, match=says):
            await decode_token_ids(_manifest(), runtime, ids, False)
    with pytest.raises(ModelgateError, match=r"limits\.max_texts"):
        await decode_token_ids(_manifest(max_texts=1), runtime, [[1], [2]], False)
    assert words.decoded == [[1, 3]]  # nothing refused was decoded
    assert await decode_token_ids(_manifest(), runtime, [[2] * 9], True) == ["xx " * 5 + "xx"]
    with pytest.raises(ModelgateError, match="takes no token-id input here"):
        await decode_token_ids(_manifest(), object(), [[1]], False)
