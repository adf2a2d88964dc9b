"""The documents Parquet as row-group units: every document in exactly one unit, read back whole."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from bioray.data.row_groups import batches, read_unit, row_group_units


def _documents(n: int, first: int = 0) -> pa.Table:
    return pa.table({"doc_id": [f"d{i}" for i in range(first, first + n)], "source": ["s"] * n,
                     "text": [f"text {i}" for i in range(first, first + n)],
                     "sentence_starts": [[0]] * n, "is_new": [i % 3 == 0 for i in range(first, first + n)]})


def test_units_cover_every_row_group_once_and_read_back_whole(tmp_path):
    pq.write_table(_documents(10), tmp_path / "part-00000.parquet", row_group_size=4)  # groups of 4, 4, 2
    (tmp_path / "sub").mkdir()
    pq.write_table(_documents(3, first=10), tmp_path / "sub" / "part-00001.parquet")
    pq.write_table(_documents(5, first=99), tmp_path / ".part-00002.parquet.123.tmp.parquet")  # a writer's temp
    (tmp_path / "_scratch").mkdir()
    pq.write_table(_documents(5, first=99), tmp_path / "_scratch" / "x.parquet")  # not a reader's file

    units = row_group_units(tmp_path)
    assert [(u["row_group"], u["rows"]) for u in units] == [(0, 4), (1, 4), (2, 2), (0, 3)]
    ids = [i for u in units for i in read_unit(u).column("doc_id").to_pylist()]
    assert ids == [f"d{i}" for i in range(13)]  # each once, in file order
    assert read_unit(units[0]).column_names == ["doc_id", "source", "text", "sentence_starts"]

    new = [i for u in units for i in read_unit(u, only_new=True).column("doc_id").to_pylist()]
    assert new == [f"d{i}" for i in range(13) if i % 3 == 0]
    assert "is_new" not in read_unit(units[0], only_new=True).column_names


def test_a_single_file_is_its_own_units_and_batches_cut_it_in_order(tmp_path):
    path = tmp_path / "documents.parquet"
    pq.write_table(_documents(7), path)
    (unit,) = row_group_units(path)
    sizes = [b.num_rows for b in batches(read_unit(unit), 3)]
    assert sizes == [3, 3, 1]
    assert [b.column("doc_id")[0].as_py() for b in batches(read_unit(unit), 3)] == ["d0", "d3", "d6"]


def test_batches_are_bounded_by_text_bytes_as_well_as_rows():
    texts = ["a" * 10, "b" * 10, "c" * 100, "d" * 10, "e" * 10, "f" * 10, "g" * 10]
    table = pa.table({"doc_id": [str(i) for i in range(7)], "text": texts})
    cut = [b.column("doc_id").to_pylist() for b in batches(table, 3, text_bytes=25)]
    # two short ones fit in 25 bytes; the long one is a batch of its own; then at most 3 rows
    assert cut == [["0", "1"], ["2"], ["3", "4"], ["5", "6"]]
    assert [b.num_rows for b in batches(table, 3)] == [3, 3, 1]  # rows only, without a text bound
    assert [b.num_rows for b in batches(table, 3, text_bytes=10**6)] == [3, 3, 1]


def test_ingest_writes_row_groups_bounded_by_text_bytes(tmp_path):
    from bioray.data.ingest import _write_atomically
    from bioray.data.row_groups import ROW_GROUP_TEXT_BYTES

    long_text = "x" * (ROW_GROUP_TEXT_BYTES * 3 // 8)  # full-text articles: two fit in a row group, not three
    tables = [pa.table({"doc_id": [f"d{i}" for i in range(first, first + 5)], "text": [long_text] * 5})
              for first in (0, 5)]
    assert _write_atomically(tables, tmp_path / "part.parquet") == 10
    metadata = pq.read_metadata(tmp_path / "part.parquet")
    # regrouped across the two tables: as full as the text bound allows
    assert [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)] == [2, 2, 2, 2, 2]
    units = row_group_units(tmp_path)
    assert [i for u in units for i in read_unit(u, columns=["doc_id"]).column("doc_id").to_pylist()] == [
        f"d{i}" for i in range(10)]


def test_ingest_writes_small_tables_as_full_row_groups(tmp_path, monkeypatch):
    """One bucket's share of each parse chunk is a small table; the files (and tokenize's units) still
    get full row groups, in the order the rows came."""
    from bioray.data import ingest

    monkeypatch.setattr(ingest, "ROW_GROUP_ROWS", 8)
    tables = [pa.table({"doc_id": [f"d{i}" for i in range(first, first + 3)], "text": ["t"] * 3})
              for first in range(0, 30, 3)] + [pa.table({"doc_id": pa.array([], pa.string()), "text": []})]
    assert ingest._write_atomically(tables, tmp_path / "part.parquet") == 30
    metadata = pq.read_metadata(tmp_path / "part.parquet")
    assert [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)] == [8, 8, 8, 6]
    assert pq.read_table(tmp_path / "part.parquet").column("doc_id").to_pylist() == [f"d{i}" for i in range(30)]
