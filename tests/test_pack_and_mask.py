
import numpy as np
import pytest
import torch

from bioray.constants import IGNORE_INDEX
from bioray.data.masking import mask_batch
from bioray.data.pack import pack_documents, pack_stream

CLS, SEP, MASK = 2, 3, 4


def _stream(documents: list[list[int]]):
    """Documents given as sentence lengths -> the flat arrays the packers take; token i has id 1000 + i."""
    boundaries, doc_starts, position = [], [], 0
    for sentences in documents:
        doc_starts.append(position)
        for n in sentences:
            boundaries.append(position)
            position += n
    ids = np.arange(1000, 1000 + position, dtype=np.int32)
    word_start = (ids % 3 != 0).astype(np.int8)
    return ids, word_start, np.array(boundaries), np.array(doc_starts)


def _real(packed) -> list[int]:
    return [int(t) for row, n in zip(packed["input_ids"], packed["length"]) for t in row[:n] if t not in (CLS, SEP)]


def test_document_packing_fills_sequences_with_consecutive_sentences():
    ids, word_start, boundaries, doc_starts = _stream([[20] * 5])  # one document, 5 x 20 tokens
    packed = pack_documents(ids, word_start, boundaries, doc_starts, 64, CLS, SEP, np.random.default_rng(0))
    # 61 tokens of budget per sequence: 3 sentences (60) then 2 (40)
    assert packed["length"].tolist() == [63, 43]
    first = packed["input_ids"][0]
    assert first[0] == CLS and first[62] == SEP and first[63] == 0
    assert _real(packed) == ids.tolist()  # order kept, nothing lost
    seps = np.flatnonzero(first == SEP)
    assert len(seps) == 2 and (seps[0] - 1) % 20 == 0  # [CLS] A [SEP] B [SEP], A whole sentences
    types = packed["token_type_ids"][0]
    assert (types[: seps[0] + 1] == 0).all() and (types[seps[0] + 1: seps[1] + 1] == 1).all() and types[63] == 0
    assert packed["word_start"][0][0] == 0 and packed["word_start"][0][1:5].tolist() == word_start[:4].tolist()


def test_document_packing_splits_a_long_sentence_and_never_mixes_documents():
    ids, word_start, boundaries, doc_starts = _stream([[150], [10, 10]])
    packed = pack_documents(ids, word_start, boundaries, doc_starts, 64, CLS, SEP, np.random.default_rng(0))
    assert _real(packed) == ids.tolist()  # split, not truncated
    assert (packed["length"] <= 64).all()
    assert packed["doc_index"].tolist() == [0, 0, 0, 1]


def test_next_sentence_pairs_take_a_random_b_from_another_document():
    ids, word_start, boundaries, doc_starts = _stream([[10, 10, 10]] * 40)
    packed = pack_documents(ids, word_start, boundaries, doc_starts, 64, CLS, SEP, np.random.default_rng(0), nsp=True)
    labels = packed["next_sentence_label"]
    assert 0.3 < labels.mean() < 0.7
    for row, doc, label in zip(packed["input_ids"], packed["doc_index"], labels):
        seps = np.flatnonzero(row == SEP)
        b_first = int(row[seps[0] + 1]) - 1000  # stream position of B's first token
        b_doc = int(np.searchsorted(doc_starts, b_first, side="right") - 1)
        assert (b_doc != doc) == bool(label)
        assert b_first in set(boundaries.tolist())  # a random B starts at a sentence


def _batch(n=64, seq_len=128, length=100):
    ids = np.random.default_rng(0).integers(10, 1000, size=(n, seq_len)).astype(np.int32)
    ids[:, 0] = CLS
    ids[:, length - 1] = SEP
    ids[:, length:] = 0
    return {"input_ids": ids, "token_type_ids": np.zeros_like(ids, dtype=np.int8), "length": np.full(n, length)}


def test_masking_rate_specials_and_padding():
    batch = _batch()
    out = mask_batch(batch, 0.15, MASK, 1000, [0, 1, CLS, SEP, MASK], torch.Generator().manual_seed(0))
    chosen = out["labels"] != IGNORE_INDEX
    rate = chosen.sum().item() / (64 * 98)
    assert 0.12 < rate < 0.18
    assert not chosen[:, 0].any() and not chosen[:, 99:].any()  # [CLS], [SEP], padding never chosen
    original = torch.from_numpy(batch["input_ids"].astype(np.int64))
    assert torch.equal(out["labels"][chosen], original[chosen])
    as_mask = (out["input_ids"] == MASK) & chosen
    assert 0.7 < as_mask.sum().item() / chosen.sum().item() < 0.9
    assert out["attention_mask"][:, :100].all() and not out["attention_mask"][:, 100:].any()


def test_masking_is_dynamic():
    batch = _batch()
    generator = torch.Generator().manual_seed(0)
    first = mask_batch(batch, 0.15, MASK, 1000, [CLS, SEP], generator)["labels"]
    second = mask_batch(batch, 0.15, MASK, 1000, [CLS, SEP], generator)["labels"]
    assert not torch.equal(first, second)


def test_masking_accepts_ray_object_columns():
    batch = _batch(n=4)
    batch["input_ids"] = np.array(list(batch["input_ids"]), dtype=object)
    batch["token_type_ids"] = np.array(list(batch["token_type_ids"]), dtype=object)
    out = mask_batch(batch, 0.3, MASK, 1000, [CLS, SEP], torch.Generator().manual_seed(1))
    assert out["input_ids"].shape == (4, 128)


