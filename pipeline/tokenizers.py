"""Training a small WordPiece tokenizer locally, and adding special tokens to a model.

Named ``tokenizers.py`` inside the ``pipeline`` package; absolute imports of the Hugging Face
``tokenizers`` library are unaffected (``from __future__ import annotations`` and no implicit
relative imports in Python 3).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _bert_style_tokenizer() -> Tokenizer:
    """An untrained BERT-style WordPiece pipeline.

    No lower-casing or accent stripping: accent stripping runs NFD, which would split Hangul
    syllables into jamo and blow up sequence lengths.
    """
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=True)])
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def train_wordpiece_tokenizer(
    texts: Iterable[str], out_dir: str | os.PathLike, vocab_size: int = 2000
) -> PreTrainedTokenizerFast:
    """Train a WordPiece tokenizer on ``texts`` and save it so ``AutoTokenizer.from_pretrained(out_dir)`` loads it."""
    tok = _bert_style_tokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        # Korean has thousands of distinct syllables; cap the alphabet so sub-words still get room.
        limit_alphabet=max(vocab_size // 2, 100),
        continuing_subword_prefix="##",
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "attention_mask"],
    )
    os.makedirs(out_dir, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast


def add_special_tokens(tokenizer, model, tokens: Iterable[str]) -> int:
    """Add ``tokens`` as special tokens and resize the model's embeddings to match (model may be None
    when the caller resizes a model it loads later).

    Returns how many tokens were new. Resizing is what keeps the new ids inside the embedding matrix.
    """
    # transformers 5 renamed "additional_special_tokens" to "extra_special_tokens".
    added = tokenizer.add_special_tokens(
        {"extra_special_tokens": list(tokens)}, replace_extra_special_tokens=False
    )
    if added and model is not None:
        model.resize_token_embeddings(len(tokenizer))
    return added
