"""On-disk cache of tokenized texts.

Every trial of a campaign tokenizes the same reviews with the same tokenizer; on a 100k-row set that
is seconds to minutes per trial, so results are cached under a key made of
(tokenizer fingerprint, sha256 of the texts, max_length, fields).

Entries are ``.npz`` files holding ragged arrays as one flat array plus row offsets, which load in
milliseconds. Writes go to a temporary file then ``os.replace``, so concurrent workers never read a
half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .util import atomic_output

DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "sched", "tokens")
CACHE_ENV = "SCHED_CACHE_DIR"


@dataclass
class CacheStats:
    """Hit/miss counters and the seconds spent tokenizing, so a bench can show the saving."""

    hits: int = 0
    misses: int = 0
    seconds_tokenizing: float = 0.0
    seconds_loading: float = 0.0


@dataclass
class Encoded:
    """Token ids per text (and, on request, character offsets per token)."""

    input_ids: list[np.ndarray]
    offsets: list[np.ndarray] | None = None
    cache_hit: bool = False
    key: str = ""

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class TokenCache:
    """Tokenize-or-load. ``cache_dir`` defaults to ``$SCHED_CACHE_DIR`` then ``~/.cache/sched/tokens``."""

    cache_dir: str | None = None
    stats: CacheStats = field(default_factory=CacheStats)

    def __post_init__(self) -> None:
        chosen = self.cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR
        self.cache_dir = os.path.expanduser(chosen)

    def encode(self, tokenizer, texts: Sequence[str], max_length: int, with_offsets: bool = False,
               fingerprint: str | None = None) -> Encoded:
        """Token ids for ``texts`` (with [CLS]/[SEP], truncated to ``max_length``), from cache if present.
        ``fingerprint``: the tokenizer's, when the caller encodes several sets with it (it takes ms)."""
        key = cache_key(tokenizer, texts, max_length, with_offsets, fingerprint)
        path = os.path.join(self.cache_dir, f"{key}.npz")
        start = time.perf_counter()
        if os.path.exists(path):
            try:
                enc = _load(path, key)
            except (OSError, ValueError, KeyError):
                enc = None  # corrupt entry: fall through and rebuild it
            if enc is not None:
                self.stats.hits += 1
                self.stats.seconds_loading += time.perf_counter() - start
                return enc
        enc = _tokenize(tokenizer, texts, max_length, with_offsets)
        enc.key = key
        self.stats.misses += 1
        self.stats.seconds_tokenizing += time.perf_counter() - start
        _save(path, enc)
        return enc


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 over what decides token ids: the tokenizer's serialized pipeline and its name/path.

    The backend's truncation/padding state is dropped: calling the tokenizer mutates it, and it is
    already covered by ``max_length`` in the cache key.
    """
    h = hashlib.sha256()
    h.update(type(tokenizer).__name__.encode())
    h.update(str(getattr(tokenizer, "name_or_path", "")).encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
        h.update(json.dumps(spec, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    else:  # slow (pure Python) tokenizer: the vocabulary and added tokens decide the ids
        h.update(json.dumps(tokenizer.get_vocab(), sort_keys=True, ensure_ascii=False).encode("utf-8"))
    return h.hexdigest()


def texts_sha256(texts: Sequence[str]) -> str:
    """sha256 of the texts, length-prefixed so ["ab", "c"] and ["a", "bc"] differ."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def cache_key(tokenizer, texts: Sequence[str], max_length: int, with_offsets: bool = False,
              fingerprint: str | None = None) -> str:
    """The entry name: one sha256 over the tokenizer fingerprint, the texts' hash and the settings."""
    parts = [fingerprint or tokenizer_fingerprint(tokenizer), texts_sha256(texts), str(int(max_length)),
             str(bool(with_offsets))]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def _tokenize(tokenizer, texts: Sequence[str], max_length: int, with_offsets: bool) -> Encoded:
    out = tokenizer(
        list(texts),
        truncation=True,
        max_length=max_length,
        return_attention_mask=False,
        return_token_type_ids=False,
        return_offsets_mapping=with_offsets,
    )
    ids = [np.asarray(x, dtype=np.int32) for x in out["input_ids"]]
    offsets = [np.asarray(x, dtype=np.int32).reshape(-1, 2) for x in out["offset_mapping"]] if with_offsets else None
    return Encoded(input_ids=ids, offsets=offsets)


def _flatten(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.concatenate(rows) if rows else np.zeros((0,), dtype=np.int32)
    return flat, offsets


def _unflatten(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [flat[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]


def _save(path: str, enc: Encoded) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    arrays = {}
    arrays["ids"], arrays["ids_rows"] = _flatten(enc.input_ids)
    if enc.offsets is not None:
        arrays["offsets"], arrays["offsets_rows"] = _flatten(enc.offsets)
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _load(path: str, key: str) -> Encoded:
    with np.load(path, allow_pickle=False) as z:  # a cache file is data: never unpickle
        ids = _unflatten(z["ids"], z["ids_rows"])
        offsets = _unflatten(z["offsets"], z["offsets_rows"]) if "offsets" in z.files else None
    return Encoded(input_ids=ids, offsets=offsets, cache_hit=True, key=key)
