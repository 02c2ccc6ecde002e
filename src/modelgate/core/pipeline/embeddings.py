"""Text embeddings on top of the inference service (what the OpenAI adapter calls).

An embedding model is one whose manifest has an ``embedding`` section: a BYTES text input,
an FP32 embedding output and, optionally, a token-count output used for ``usage``.
Shorter ``dimensions`` are allowed only where the manifest says so; the truncated vector
is re-normalized, as OpenAI does for its models that support it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from modelgate.core.access.identity import Principal, Scope
from modelgate.core.pipeline.inference import InferenceService
from modelgate.core.serving.requests import InferenceRequest
from modelgate.core.serving.tensors import Parameters, Tensor
from modelgate.errors import invalid

__all__ = ["EmbeddingResult", "EmbeddingService"]

MAX_INPUTS = 2048


@dataclass(slots=True)
class EmbeddingResult:
    model_version: str
    vectors: np.ndarray[Any, Any]
    prompt_tokens: int


class EmbeddingService:
    def __init__(self, inference: InferenceService):
        self.inference = inference

    async def embed(
        self,
        model: str,
        texts: list[str],
        dimensions: int | None = None,
        principal: Principal | None = None,
        parameters: Parameters | None = None,
    ) -> EmbeddingResult:
        """``parameters`` go to the inference request as they are (``subject``, ``consent``:
        see :mod:`modelgate.core.governance.consent`)."""
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
        text = np.empty(len(texts), dtype=object)
        text[:] = [t.encode("utf-8") for t in texts]
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
        if dimensions is not None and dimensions != vectors.shape[1]:
            vectors = vectors[:, :dimensions]
            if spec.normalize:
                norms = np.linalg.norm(vectors, axis=1, keepdims=True)
                vectors = vectors / np.clip(norms, 1e-12, None)
        return EmbeddingResult(response.model_version, vectors, tokens)
