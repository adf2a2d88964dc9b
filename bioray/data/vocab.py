"""Vocab stage: a WordPiece vocabulary trained on a document sample (PubMedBERT-style), or the
vocabulary of an initial checkpoint (BioBERT-style). Output: an HF tokenizer directory.

The sample is drawn uniformly from the whole corpus by Ray Data (read and sampled in parallel,
streamed to the trainer), not taken from the first files; the Rust trainer uses every core of
the node it runs on.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import AutoTokenizer, BertTokenizerFast

from bioray.config import VocabConfig
from bioray.data.streaming import parquet_dataset

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def sample_texts(documents_dir: Path, limit: int, seed: int = 0):
    """About `limit` document texts, a uniform random sample of the documents Parquet, streamed."""
    import ray

    total = parquet_dataset(str(documents_dir)).count_rows()
    documents = ray.data.read_parquet(str(documents_dir)).select_columns(["text"])
    if limit < total:
        documents = documents.random_sample(limit / total, seed=seed)
    for batch in documents.iter_batches(batch_size=1024, batch_format="pyarrow"):
        yield from batch.column("text").to_pylist()


def train_wordpiece(texts, size: int, lowercase: bool, min_frequency: int) -> BertTokenizerFast:
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase, clean_text=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(vocab_size=size, min_frequency=min_frequency,
                                        special_tokens=SPECIAL_TOKENS, continuing_subword_prefix="##")
    tokenizer.train_from_iterator(texts, trainer=trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return BertTokenizerFast(tokenizer_object=tokenizer, do_lower_case=lowercase, model_max_length=512)


def run_vocab(config: VocabConfig, documents_dir: Path, output: Path, init_checkpoint: Path | None) -> dict:
    if init_checkpoint is not None:
        tokenizer = AutoTokenizer.from_pretrained(str(init_checkpoint))
    else:
        tokenizer = train_wordpiece(sample_texts(documents_dir, config.sample_docs), config.size,
                                    config.lowercase, config.min_frequency)
    tokenizer.save_pretrained(str(output / "tokenizer"))
    return {"vocab/size": len(tokenizer)}
