"""Where a model comes from, checked without loading it (no torch, no transformers): a job's
preflight asks this before the job is queued, so a misspelt model fails at submit, not after a
slot has waited for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import ModelNotFoundError

TINY = "tiny"  # the preset built from a config and a tokenizer trained on the task's text
_OFFLINE = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@dataclass
class Source:
    kind: str  # "preset", "folder", "cached", "download"
    note: str | None = None  # for people: e.g. that it will download


def check_model_source(spec: str) -> Source:
    """How `from_pretrained(spec)` would find the model; ModelNotFoundError when it cannot."""
    if spec == TINY:
        return Source("preset")
    expanded = os.path.expanduser(spec)
    if os.path.isdir(expanded):
        if not os.path.exists(os.path.join(expanded, "config.json")):
            raise ModelNotFoundError(f"model folder {spec} has no config.json (not a saved model)")
        return Source("folder")
    if os.path.exists(expanded):
        raise ModelNotFoundError(f"model {spec} is a file; give the folder holding config.json")
    if spec.startswith(("/", "./", "../", "~")) or spec.count("/") > 1:
        raise ModelNotFoundError(f"model folder {spec} does not exist")
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(spec)
    except HFValidationError as exc:
        raise ModelNotFoundError(f"model {spec!r} is neither a folder nor a Hugging Face hub name ({exc})") from None
    cached = try_to_load_from_cache(spec, "config.json")
    if isinstance(cached, str):
        return Source("cached")
    if any(os.environ.get(var, "").lower() in ("1", "true", "yes", "on") for var in _OFFLINE):
        raise ModelNotFoundError(f"model {spec} is not in the local Hugging Face cache and downloads are off "
                                 f"({' / '.join(_OFFLINE)}); check the name, or download it first")
    return Source("download", f"model {spec} is not in the local cache: it will be downloaded from the "
                              "Hugging Face hub when the job starts (check the spelling)")