def test_stream_packing_fills_every_position_and_keeps_order():
    ids, word_start, boundaries, doc_starts = _stream([[17, 18, 19, 20]] * 5)  # 5 docs x 4 sentences
    packed = pack_stream(ids, word_start, boundaries, doc_starts, 32, CLS, SEP, np.random.default_rng(0))
    assert (packed["length"][:-1] == 32).all()  # only the last sequence is partial
    assert _real(packed) == ids.tolist()  # nothing lost, nothing repeated, order kept
    sentence_firsts = set(ids[boundaries].tolist())
    for row in packed["input_ids"][:-1]:  # sentences are shorter than a sequence: each full one holds a boundary
        seps = np.flatnonzero(row == SEP)
        assert len(seps) == 2 and int(row[seps[0] + 1]) in sentence_firsts  # B starts a sentence
    owners = packed["doc_index"].tolist()
    assert owners == sorted(owners) and owners[0] == 0 and owners[-1] == 4
    flags = [int(f) for row, n, starts in zip(packed["input_ids"], packed["length"], packed["word_start"])
             for t, f in zip(row[:n], starts[:n]) if t not in (CLS, SEP)]
    assert flags == word_start.tolist()
    assert packed["length"].sum() / packed["length"].size / 32 > 0.97


def test_whole_word_masking_takes_every_piece_of_a_chosen_word():
    batch = _batch(n=256)
    starts = np.random.default_rng(1).random(batch["input_ids"].shape) < 0.6  # words of 1-4 pieces
    starts[:, 1] = True
    batch["word_start"] = starts.astype(np.int8)
    out = mask_batch(batch, 0.15, MASK, 1000, [0, 1, CLS, SEP, MASK], torch.Generator().manual_seed(0), whole_word=True)
    chosen = (out["labels"] != IGNORE_INDEX).numpy()
    word = np.cumsum(batch["word_start"], axis=1)
    real = np.zeros_like(chosen)
    real[:, 1:99] = True  # between [CLS] and [SEP]
    for row in range(0, 256, 17):
        for w in np.unique(word[row][real[row]]):
            pieces = chosen[row][real[row] & (word[row] == w)]
            assert pieces.all() or not pieces.any()  # a word is masked whole or not at all
    assert 0.12 < chosen[real].mean() < 0.18
    assert not chosen[:, 0].any() and not chosen[:, 99:].any()


def test_held_out_documents_are_chosen_by_a_seeded_hash_of_their_id():
    from bioray.data.ingest import seeded_slice

    ids = [f"pmid:{i}" for i in range(20_000)]
    mask = seeded_slice(ids, 0.05, 0, "heldout")
    assert 0.04 < mask.mean() < 0.06  # about the fraction asked for
    assert (seeded_slice(ids[::-1], 0.05, 0, "heldout") == mask[::-1]).all()  # per document, whatever the order
    assert (seeded_slice(ids, 0.05, 1, "heldout") != mask).any()  # another seed, another slice
    assert (seeded_slice(ids, 0.05, 0, "vocab") != mask).any()  # another purpose, another slice
    assert not seeded_slice(ids, 0.0, 0, "heldout").any()
    assert seeded_slice(ids, 1.0, 0, "vocab").all()


def test_unigram_loss_is_the_entropy_of_the_real_non_special_tokens(tmp_path):
    import math

    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from bioray.data.unigram import log_prior, unigram_counts, unigram_loss

    # two sequences: [CLS] 5 5 6 [SEP] pad, [CLS] 7 7 7 [SEP] pad -> tokens 5:2, 6:1, 7:3 (special 1, 2 ignored)
    ids = [[1, 5, 5, 6, 2, 0], [1, 7, 7, 7, 2, 0]]
    pq.write_table(pa.table({"input_ids": pa.FixedSizeListArray.from_arrays(pa.array(sum(ids, [])), 6),
                             "length": [5, 5]}), tmp_path / "part-0.parquet")
    counts = unigram_counts(tmp_path, vocab_size=10, special_ids=[0, 1, 2])
    assert counts.tolist() == [0, 0, 0, 0, 0, 2, 1, 3, 0, 0]
    expected = -sum(p * math.log(p) for p in (2 / 6, 1 / 6, 3 / 6))
    assert unigram_loss(counts) == pytest.approx(expected)
    # as an output bias: a context-blind model's loss on these tokens is about the unigram loss (add-one
    # smoothing over the 10 ids costs a little)
    logits = torch.tensor(log_prior(counts)).expand(6, 10)
    targets = torch.tensor([5, 5, 6, 7, 7, 7])
    smoothed = torch.nn.functional.cross_entropy(logits, targets).item()
    assert expected < smoothed < expected + 0.6
    assert log_prior(counts)[7] > log_prior(counts)[5] > log_prior(counts)[6] > log_prior(counts)[0]


def test_an_empty_held_out_folder_means_no_held_out_evaluation(tmp_path):
    """An incremental run over a few new documents may hold none out: pretraining then skips the
    held-out loss instead of failing on an empty folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bioray.pipeline.stages.tokenize import TokenizeOutput

    output = TokenizeOutput(tmp_path, {})
    assert output.heldout is None  # no folder
    (tmp_path / "heldout").mkdir()
    assert output.heldout is None  # a folder with no shard
    pq.write_table(pa.table({"input_ids": [[2, 5, 3]]}), tmp_path / "heldout" / "part-0.parquet")
    assert output.heldout == tmp_path / "heldout"
