"""The vocab stage is deterministic: the same texts give the same token -> id, and the same documents
give the same sample whatever their Parquet layout."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from bioray.data.vocab import SPECIAL_TOKENS, TextSample, train_wordpiece
from tests.support.data import SAMPLE_DATA

ABSTRACTS = SAMPLE_DATA / "pubmed-raw" / "abstracts_one_per_line" / "PubMedAbstract_300.txt"


def test_training_twice_gives_the_same_token_ids(tmp_path):
    texts = ABSTRACTS.read_text().splitlines()
    # 3,000 pieces from 300 abstracts: the size cut falls among pairs of equal count
    first, second = (train_wordpiece(texts, 3000, lowercase=False, min_frequency=2) for _ in range(2))
    assert len(first) == 3000 and first.get_vocab() == second.get_vocab()
    assert first.convert_ids_to_tokens(list(range(len(SPECIAL_TOKENS)))) == SPECIAL_TOKENS
    assert first.all_special_tokens and set(first.all_special_tokens) <= set(SPECIAL_TOKENS)

    first.save_pretrained(str(tmp_path))
    exported = AutoTokenizer.from_pretrained(str(tmp_path))
    assert exported.get_vocab() == first.get_vocab()
    assert [exported(t)["input_ids"] for t in texts[:20]] == [first(t)["input_ids"] for t in texts[:20]]
    with pytest.raises(TypeError, match="twice"):
        train_wordpiece(iter(texts), 3000, lowercase=False, min_frequency=2)


def _write(table: pa.Table, directory, files: int, row_group_rows: int) -> None:
    directory.mkdir()
    rows = -(-table.num_rows // files)
    for index in range(files):
        pq.write_table(table.slice(index * rows, rows), directory / f"part-{index}.parquet",
                       row_group_size=row_group_rows)


def test_the_sample_does_not_depend_on_the_file_layout(ray_session, tmp_path):
    ids = [f"pmid:{i}" for i in range(3000)]
    documents = pa.table({"doc_id": ids, "source": ["s"] * len(ids), "text": [f"text of {i}" for i in ids]})
    _write(documents, tmp_path / "one", files=1, row_group_rows=3000)
    _write(documents, tmp_path / "many", files=5, row_group_rows=97)

    sample = sorted(TextSample(tmp_path / "one", 300, seed=0))
    assert 220 < len(sample) < 380  # about the size asked for
    assert {int(t.split(":")[1]) // 600 for t in sample} == set(range(5))  # from every file, not the first
    texts = TextSample(tmp_path / "many", 300, seed=0)
    assert sorted(texts) == sorted(texts) == sample  # read once, iterable again (train_wordpiece reads it twice)
    assert sorted(TextSample(tmp_path / "one", 300, seed=1)) != sample
