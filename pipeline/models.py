"""Loading models through the Auto classes, and the ``tiny`` preset used on CPU.

Everything loads with ``from_pretrained(name_or_path)``: a hub name on a GPU host, a local folder
(a TAPT output, or the tiny preset) here. The tiny preset is saved to a folder first, so tests run
exactly the code path a hub model takes.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence

import torch
from huggingface_hub.errors import HFValidationError
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
)

from pipeline.data import LABEL_NAMES
from pipeline.distributed import main_first
from pipeline.errors import ModelNotFoundError
from pipeline.tokenizers import train_wordpiece_tokenizer

TINY = "tiny"
# Weights load in float32 whatever dtype the checkpoint was saved in: transformers 5 loads in the
# saved dtype by default, so an fp16 hub checkpoint would fail under fp16 training ("Attempting to
# unscale FP16 gradients") and a bf16 one would train entirely in bf16. Mixed precision comes from
# autocast, over float32 master weights.
TRAIN_DTYPE = torch.float32
# Files whose presence means a tiny model was fully saved (written last: the weights).
_TINY_DONE = ("config.json", "model.safetensors", "tokenizer.json")


def _load(loader, name_or_path: str, what: str, **kwargs):
    """Call ``loader.from_pretrained`` and turn lookup failures into one clear ModelNotFoundError."""
    try:
        return loader.from_pretrained(name_or_path, **kwargs)
    except (OSError, HFValidationError) as exc:
        # OSError covers "not a local folder and not on the hub (or offline)"; HFValidationError
        # covers strings that cannot even be hub ids. The first line of the cause is kept for context.
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelNotFoundError(
            f"cannot load {what} {name_or_path!r}: not a local model folder, and not available from the "
            f"Hugging Face hub (offline or unknown name). Cause: {reason}"
        ) from None


def _label_maps(num_labels: int) -> dict:
    """id2label/label2id saved in the config, so predictions are readable from the model folder alone."""
    names = LABEL_NAMES if num_labels == len(LABEL_NAMES) else [f"LABEL_{i}" for i in range(num_labels)]
    return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


def load_tokenizer(name_or_path: str):
    """The tokenizer saved with a model (hub name or folder)."""
    return _load(AutoTokenizer, name_or_path, "tokenizer")


def load_classifier(name_or_path: str, num_labels: int | None = 4):
    """(model, tokenizer) for sequence classification; an MLM checkpoint gets a fresh classifier head.

    ``ignore_mismatched_sizes`` lets a classifier trained with another label count be re-headed.
    ``num_labels=None`` keeps the saved head as is (for prediction with a fine-tuned model).
    """
    tokenizer = load_tokenizer(name_or_path)
    return classifier_model(name_or_path, num_labels), tokenizer


def classifier_model(name_or_path: str, num_labels: int | None = 4):
    """The model of `load_classifier` alone, for a caller that has loaded the tokenizer already."""
    head = {} if num_labels is None else {
        "num_labels": num_labels, "ignore_mismatched_sizes": True, **_label_maps(num_labels)}
    return _load(AutoModelForSequenceClassification, name_or_path, "model", dtype=TRAIN_DTYPE, **head)


def load_mlm(name_or_path: str):
    """(model, tokenizer) with a masked-LM head, for TAPT."""
    tokenizer = load_tokenizer(name_or_path)
    return _load(AutoModelForMaskedLM, name_or_path, "model", dtype=TRAIN_DTYPE), tokenizer


def build_tiny(
    out_dir: str | os.PathLike,
    texts: Sequence[str],
    hidden: int = 64,
    layers: int = 2,
    heads: int = 2,
    intermediate: int = 128,
    # 8000 WordPiece tokens hold common Korean words and endings whole; at 2000 most tokens are single
    # syllables. Measured on the demo's settings: +2-3 points of validation accuracy and fewer tokens
    # per review (faster), for a larger embedding table (0.5M parameters).
    vocab_size: int = 8000,
    max_position: int = 128,
    seed: int = 0,
) -> str:
    """Train a tokenizer on ``texts``, build a random-init BertForMaskedLM, save both to ``out_dir``.

    Returns ``out_dir`` as a string: pass it anywhere a hub name is accepted.
    """
    out_dir = os.fspath(out_dir)
    tokenizer = train_wordpiece_tokenizer(texts, out_dir, vocab_size=vocab_size)
    # Sequences longer than the position table would index out of range; record the limit.
    tokenizer.model_max_length = max_position
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_position,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = BertForMaskedLM(config)
    tokenizer.save_pretrained(out_dir)
    model.save_pretrained(out_dir)
    return out_dir


def resolve_model_source(spec: str, workdir: str | os.PathLike, texts: Sequence[str] | None = None) -> str:
    """Map a model spec to something ``from_pretrained`` takes.

    ``"tiny"`` builds the tiny preset under ``workdir/tiny`` (or reuses it if already built there);
    any other spec (hub name or path) is passed through unchanged. In a data-parallel run rank 0
    builds it and the other ranks wait, then reuse it.
    """
    if spec != TINY:
        return spec
    with main_first():
        return _tiny(os.path.join(os.fspath(workdir), TINY), texts)


def _tiny(out_dir: str, texts: Sequence[str] | None) -> str:
    """The tiny preset in ``out_dir``: a finished one found there, or one built now."""
    if all(os.path.exists(os.path.join(out_dir, f)) for f in _TINY_DONE):
        return out_dir
    if not texts:
        raise ValueError("building the 'tiny' model needs texts to train its tokenizer on")
    # Build beside the target and rename: a crash or a concurrent job never sees a half-built folder.
    tmp_dir = f"{out_dir}.tmp-{os.getpid()}"
    build_tiny(tmp_dir, texts)
    try:
        os.replace(tmp_dir, out_dir)
    except OSError:
        # Another job finished first (the target exists and is not empty): use theirs.
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return out_dir
