"""Vocab stage: a WordPiece vocabulary trained on a document sample (PubMedBERT-style), or the
vocabulary of an initial checkpoint (BioBERT-style). Output: an HF tokenizer directory.

Same sample and config, same vocabulary, token ids included. The sample is drawn uniformly from the
whole corpus by a seeded hash of each document id (read and sampled in parallel by Ray Data, not
taken from the first files), so it does not depend on the files' layout or on scheduling. The Rust
trainer uses every core of the node it runs on; its ids are made deterministic (train_wordpiece).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
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
from bioray.data.ingest import seeded_slice
from bioray.data.streaming import capped, parquet_dataset

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


class TextSample:
    """About `limit` document texts, the documents whose seeded hash (`seeded_slice`, purpose "vocab")
    falls under limit / corpus size: the same documents whatever the files, row groups, Ray Data
    blocks or workers. Read once, streamed and held by Ray (its object store spills to disk): what it
    holds grows with `limit`, not the corpus. Iterable any number of times, in an order that may
    change between runs (the trainer only counts)."""

    def __init__(self, documents_dir: Path, limit: int, seed: int = 0):
        import ray

        fraction = limit / max(1, parquet_dataset(str(documents_dir)).count_rows())

        def sampled(batch: pa.Table) -> pa.Table:
            chosen = seeded_slice(batch.column("doc_id").to_pylist(), fraction, seed, "vocab")
            return batch.filter(pa.array(chosen)).select(["text"])

        documents = capped(ray.data.read_parquet(str(documents_dir)).select_columns(["doc_id", "text"]))
        self.dataset = documents.map_batches(sampled, batch_format="pyarrow").materialize()

    def __iter__(self) -> Iterator[str]:
        for batch in self.dataset.iter_batches(batch_size=1024, batch_format="pyarrow"):
            yield from batch.column("text").to_pylist()


def _tokenizer(model: models.Model, lowercase: bool) -> Tokenizer:
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase, clean_text=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer


def _train(texts: Iterable[str], size: int, lowercase: bool, min_frequency: int, special: list[str]) -> Tokenizer:
    tokenizer = _tokenizer(models.WordPiece(unk_token="[UNK]"), lowercase)
    trainer = trainers.WordPieceTrainer(vocab_size=size, min_frequency=min_frequency, special_tokens=special,
                                        continuing_subword_prefix="##")
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def train_wordpiece(texts: Iterable[str], size: int, lowercase: bool, min_frequency: int) -> BertTokenizerFast:
    """A WordPiece vocabulary of `size` tokens trained on the texts (a list or another iterable that
    can be iterated twice), the same token -> id on every call. Ids: SPECIAL_TOKENS, the alphabet by
    character, the continuation characters (`##x`) by character, then the learned pieces in the
    trainer's merge order (most frequent pair first, ties by the ids of the pair)."""
    if iter(texts) is texts:
        raise TypeError("train_wordpiece reads the texts twice: pass a list or a re-iterable, not an iterator")
    # The HF trainer numbers the continuation characters in hash-map order, which changes on every call,
    # and breaks ties between equally frequent pairs by those ids: both the ids and, at the size cut,
    # the token set would change. A first pass finds the characters (vocab_size 0: no merges); the
    # second gets them, in the order above, as special tokens, which fixes their ids and so the rest.
    characters = set(_train(texts, 0, lowercase, min_frequency, SPECIAL_TOKENS).get_vocab()) - set(SPECIAL_TOKENS)
    characters = sorted(characters, key=lambda t: (t.startswith("##"), t))
    trained = _train(texts, size, lowercase, min_frequency, SPECIAL_TOKENS + characters)
    # Rebuilt on the trained vocabulary so that only SPECIAL_TOKENS are special (matched in raw text).
    tokenizer = _tokenizer(models.WordPiece(trained.get_vocab(), unk_token="[UNK]"), lowercase)
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return BertTokenizerFast(tokenizer_object=tokenizer, do_lower_case=lowercase, model_max_length=512)


def run_vocab(config: VocabConfig, documents_dir: Path, output: Path, init_checkpoint: Path | None) -> dict:
    if init_checkpoint is not None:
        tokenizer = AutoTokenizer.from_pretrained(str(init_checkpoint))
    else:
        tokenizer = train_wordpiece(TextSample(documents_dir, config.sample_docs, config.seed), config.size,
                                    config.lowercase, config.min_frequency)
    tokenizer.save_pretrained(str(output / "tokenizer"))
    return {"vocab/size": len(tokenizer)}
