"""A fake modelgate for your tests: :class:`MockTransport`, an ``httpx.MockTransport`` that
answers the routes the client calls, for ``Client`` and ``AsyncClient`` alike::

    from modelgate_client import Client
    from modelgate_client.testing import MockTransport

    transport = MockTransport()
    transport.add_model("doubler", lambda inputs: {"y": inputs["x"] * 2})
    with Client("http://modelgate.test", transport=transport) as client:
        assert (client.infer("doubler", {"x": np.ones(3)})["y"] == 2).all()

A model's function takes the inputs as numpy arrays by name and returns the outputs; the
transport reads JSON and binary requests and answers in the format asked for, as the server
does. Anything else is answered by :meth:`MockTransport.add_route`, and
:meth:`MockTransport.add_error` makes the next calls to a route fail (to test retries and
error handling). Every request is kept in ``requests``. Needs numpy.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from modelgate_client._tensors import datatype_of, decode_tensor, encode_tensor, numpy_dtype

__all__ = ["MockTransport", "ModelFunction"]

#: a fake model: input arrays by name -> output arrays by name
ModelFunction = Callable[[dict[str, npt.NDArray[Any]]], Mapping[str, Any]]
#: a route's answer: a fixed JSON document, or a function of the request
Answer = Any | Callable[[httpx.Request], httpx.Response]


class MockTransport(httpx.MockTransport):
    """Answers like a modelgate server, from the models and routes registered on it."""

    def __init__(self) -> None:
        super().__init__(self._handle)
        self.requests: list[httpx.Request] = []
        self._models: dict[str, tuple[ModelFunction, str]] = {}
        self._embedders: dict[str, Callable[[str], list[float]]] = {}
        self._routes: dict[tuple[str, str], Answer] = {}
        self._errors: dict[tuple[str, str], list[httpx.Response]] = {}
        self._request_ids = 0

    # -- registering -------------------------------------------------------------------------

    def add_model(self, name: str, function: ModelFunction, *, version: str = "1") -> None:
        """Serve ``name`` (inference, metadata, readiness, ``/v1/models``) by ``function``."""
        self._models[name] = (function, version)

    def add_embeddings(self, model: str, function: Callable[[str], list[float]]) -> None:
        """Answer ``/v1/embeddings`` for ``model``: ``function`` embeds one text."""
        self._embedders[model] = function

    def add_route(self, method: str, path: str, answer: Answer, status: int = 200) -> None:
        """Answer ``method path`` with ``answer``: a JSON document (sent with ``status``) or
        a function from the request to an ``httpx.Response``."""
        if callable(answer):
            self._routes[(method.upper(), path)] = answer
        else:
            self._routes[(method.upper(), path)] = lambda _r: httpx.Response(status, json=answer)

    def add_error(
        self,
        method: str,
        path: str,
        status: int,
        message: str = "mock error",
        *,
        times: int = 1,
        retry_after: float | None = None,
        openai_shape: bool | None = None,
    ) -> None:
        """Answer the next ``times`` calls of ``method path`` with an error ``status``, in
        the route's error shape (OpenAI's under ``/v1``, else OIP's ``{"error": ...}``)."""
        if openai_shape is None:
            openai_shape = path.startswith("/v1/")
        body: dict[str, Any] = (
            {"error": {"message": message, "type": "error", "param": None, "code": None}}
            if openai_shape
            else {"error": message}
        )
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        errors = self._errors.setdefault((method.upper(), path), [])
        errors.extend(httpx.Response(status, json=body, headers=headers) for _ in range(times))

    # -- answering ---------------------------------------------------------------------------

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        key = (request.method, request.url.path)
        pending = self._errors.get(key)
        if pending:
            return pending.pop(0)
        route = self._routes.get(key)
        if route is not None:
            response: httpx.Response = route(request)
            return response
        parts = request.url.path.strip("/").split("/")
        if parts[:2] == ["v2", "models"] and len(parts) >= 3:
            return self._model_route(request, parts[2], parts[3:])
        if request.url.path == "/v1/models":
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "modelgate"}
                    for m in sorted(self._models)]  # fmt: skip
            return httpx.Response(200, json={"object": "list", "data": data})
        if request.url.path == "/v1/embeddings" and request.method == "POST":
            return self._embed(request)
        if request.url.path in ("/v2/health/live", "/v2/health/ready"):
            return httpx.Response(200)
        return httpx.Response(404, json={"error": f"no route {request.url.path}"})

    def _model_route(self, request: httpx.Request, name: str, rest: list[str]) -> httpx.Response:
        found = self._models.get(name)
        if found is None:
            return httpx.Response(404, json={"error": f"model '{name}' is not found"})
        function, version = found
        if rest[:1] == ["versions"]:
            if rest[1:2] != [version]:
                return httpx.Response(404, json={"error": f"no version {rest[1:2]} of {name}"})
            rest = rest[2:]
        if rest == ["infer"] and request.method == "POST":
            return self._infer(request, name, version, function)
        if rest == ["ready"]:
            return httpx.Response(200)
        if not rest:
            meta = {"name": name, "versions": [version], "platform": "mock", "inputs": [],
                    "outputs": []}  # fmt: skip
            return httpx.Response(200, json=meta)
        return httpx.Response(404, json={"error": f"no route {request.url.path}"})

    def _infer(
        self, request: httpx.Request, name: str, version: str, function: ModelFunction
    ) -> httpx.Response:
        body = request.content
        length = request.headers.get("inference-header-content-length")
        header, binary = (
            (body, b"") if length is None else (body[: int(length)], body[int(length) :])
        )
        doc = json.loads(header)
        inputs: dict[str, npt.NDArray[Any]] = {}
        offset = 0
        for item in doc["inputs"]:
            size = (item.get("parameters") or {}).get("binary_data_size")
            if size is None:
                data = item["data"]
                if item["datatype"] == "BYTES":
                    array = np.empty(len(data), dtype=object)
                    array[:] = [s.encode() for s in data]
                else:
                    array = np.asarray(data, dtype=numpy_dtype(item["datatype"]))
                inputs[item["name"]] = array.reshape(item["shape"])
            else:
                chunk = binary[offset : offset + size]
                inputs[item["name"]] = decode_tensor(item["datatype"], item["shape"], chunk)
                offset += size
        outputs = {k: np.asarray(v) for k, v in function(inputs).items()}
        asked = doc.get("outputs")
        wants_binary = bool((doc.get("parameters") or {}).get("binary_data_output"))
        binary_names = {
            o["name"]
            for o in asked or ()
            if (o.get("parameters") or {}).get("binary_data", wants_binary)
        }
        if asked is not None:
            outputs = {o["name"]: outputs[o["name"]] for o in asked}
        elif wants_binary:
            binary_names = set(outputs)
        entries, chunks = [], []
        for out_name, array in outputs.items():
            datatype = datatype_of(array)
            entry: dict[str, Any] = {"name": out_name, "datatype": datatype,
                                     "shape": list(array.shape)}  # fmt: skip
            if out_name in binary_names:
                raw = encode_tensor(datatype, array)
                entry["parameters"] = {"binary_data_size": len(raw)}
                chunks.append(raw)
            elif datatype == "BYTES":
                entry["data"] = [bytes(x).decode() if not isinstance(x, str) else x
                                 for x in array.reshape(-1)]  # fmt: skip
            else:
                entry["data"] = array.reshape(-1).tolist()
            entries.append(entry)
        answer: dict[str, Any] = {"model_name": name, "model_version": version, "outputs": entries}
        if "id" in doc:
            answer["id"] = doc["id"]
        self._request_ids += 1
        headers = {"x-request-id": f"mock-{self._request_ids}"}
        text = json.dumps(answer).encode()
        if not chunks:
            headers["content-type"] = "application/json"
            return httpx.Response(200, content=text, headers=headers)
        headers["content-type"] = "application/octet-stream"
        headers["inference-header-content-length"] = str(len(text))
        return httpx.Response(200, content=b"".join([text, *chunks]), headers=headers)

    def _embed(self, request: httpx.Request) -> httpx.Response:
        doc = json.loads(request.content)
        embed = self._embedders.get(doc.get("model"))
        if embed is None:
            error = {
                "message": f"The model '{doc.get('model')}' does not exist",
                "type": "invalid_request_error",
                "param": None,
                "code": "model_not_found",
            }
            return httpx.Response(404, json={"error": error})
        texts = doc["input"] if isinstance(doc["input"], list) else [doc["input"]]
        data = [{"object": "embedding", "index": i, "embedding": embed(str(t))}
                for i, t in enumerate(texts)]  # fmt: skip
        tokens = sum(len(str(t).split()) for t in texts)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        body = {"object": "list", "data": data, "model": doc["model"], "usage": usage}
        return httpx.Response(200, json=body)
