"""Write the SDK's API reference (Markdown) from its docstrings and signatures.

    python clients/python/scripts/reference.py > docs/sdk-reference.md

A few lines of ``inspect`` rather than a documentation generator: pdoc, the light one,
writes HTML, and the reference lives in ``docs/`` beside the other Markdown pages.
``tests/sdk/test_sdk_reference.py`` fails when the file is out of date.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from collections.abc import Iterator
from typing import Any

import modelgate_client
from modelgate_client import _errors, testing

HEADER = """# modelgate-client API reference

Generated from the docstrings by `python clients/python/scripts/reference.py >
docs/sdk-reference.md`; do not edit by hand. The guide is [sdk.md](sdk.md).
"""

SECTIONS = [
    ("Clients", ["Client", "AsyncClient", "Jobs", "AsyncJobs", "Deployments", "AsyncDeployments"]),
    ("Helpers", ["job_request", "TextProgress", "RetryPolicy", "DEFAULT_TIMEOUT"]),
    (
        "Answers",
        [
            "InferResult",
            "Explanation",
            "Embeddings",
            "ModelInfo",
            "ModelMetadata",
            "TensorMetadata",
            "Job",
            "JobProgress",
            "JobResult",
            "JobPage",
            "FeedbackItem",
            "UsageReport",
            "UsageRow",
            "Quota",
            "Deployment",
        ],
    ),
    (
        "Errors",
        [
            "ModelgateError",
            "APIError",
            "BadRequestError",
            "AuthenticationError",
            "PermissionDeniedError",
            "NotFoundError",
            "ConflictError",
            "RateLimitError",
            "ServerError",
            "TimeoutError",
            "ConnectionError",
        ],
    ),
]


_QUOTED = re.compile(r"(: |-> )'([^']*)'")
_ROLE = re.compile(r":(?:class|meth|func|mod):`~?([^`]+)`")


def _doc(value: Any) -> str:
    """The docstring, its reST roles as code spans and its ``::`` blocks fenced."""
    text = _ROLE.sub(r"`\1`", inspect.cleandoc(value.__doc__ or "").strip())
    out: list[str] = []
    fenced, opening = False, -1
    for line in text.splitlines():
        if fenced and line and not line.startswith("    "):
            while out[-1] == "":
                out.pop()
            out.extend(["```", ""])
            fenced = False
        if line.endswith("::"):
            out.append(line[:-1])
            out.append("\n```")
            fenced, opening = True, len(out) - 1
            continue
        if fenced and opening >= 0 and line:
            # the block's language from its first line: code that imports is Python
            out[opening] += "python" if line.lstrip().startswith(("from ", "import ")) else "text"
            opening = -1
        out.append(line[4:] if fenced else line)
    if fenced:
        out.append("```")
    return re.sub(r"(```(?:python|text))\n\n", r"\1\n", "\n".join(out))


def _signature(name: str, value: Any) -> str:
    try:
        text = f"{name}{inspect.signature(value)}"
    except (TypeError, ValueError):
        return name
    # the annotations are strings (``from __future__ import annotations``): unquote them
    return _QUOTED.sub(lambda m: m.group(1) + m.group(2), text)


def _qualified(cls: type) -> str:
    package = cls.__module__.split(".")[0]
    return cls.__name__ if package == "modelgate_client" else f"{package}.{cls.__name__}"


def _class(name: str, cls: type) -> Iterator[str]:
    yield f"### `{name}`\n"
    bases = [_qualified(b) for b in cls.__bases__ if b is not object]
    if bases:
        yield f"*Subclass of {', '.join(f'`{b}`' for b in bases)}.*\n"
    if dataclasses.is_dataclass(cls):
        fields = ", ".join(f"`{f.name}: {f.type}`" for f in dataclasses.fields(cls))
        yield f"Fields: {fields}.\n"
    elif "__init__" in vars(cls):
        yield f"```python\n{_signature(name, cls)}\n```\n"
    doc = _doc(cls)
    if doc:
        yield doc + "\n"
    for attr, member in vars(cls).items():
        if attr.startswith("_") or attr == "from_json":
            continue
        if isinstance(member, property):
            if member.__doc__:
                yield f"- `{name}.{attr}` (property): {_doc(member)}"
            continue
        if callable(member) and member.__doc__:
            prefix = "async " if inspect.iscoroutinefunction(member) else ""
            prefix = "async " if inspect.isasyncgenfunction(member) else prefix
            signature = _signature(attr, member).replace("(self, ", "(").replace("(self)", "()")
            yield f"#### `{prefix}{name}.{signature}`\n"
            yield _doc(member) + "\n"
    yield ""


def reference() -> str:
    lines = [HEADER, _doc(modelgate_client) + "\n"]
    for title, names in SECTIONS:
        lines.append(f"## {title}\n")
        if title == "Errors":
            lines.append(_doc(_errors) + "\n")
        for name in names:
            value = getattr(modelgate_client, name)
            if inspect.isclass(value):
                lines.extend(_class(name, value))
            elif inspect.isfunction(value):
                lines.append(f"### `{_signature(name, value)}`\n")
                lines.append(_doc(value) + "\n")
            else:
                lines.append(f"### `{name}`\n\n`{value!r}`\n")
    lines.append("## `modelgate_client.testing`\n")
    lines.append(_doc(testing) + "\n")
    lines.extend(_class("MockTransport", testing.MockTransport))
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference())
