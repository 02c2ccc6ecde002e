"""Every request's work is bounded by its model's ``limits`` (finding 3): rows, texts, the
bytes of each text, tokens per text and in total, refused before anything runs, with the
limit and its value named; defaults when a manifest says nothing."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelgate.core.access.identity import Plan, Principal
from modelgate.core.admission.admission import Admission
from modelgate.core.admission.quotas import Quotas
from modelgate.core.pipeline.inference import InferenceService
from modelgate.core.serving.manifest import (
    DEFAULT_MAX_ROWS,
    DEFAULT_MAX_TEXT_BYTES,
    DEFAULT_MAX_TEXTS,
    DEFAULT_MAX_TOTAL_TOKENS,
    ModelManifest,
    parse_manifest,
)
from modelgate.core.serving.registry import ModelRegistry
from modelgate.core.serving.request_size import check_size, check_tokens, token_counter
from modelgate.core.serving.requests import InferenceRequest
from modelgate.core.serving.signature import validate_inputs
from modelgate.core.serving.tensors import Tensor
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.storage.memory.quotas import MemoryQuotaCounter
from modelgate.storage.memory.rate_limits import MemoryRateLimiter
from modelgate.testing import MemoryRepository, RecordingPredictor

TABULAR: dict[str, Any] = {
    "runtime": "python",
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
}
TEXT: dict[str, Any] = {
    "runtime": "python",
    "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
    "outputs": [{"name": "n", "datatype": "INT64", "shape": [-1]}],
}
EMBEDDING: dict[str, Any] = {
    "runtime": "text-embedding",
    "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
    "outputs": [
        {"name": "embedding", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "token_count", "datatype": "INT64", "shape": [-1]},
    ],
    "embedding": {"dimensions": 4, "max_tokens": 16},
}


def _manifest(base: dict[str, Any], **limits: Any) -> ModelManifest:
    return parse_manifest("m", {**base, "limits": limits} if limits else base)


def _rows(n: int) -> list[Tensor]:
    return [Tensor("x", "FP32", np.zeros((n, 2), np.float32))]


def _texts(*texts: bytes | str) -> list[Tensor]:
    array = np.empty(len(texts), dtype=object)
    array[:] = [t.encode() if isinstance(t, str) else t for t in texts]
    return [Tensor("text", "BYTES", array)]


def _refused(exc: pytest.ExceptionInfo[ModelgateError], limit: str, value: int) -> None:
    assert exc.value.kind is ErrorKind.PAYLOAD_TOO_LARGE
    assert exc.value.details == {"size_limit": limit, "allowed": value}
    assert f"limits.{limit}" in exc.value.message and str(value) in exc.value.message


# -- the manifest: defaults and overrides -------------------------------------------------
def test_a_manifest_without_limits_gets_the_defaults() -> None:
    tabular = _manifest(TABULAR).limits
    assert (tabular.max_rows, tabular.max_texts, tabular.max_text_bytes) == (
        DEFAULT_MAX_ROWS,
        DEFAULT_MAX_TEXTS,
        DEFAULT_MAX_TEXT_BYTES,
    )
    assert tabular.max_tokens_per_text is None and tabular.max_total_tokens is None
    embedding = _manifest(EMBEDDING).limits
    assert embedding.max_tokens_per_text == 16  # the model's sequence length
    assert embedding.max_total_tokens == DEFAULT_MAX_TOTAL_TOKENS
    assert embedding.truncate is None  # OIP cuts, as sentence-transformers; /v1 refuses


def test_a_batch_size_over_the_default_rows_raises_it() -> None:
    manifest = _manifest({**TABULAR, "batching": {"max_batch_size": 10_000}})
    assert manifest.limits.max_rows == 10_000


def test_a_manifests_own_limits_override_the_defaults() -> None:
    limits = _manifest(
        EMBEDDING, max_rows=7, max_texts=5, max_text_bytes=99, max_tokens_per_text=8,
        max_total_tokens=20, truncate=True,
    ).limits  # fmt: skip
    assert (limits.max_rows, limits.max_texts, limits.max_text_bytes) == (7, 5, 99)
    assert (limits.max_tokens_per_text, limits.max_total_tokens, limits.truncate) == (8, 20, True)


@pytest.mark.parametrize(
    ("base", "limits", "says"),
    [
        (EMBEDDING, {"max_tokens_per_text": 17}, "embedding.max_tokens"),
        (TABULAR, {"max_total_tokens": 100}, "token limits need an 'embedding' section"),
        (TABULAR, {"max_rows": 0}, "limits.max_rows"),
        (TABULAR, {"max_requests": 3}, "limits.max_requests"),
    ],
)
def test_bad_limits_are_refused_when_the_manifest_loads(
    base: dict[str, Any], limits: dict[str, Any], says: str
) -> None:
    with pytest.raises(ModelgateError) as exc:
        _manifest(base, **limits)
    assert exc.value.kind is ErrorKind.INVALID_ARGUMENT and says in exc.value.message


# -- rows, texts, bytes: exact at the cap ---------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(cap=st.integers(1, 64), delta=st.integers(-3, 3))
def test_the_rows_cap_is_exact(cap: int, delta: int) -> None:
    manifest = _manifest(TABULAR, max_rows=cap)
    n = max(1, cap + delta)
    if n <= cap:
        assert validate_inputs(manifest, _rows(n))[1] == n
    else:
        with pytest.raises(ModelgateError) as exc:
            validate_inputs(manifest, _rows(n))
        _refused(exc, "max_rows", cap)


@settings(max_examples=40, deadline=None)
@given(cap=st.integers(1, 40), delta=st.integers(-3, 3))
def test_the_texts_cap_is_exact(cap: int, delta: int) -> None:
    manifest = _manifest(TEXT, max_texts=cap)
    n = max(1, cap + delta)
    if n <= cap:
        validate_inputs(manifest, _texts(*["a"] * n))
    else:
        with pytest.raises(ModelgateError) as exc:
            validate_inputs(manifest, _texts(*["a"] * n))
        _refused(exc, "max_texts", cap)


@settings(max_examples=60, deadline=None)
@given(
    cap=st.integers(1, 300),
    delta=st.integers(-4, 4),
    char=st.sampled_from(["a", "é", "€", "😀"]),
    others=st.integers(0, 3),
)
def test_the_bytes_cap_is_exact_in_utf8_bytes(cap: int, delta: int, char: str, others: int) -> None:
    manifest = _manifest(TEXT, max_text_bytes=cap)
    width = len(char.encode())
    text = char * max(0, (cap + delta) // width)
    size = len(text.encode())
    texts = _texts(*(["ok"[: min(2, cap)]] * others), text)
    if size <= cap:
        validate_inputs(manifest, texts)
    else:
        with pytest.raises(ModelgateError) as exc:
            validate_inputs(manifest, texts)
        _refused(exc, "max_text_bytes", cap)
        assert f"text {others} of input 'text' is {size} bytes" in exc.value.message


def test_a_one_mib_text_is_refused_on_its_bytes() -> None:
    with pytest.raises(ModelgateError) as exc:
        validate_inputs(_manifest(TEXT), _texts(b"x" * (1 << 20)))
    _refused(exc, "max_text_bytes", DEFAULT_MAX_TEXT_BYTES)


def test_rows_are_refused_before_the_data_is_read() -> None:
    """A NaN in a request over the rows cap: the size refuses, not the (costlier) scan."""
    data = np.full((11, 2), np.nan, np.float32)
    with pytest.raises(ModelgateError) as exc:
        validate_inputs(_manifest(TABULAR, max_rows=10), [Tensor("x", "FP32", data)])
    _refused(exc, "max_rows", 10)


def test_check_size_holds_job_items_to_the_same_caps() -> None:
    check_size(_manifest(TEXT, max_texts=2, max_text_bytes=3), _texts("abc", "de"))
    with pytest.raises(ModelgateError) as exc:
        check_size(_manifest(TEXT, max_texts=2), _texts("a", "b", "c"))
    _refused(exc, "max_texts", 2)
    with pytest.raises(ModelgateError) as exc:
        check_size(_manifest(TABULAR, max_rows=3), _rows(4))
    _refused(exc, "max_rows", 3)


# -- tokens ----------------------------------------------------------------------------------
class WordCounter:
    """A tokenizer stand-in: a token per word, plus [CLS] and [SEP]; records what it counted."""

    special_tokens = 2

    def __init__(self) -> None:
        self.counted: list[bytes] = []
        self.threads: set[int] = set()

    def count_tokens(self, texts: list[bytes]) -> list[int]:
        self.counted.extend(texts)
        self.threads.add(threading.get_ident())
        return [len(t.split()) + 2 for t in texts]

    def predict(self, inputs: Any) -> Any:
        raise AssertionError("the model must not run")

    def close(self) -> None:
        pass


class Wrapper:
    """What a batcher over a predictor adapter looks like to ``token_counter``."""

    def __init__(self, predictor: WordCounter) -> None:
        self.inner = type("Adapter", (), {"predictor": predictor})()


def _inputs(*texts: str) -> dict[str, np.ndarray[Any, Any]]:
    return {"text": _texts(*texts)[0].data}


def test_the_counter_is_found_under_the_runtimes_wrappers() -> None:
    counter = WordCounter()
    assert token_counter(Wrapper(counter)) is counter
    assert token_counter(object()) is None  # a remote model: its node counts


@pytest.mark.parametrize("truncate", [False, True])
async def test_short_texts_are_never_tokenized_on_the_request_path(truncate: bool) -> None:
    counter = WordCounter()
    manifest = _manifest(EMBEDDING, truncate=truncate)
    # 16 tokens per text: a text of 14 bytes has at most 14 + 2 tokens
    await check_tokens(manifest, Wrapper(counter), _inputs("a" * 14, "b c d"))
    assert counter.counted == []


@settings(max_examples=40, deadline=None)
@given(words=st.integers(1, 20))
async def test_the_tokens_per_text_cap_is_exact(words: int) -> None:
    counter = WordCounter()
    text = " ".join(["w"] * words)  # words + 2 tokens
    manifest = _manifest(EMBEDDING, truncate=False)
    if words + 2 <= 16:
        await check_tokens(manifest, Wrapper(counter), _inputs(text))
    else:
        with pytest.raises(ModelgateError) as exc:
            await check_tokens(manifest, Wrapper(counter), _inputs(text))
        _refused(exc, "max_tokens_per_text", 16)
        assert f"text 0 has {words + 2} tokens" in exc.value.message


@settings(max_examples=40, deadline=None)
@given(texts=st.integers(1, 12), total=st.integers(10, 60))
async def test_the_total_tokens_cap_is_exact(texts: int, total: int) -> None:
    counter = WordCounter()
    manifest = _manifest(EMBEDDING, max_total_tokens=total)
    batch = _inputs(*["one two three"] * texts)  # 5 tokens each, 13 bytes each
    if 5 * texts <= total:
        await check_tokens(manifest, Wrapper(counter), batch)
    else:
        with pytest.raises(ModelgateError) as exc:
            await check_tokens(manifest, Wrapper(counter), batch)
        _refused(exc, "max_total_tokens", total)


async def test_truncation_lets_long_texts_through_at_the_cap() -> None:
    counter = WordCounter()
    long = " ".join(["w"] * 40)
    await check_tokens(_manifest(EMBEDDING, truncate=True), Wrapper(counter), _inputs(long))
    # ... but they count at the per-text cap against the total
    with pytest.raises(ModelgateError) as exc:
        await check_tokens(
            _manifest(EMBEDDING, truncate=True, max_total_tokens=31),
            Wrapper(counter),
            _inputs(long, long),
        )
    _refused(exc, "max_total_tokens", 31)


async def test_many_long_texts_are_counted_off_the_event_loop() -> None:
    counter = WordCounter()
    texts = [" ".join(["w"] * 10) + " " + "x" * 4000 for _ in range(8)]  # 12 tokens each
    await check_tokens(_manifest(EMBEDDING, truncate=False), Wrapper(counter), _inputs(*texts))
    assert len(counter.counted) == 8
    assert threading.get_ident() not in counter.threads


def test_tabular_models_have_no_token_check() -> None:
    assert _manifest(TABULAR).limits.max_total_tokens is None


# -- the order: size, then rows charged to quotas, then the model --------------------------
async def test_an_oversized_request_spends_no_quota_and_rows_are_charged_first() -> None:
    predictor = RecordingPredictor()
    repository = MemoryRepository({"m": {1: {"limits": {"max_rows": 4}}}})
    registry = ModelRegistry(repository, {"python": lambda source: predictor})
    quotas = Quotas(MemoryQuotaCounter())
    service = InferenceService(registry, admission=Admission(MemoryRateLimiter(), quotas=quotas))
    who = Principal("t1", "key_1", frozenset({"infer"}), Plan("p", rows_per_day=6))

    def request(rows: int) -> InferenceRequest:
        return InferenceRequest("m", None, [Tensor("x", "FP32", np.ones((rows, 2), np.float32))])

    await registry.acquire("m", None)  # loaded (its warm-up calls are not the requests')
    warm = len(predictor.calls)
    with pytest.raises(ModelgateError) as exc:
        await service.infer(request(5), who)  # over max_rows
    _refused(exc, "max_rows", 4)
    assert [(u.unit, u.used) for u in await quotas.usage(who)] == [("rows", 0)]
    await service.infer(request(4), who)
    with pytest.raises(ModelgateError) as exc:
        await service.infer(request(3), who)  # 4 + 3 rows would pass 6 a day
    assert exc.value.kind is ErrorKind.RATE_LIMITED
    assert predictor.calls[warm:] == [4]  # only the request that fit ran
    assert [(u.unit, u.used) for u in await quotas.usage(who)] == [("rows", 4)]
