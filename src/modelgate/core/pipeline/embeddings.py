"""Text embeddings on top of the inference service (what the OpenAI adapter calls).

An embedding model is one whose manifest has an ``embedding`` section: a BYTES text input,
an FP32 embedding output and, optionally, a token-count output used for ``usage``.
Shorter ``dimensions`` are allowed only where the manifest says so; the truncated vector
is re-normalized, as OpenAI does for its models that support it. Inputs are texts or token
ids; both are held to the model's context window as OpenAI holds them
(:mod:`modelgate.core.pipeline.embedding_context`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from modelgate.core.access.identity import Principal, Scope
from modelgate.core.pipeline.embedding_context import (
    check_context,
    decode_token_ids,
    fit_texts,
    truncation,
)
from modelgate.core.pipeline.inference import InferenceService
from modelgate.core.serving.request_size import token_counter
from modelgate.core.serving.requests import InferenceRequest
from modelgate.core.serving.tensors import Parameters, Tensor
from modelgate.errors import invalid

__all__ = ["EmbeddingResult", "EmbeddingService"]

MAX_INPUTS = 2048


@dataclass(slots=True)
class EmbeddingResult:
    model_version: str
    vectors: np.ndarray[Any, Any]
    #: the inputs' tokens, without the special ones (as OpenAI counts)
    prompt_tokens: int
    #: the region of the node that answered, on a gateway whose nodes announce one
    region: str | None = None


class EmbeddingService:
    def __init__(self, inference: InferenceService):
        self.inference = inference

    async def embed(
        self,
        model: str,
        texts: list[str] | list[list[int]],
        dimensions: int | None = None,
        principal: Principal | None = None,
        parameters: Parameters | None = None,
        truncate: bool | None = None,
    ) -> EmbeddingResult:
        """``texts``: strings, or lists of the model's token ids. ``parameters`` go to the
        inference request as they are (``subject``, ``consent``: see
        :mod:`modelgate.core.governance.consent`). ``truncate``: the request's wish to cut
        inputs over the context (None: the manifest decides, refusing when it says nothing)."""
        if not texts:
            raise invalid("'input' must not be empty")
        if len(texts) > MAX_INPUTS:
            raise invalid(f"'input' may hold at most {MAX_INPUTS} texts")
        await self.inference.catalog.authorize(principal, model, None, Scope.INFER)
        routing = self.inference.deployments
        choice = routing.choose(model, principal, parameters or {}) if routing else None
        loaded = await self.inference.registry.acquire(model, choice.version if choice else None)
        manifest = loaded.manifest
        spec = manifest.embedding
        if spec is None or len(manifest.inputs) != 1:
            raise invalid(f"model '{model}' is not an embedding model")
        if dimensions is not None:
            if dimensions < 1 or dimensions > spec.dimensions:
                raise invalid(f"'dimensions' must be between 1 and {spec.dimensions}")
            if dimensions != spec.dimensions and not spec.allow_truncation:
                raise invalid(f"model '{model}' does not allow shorter 'dimensions'")
        cut = truncation(manifest, truncate)
        if isinstance(texts[0], str):
            strings = texts
        else:  # token ids: the adapter sends one kind or the other
            strings = await decode_token_ids(manifest, loaded.runtime, texts, cut)
        encoded = fit_texts(manifest, [t.encode("utf-8") for t in strings], cut)
        counter = token_counter(loaded.runtime)
        if counter is not None:  # none for a model a gateway forwards: its node counts
            await check_context(manifest, counter, encoded, cut)
        text = np.empty(len(encoded), dtype=object)
        text[:] = encoded
        response = await self.inference.infer(
            InferenceRequest(
                model=model,
                version=str(loaded.version),
                inputs=[Tensor(manifest.inputs[0].name, "BYTES", text)],
                parameters=parameters or {},
            ),
            principal,
            choice if choice is not None and choice.version == str(loaded.version) else None,
        )
        vectors = response.outputs[0].data
        tokens = int(response.outputs[1].data.sum()) if len(response.outputs) > 1 else 0
        if tokens and counter is not None:
            tokens -= counter.special_tokens * len(texts)
        if dimensions is not None and dimensions != vectors.shape[1]:
            vectors = vectors[:, :dimensions]
            if spec.normalize:
                norms = np.linalg.norm(vectors, axis=1, keepdims=True)
                vectors = vectors / np.clip(norms, 1e-12, None)
        region = response.parameters.get("region")
        return EmbeddingResult(
            response.model_version, vectors, tokens, None if region is None else str(region)
        )
