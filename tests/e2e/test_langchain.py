"""langchain-openai's ``OpenAIEmbeddings``, unchanged, against a real modelgate process.

With its defaults (``check_embedding_ctx_length=True``, ``tiktoken_enabled=True``) LangChain
tokenizes each text with tiktoken, falling back to ``cl100k_base`` for a model name it does
not know, and sends the ids (``[[int]]``), chunked at ``embedding_ctx_length``. Those are not
MiniLM's ids, and tiktoken fetches cl100k_base's file from OpenAI at run time, which fails
offline in the client before anything is sent (see docs/openai.md). So the default path is
tested here with tiktoken's encoding replaced by MiniLM's own tokenizer: LangChain's own code
then sends the model's ids, chunks long texts and averages the chunks. The setting LangChain
documents for OpenAI-compatible servers, ``check_embedding_ctx_length=False``, sends text.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import openai
import pytest
import tiktoken
from langchain_openai import OpenAIEmbeddings
from tokenizers import Tokenizer

from tests.conftest import DEMO_MODELS
from tests.e2e.conftest import ADMIN_KEY, RunningServer

MODEL = "all-MiniLM-L6-v2"


class MiniLMEncoding:
    """What LangChain asks of a tiktoken ``Encoding``, answered by MiniLM's tokenizer (ids
    without [CLS] and [SEP], as OpenAI's ids carry no special tokens)."""

    def __init__(self) -> None:
        self._tokenizer = Tokenizer.from_file(str(DEMO_MODELS / MODEL / "tokenizer.json"))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()

    def encode_ordinary(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def encode(self, text: str, **_: Any) -> list[int]:
        return self.encode_ordinary(text)


def _embeddings(server: RunningServer, **options: Any) -> OpenAIEmbeddings:
    return OpenAIEmbeddings(
        model=MODEL,
        base_url=f"{server.url}/v1",
        api_key=ADMIN_KEY,  # type: ignore[arg-type]  # a SecretStr from a str
        max_retries=0,
        **options,
    )


@pytest.fixture
def minilm_tiktoken(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KeyError):  # LangChain's fallback to cl100k_base is taken
        tiktoken.encoding_for_model(MODEL)
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: MiniLMEncoding())


def _reference() -> tuple[list[str], np.ndarray]:
    data = json.loads((DEMO_MODELS / MODEL / "reference_embeddings.json").read_text())
    pairs = [(s, e) for s, e in zip(data["sentences"], data["embeddings"], strict=True) if s]
    return [s for s, _ in pairs], np.array([e for _, e in pairs])


def test_text_as_langchain_documents_for_compatible_servers(demo_server: RunningServer) -> None:
    sentences, reference = _reference()
    embeddings = _embeddings(demo_server, check_embedding_ctx_length=False)
    short = [i for i, s in enumerate(sentences) if len(s) < 500]
    got = np.array(embeddings.embed_documents([sentences[i] for i in short]))
    assert (got * reference[short]).sum(axis=1).min() >= 0.999  # both unit length
    query = embeddings.embed_query(sentences[0])
    np.testing.assert_allclose(query, got[0], atol=1e-6)
    with pytest.raises(openai.BadRequestError, match="maximum context length is 254 tokens"):
        embeddings.embed_documents(sentences)  # one is 486 tokens: refused, as OpenAI does
    cutting = _embeddings(  # as sentence-transformers does
        demo_server,
        check_embedding_ctx_length=False,
        model_kwargs={"extra_body": {"truncate": True}},
    )
    got = np.array(cutting.embed_documents(sentences))
    assert (got * reference).sum(axis=1).min() >= 0.999


def test_langchains_token_id_path(demo_server: RunningServer, minilm_tiktoken: None) -> None:
    text = _embeddings(demo_server, check_embedding_ctx_length=False)
    defaults = _embeddings(demo_server)  # token ids, chunked at 8191
    short = ["hello world", "a cat sat on the mat"]
    np.testing.assert_allclose(
        defaults.embed_documents(short), text.embed_documents(short), atol=1e-6
    )
    long = " ".join(f"word{i % 50}" for i in range(400))
    with pytest.raises(openai.BadRequestError, match="context length is 254 tokens"):
        defaults.embed_documents([long])  # one chunk of 8191 at most: over MiniLM's context
    chunking = _embeddings(demo_server, embedding_ctx_length=254)
    (vector,) = chunking.embed_documents([long])  # LangChain averages the chunks' vectors
    assert np.linalg.norm(vector) == pytest.approx(1.0, rel=1e-5)
    assert float(np.dot(vector, text.embed_query(long[:400]))) > 0.5
