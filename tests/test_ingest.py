"""Ingest's shuffle layout and key functions, without Ray: files sorted by bucket, read by their footers."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bioray.data import ingest


def _chunk(first: int, rows: int, buckets: int) -> pa.Table:
    ids = list(range(first, first + rows))
    return pa.table({"doc_id": [f"d{i}" for i in ids], "text": [f"text {i}" for i in ids],
                     "bucket": pa.array([i * 7 % buckets for i in ids], pa.int64())})


def test_a_streamed_file_is_written_sorted_by_bucket_one_bucket_per_row_group(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "ROW_GROUP_ROWS", 8)  # several row groups per bucket
    chunks = [_chunk(first, 50, 5) for first in range(0, 200, 50)]  # four chunks: the merge path
    ingest._write_sorted(iter(chunks), tmp_path / "00000000.parquet")

    assert [p.name for p in tmp_path.iterdir()] == ["00000000.parquet"]  # the runs file is gone
    metadata = pq.read_metadata(tmp_path / "00000000.parquet")
    keys = ingest._row_group_keys(metadata, "bucket")
    assert list(keys) == sorted(keys) and metadata.num_row_groups > 5
    assert max(metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)) <= 8
    for bucket in range(5):
        got = ingest._table_of([str(tmp_path / "00000000.parquet")], bucket, ["doc_id", "bucket"])
        assert set(got.column("bucket").to_pylist()) == {bucket}
        # a bucket's rows in the order they came, across chunks
        assert got.column("doc_id").to_pylist() == [f"d{i}" for i in range(200) if i * 7 % 5 == bucket]
    assert ingest._table_of([str(tmp_path / "00000000.parquet")], 9, ["doc_id"]) is None


def test_a_scratch_file_with_mixed_row_groups_is_refused_clearly(tmp_path):
    pq.write_table(_chunk(0, 10, 3), tmp_path / "mixed.parquet")  # not sorted: row groups hold several buckets
    with pytest.raises(ValueError, match="more than one bucket"):
        list(ingest._tables_of([str(tmp_path / "mixed.parquet")], 0, ["doc_id"]))


def _keys(rows: list[tuple]) -> pa.Table:
    """Key rows (doc_key_hi, doc_key_lo, file_rank, record, version, deleted)."""
    columns = list(zip(*rows))
    names = ["doc_key_hi", "doc_key_lo", "file_rank", "record", "version", "deleted"]
    return pa.table({name: pa.array(values, pa.bool_() if name == "deleted" else pa.int64())
                     for name, values in zip(names, columns)})


def test_latest_versions_by_full_128_bit_id_key():
    keys = _keys([(1, 5, 0, 0, 1, False), (1, 5, 1, 0, 1, False),  # a later file wins
                  (1, 6, 0, 1, 1, False),  # same high half, another id: its own document
                  (2, 0, 0, 2, 2, False), (2, 0, 0, 3, 1, False),  # same file: the higher version wins
                  (3, 0, 0, 4, 1, False), (3, 0, 1, 1, 1, True)])  # deleted by a later file
    assert sorted(ingest.latest_versions(keys).tolist()) == [1, 2, 3]


def test_unique_texts_keeps_the_smallest_id_and_compares_the_whole_text_key():
    candidates = pa.table({"doc_id": ["b", "a", "c", "d"], "text_key_hi": [7, 7, 7, -1],
                           "text_key_lo": [1, 1, 2, 1], "file_rank": [0, 1, 2, 3], "record": [0, 0, 0, 0]})
    kept = ingest.unique_texts(candidates)
    assert sorted(kept.column("doc_id").to_pylist()) == ["a", "c", "d"]  # c: equal high half, another text


def test_keys_are_fixed_width_and_fold_case_and_whitespace():
    assert ingest.text_key("Aspirin  lowers\nFEVER.") == ingest.text_key("aspirin lowers fever.")
    assert ingest.text_key("Aspirin lowers fever.") != ingest.text_key("Aspirin lowers fever!")
    hi, lo = ingest.key128("pmid:1")
    assert all(-2**63 <= half < 2**63 for half in (hi, lo))
    # one bucket function for a key and an array of keys
    his = np.array([hi, -1, 2**62], dtype=np.int64)
    assert ingest.bucket_of(his, 16).tolist() == [int(ingest.bucket_of(h, 16)) for h in his.tolist()]
    assert int(ingest.bucket_of(-1, 16)) == (2**64 - 1) % 16
