"""Torch datasets over cached token ids, and collators that pad each batch only to its longest row."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np
import torch
from transformers import DataCollatorForLanguageModeling


class EncodedDataset(torch.utils.data.Dataset):
    """Rows of token ids (and optional labels / character offsets), as dicts the collators take."""

    def __init__(self, input_ids: Sequence[np.ndarray], labels: Sequence[int] | None = None,
                 offsets: Sequence[np.ndarray] | None = None):
        if labels is not None and len(labels) != len(input_ids):
            raise ValueError(f"{len(input_ids)} encoded rows but {len(labels)} labels")
        self.input_ids = input_ids
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        # "input_ids" is what the Trainer's length-grouped sampler measures.
        item = {"input_ids": self.input_ids[i]}
        if self.labels is not None:
            item["labels"] = int(self.labels[i])
        if self.offsets is not None:
            item["offset_mapping"] = self.offsets[i]
        return item


def pad_ids(rows: Sequence[np.ndarray], pad_id: int, width: int | None = None, dtype=torch.long) -> torch.Tensor:
    """Stack ragged rows into one [batch, width] tensor, right-padded with ``pad_id``."""
    width = width or max(len(r) for r in rows)
    out = np.full((len(rows), width) + np.shape(rows[0])[1:], pad_id, dtype=np.int64)
    for j, r in enumerate(rows):
        out[j, :len(r)] = r
    return torch.as_tensor(out, dtype=dtype)


def length_mask(rows: Sequence[np.ndarray], width: int) -> torch.Tensor:
    """[batch, width] attention mask: 1 on each row's real tokens, 0 on padding."""
    lengths = torch.tensor([len(r) for r in rows])
    return (torch.arange(width)[None, :] < lengths[:, None]).long()


class PadCollator:
    """Dynamic padding for classification: pad to the longest row in the batch, not to max_length.

    Plain numpy instead of ``tokenizer.pad``: the same result without per-row Python dict handling.
    """

    def __init__(self, pad_id: int, pad_to_multiple_of: int | None = None):
        self.pad_id = pad_id
        self.multiple = pad_to_multiple_of

    def _width(self, rows) -> int:
        width = max(len(r) for r in rows)
        if self.multiple:  # tensor cores like multiples of 8 under fp16/bf16
            width = -(-width // self.multiple) * self.multiple
        return width

    def __call__(self, features: list[dict]) -> dict:
        rows = [f["input_ids"] for f in features]
        width = self._width(rows)
        input_ids = pad_ids(rows, self.pad_id, width)
        # The mask comes from lengths, not pad ids, in case the pad id also occurs inside a row.
        batch = {"input_ids": input_ids, "attention_mask": length_mask(rows, width)}
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
        return batch


def seed_masker(masker: DataCollatorForLanguageModeling) -> None:
    """Make the masker's seeded generator, whichever 5.x signature ``create_rng`` has.

    Up to transformers 5.17 it takes no argument (the tensor type comes from ``return_tensors``);
    later releases take the tensor type. The collator is called outside ``torch_call``, which would
    otherwise make it.
    """
    if "return_tensors" in inspect.signature(masker.create_rng).parameters:
        masker.create_rng("pt")
    else:
        masker.create_rng()


class MLMPadCollator(PadCollator):
    """Dynamic padding, then the masking of ``DataCollatorForLanguageModeling`` (optionally whole-word).

    Whole-word masking needs each token's character offsets, which ride along in the features.
    """

    def __init__(self, tokenizer, mlm_probability: float = 0.15, whole_word_mask: bool = False,
                 seed: int | None = None, pad_to_multiple_of: int | None = None):
        super().__init__(tokenizer.pad_token_id, pad_to_multiple_of)
        # Whole-word masking always uses [MASK] (no random replacement): say so, rather than be warned.
        replace = {"mask_replace_prob": 1.0, "random_replace_prob": 0.0} if whole_word_mask else {}
        self.masker = DataCollatorForLanguageModeling(
            tokenizer, mlm=True, mlm_probability=mlm_probability, whole_word_mask=whole_word_mask, seed=seed,
            **replace,
        )
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)))
        self.whole_word_mask = whole_word_mask

    def __call__(self, features: list[dict]) -> dict:
        rows = [f["input_ids"] for f in features]
        width = self._width(rows)
        input_ids = pad_ids(rows, self.pad_id, width)
        attention_mask = length_mask(rows, width)
        special = torch.isin(input_ids, self.special_ids) | (attention_mask == 0)
        offsets = pad_ids([f["offset_mapping"] for f in features], 0, width) if self.whole_word_mask else None
        if self.masker.seed is not None and self.masker.generator is None:
            seed_masker(self.masker)
        masked, labels = self.masker.torch_mask_tokens(input_ids, special_tokens_mask=special.long(),
                                                       offset_mapping=offsets)
        return {"input_ids": masked, "attention_mask": attention_mask, "labels": labels}
