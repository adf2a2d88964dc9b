"""Vocab and tokenize+pack on a real local Ray, over real corpus documents from ../shared/data."""

import collections
import json

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from transformers import AutoTokenizer

from bioray.config import TokenizeConfig
from bioray.data.tokenize import run_tokenize
from bioray.data.vocab import TextSample


def _rows(directory) -> list[tuple]:
    table = pads.dataset(str(directory), format="parquet").to_table()
    columns = [c for c in ("doc_id", "input_ids", "token_type_ids", "word_start", "length", "next_sentence_label")
               if c in table.column_names]
    rows = zip(*(table.column(c).to_pylist() for c in columns))
    return sorted(tuple(json.dumps(v.tolist() if hasattr(v, "tolist") else v) for v in row) for row in rows)


def test_vocab_trains_on_a_sample_of_the_whole_corpus(small_corpus):
    documents = small_corpus["documents"]
    total = pads.dataset(str(documents), format="parquet").count_rows()
    sample = list(TextSample(documents, 200))
    assert 120 < len(sample) < 280 < total  # about the requested size, not the whole corpus
    tokenizer = AutoTokenizer.from_pretrained(str(small_corpus["tokenizer"]))
    assert 1000 < len(tokenizer) <= 3000 and tokenizer.mask_token == "[MASK]"


def test_stream_packing_keeps_every_token_in_small_shards_deterministically(small_corpus, tmp_path):
    documents, tokenizer_dir = small_corpus["documents"], small_corpus["tokenizer"]
    config = TokenizeConfig(seq_len=64, tokenizer_actors=2, batch_size=50)
    first, second = tmp_path / "first", tmp_path / "second"
    for out in (first, second):
        out.mkdir()
        stats = run_tokenize(config, documents, tokenizer_dir, out)

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    texts = pq.read_table(documents, columns=["text"]).column("text").to_pylist()
    expected = collections.Counter(t for text in texts for t in tokenizer(text, add_special_tokens=False)["input_ids"])

    def tokens(directory):
        table = pads.dataset(str(directory), format="parquet").to_table()
        ids, lengths = np.array(table.column("input_ids").to_pylist()), np.array(table.column("length").to_pylist())
        real = ids[np.arange(64)[None, :] < lengths[:, None]]
        special = (real == tokenizer.cls_token_id) | (real == tokenizer.sep_token_id)
        return collections.Counter(real[~special].tolist()), set(table.column("doc_id").to_pylist()), table, lengths

    trained, trained_docs, table, lengths = tokens(first / "sequences")
    held, held_docs, _, _ = tokens(first / "heldout")  # 1% of the documents, never trained on
    assert trained + held == expected  # nothing lost, nothing repeated
    assert held_docs and not held_docs & trained_docs
    assert (lengths == 64).mean() > 0.95  # every sequence full but each batch's last

    shard_sizes = [pq.read_metadata(f).num_rows for f in (first / "sequences").glob("*.parquet")]
    assert len(shard_sizes) == stats["tokenize/shards"] > 4  # a shard per batch: per row group here
    assert sum(shard_sizes) == stats["tokenize/sequences"] == len(lengths)
    assert (sorted(p.name for p in (first / "sequences").iterdir())
            == sorted(p.name for p in (second / "sequences").iterdir()))
    assert stats["tokenize/tokens"] == lengths.sum() and stats["tokenize/fill_ratio"] > 0.95
    assert _rows(first / "sequences") == _rows(second / "sequences")  # same sequences, whatever the scheduling
    written = json.loads((first / "stats.json").read_text())
    assert set(written["tokens_per_source"]) == {"pmc", "abstracts"}


def test_document_packing_with_next_sentence_pairs(small_corpus, tmp_path):
    config = TokenizeConfig(seq_len=64, packing="document", nsp=True, tokenizer_actors=1)
    stats = run_tokenize(config, small_corpus["documents"], small_corpus["tokenizer"], tmp_path)
    table = pads.dataset(str(tmp_path / "sequences"), format="parquet").to_table()
    labels = np.array(table.column("next_sentence_label").to_pylist())
    has_b = np.array(table.column("token_type_ids").to_pylist()).sum(axis=1) > 0
    assert 0.4 < labels[has_b].mean() < 0.6 and (labels[~has_b] == -100).all()  # half the pairs get a random B
    assert stats["tokenize/fill_ratio"] < 0.99  # whole sentences of one document leave padding


def test_a_checkpoint_tokenizer_that_truncates_and_pads_still_packs_whole_documents(small_corpus, tmp_path):
    """sentence-transformers checkpoints ship tokenizer.json with truncation at 128 and Fixed(128) padding
    (all-MiniLM-L6-v2 does): continued pretraining on them must still see every token, and no [PAD]."""
    documents, tokenizer_dir = small_corpus["documents"], small_corpus["tokenizer"]
    capped = tmp_path / "capped"
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    tokenizer.backend_tokenizer.enable_truncation(max_length=16)
    tokenizer.backend_tokenizer.enable_padding(length=16, pad_id=tokenizer.pad_token_id, pad_token="[PAD]")
    tokenizer.save_pretrained(str(capped))
    assert json.loads((capped / "tokenizer.json").read_text())["truncation"]["max_length"] == 16
    config = TokenizeConfig(seq_len=64, batch_size=50, heldout_fraction=0)
    (tmp_path / "plain").mkdir()
    (tmp_path / "from-capped").mkdir()
    plain = run_tokenize(config, documents, tokenizer_dir, tmp_path / "plain")
    from_capped = run_tokenize(config, documents, capped, tmp_path / "from-capped")
    assert from_capped["tokenize/tokens"] == plain["tokenize/tokens"]
    assert _rows(tmp_path / "from-capped" / "sequences") == _rows(tmp_path / "plain" / "sequences")
