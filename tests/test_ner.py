
import pytest
from transformers import AutoTokenizer

from bioray.constants import IGNORE_INDEX
from bioray.data.vocab import train_wordpiece
from bioray.tasks.examples import Sentence
from bioray.tasks.formats.conll import read_conll
from bioray.tasks.ner import entity_scores, label_list, make_windows, predict_tags
from tests.support.data import SAMPLE_DATA


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    texts = ["adenomatous polyposis coli tumour suppressor protein", "the APC gene and colorectal cancer"] * 50
    directory = tmp_path_factory.mktemp("tok")
    train_wordpiece(texts, 200, lowercase=False, min_frequency=1).save_pretrained(str(directory))
    return AutoTokenizer.from_pretrained(str(directory))


def test_read_real_ncbi_disease(data_root):
    train = read_conll(data_root / "NCBI-disease/biobert/train.tsv")
    # sentences and mentions: BioBERT's training file (as BLURB counts them), or sample-data's first 1,000
    # sentences (sample-data/PROVENANCE.md)
    expected = (1000, 1004) if data_root == SAMPLE_DATA else (5424, 5134)
    assert (len(train), sum(t == "B" for s in train for t in s.tags)) == expected
    assert label_list(train) == ["O", "B", "I"]


def test_bad_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("word\tO\nbroken-line-without-tab\n")
    with pytest.raises(ValueError, match=r"bad\.tsv:2: expected 'token<TAB>tag'"):
        read_conll(path)


def test_labels_on_first_subtoken_only(tokenizer):
    sentence = Sentence(["adenomatous", "polyposis", "xyzzyq"], ["B", "I", "O"])
    (window,) = make_windows([sentence], tokenizer, {"O": 0, "B": 1, "I": 2}, 64)
    labelled = [(i, label) for i, label in enumerate(window.labels) if label != IGNORE_INDEX]
    assert [label for _, label in labelled] == [1, 2, 0]
    assert [window.word_index[i] for i, _ in labelled] == [0, 1, 2]
    assert window.input_ids[0] == tokenizer.cls_token_id and window.input_ids[-1] == tokenizer.sep_token_id


def test_long_sentence_split_into_windows_never_truncated(tokenizer):
    words = ["adenomatous", "polyposis", "coli", "tumour"] * 30
    sentence = Sentence(words, ["O"] * len(words))
    windows = make_windows([sentence], tokenizer, {"O": 0}, 16)
    assert len(windows) > 1 and all(len(w.input_ids) <= 16 for w in windows)
    covered = sorted(w for window in windows for w in window.word_index if w >= 0)
    assert covered == list(range(len(words)))


def test_entity_f1_exact_match_semantics():
    gold = [["O", "B", "I", "O", "B"]]
    assert entity_scores(gold, gold)["f1"] == 1.0
    partial = [["O", "B", "O", "O", "B"]]  # first entity boundary wrong: 1 of 2 right
    scores = entity_scores(gold, partial)
    assert scores["precision"] == 0.5 and scores["recall"] == 0.5


def test_predict_maps_back_to_words(tokenizer):
    from transformers import BertConfig, BertForTokenClassification

    model = BertForTokenClassification(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                                  num_attention_heads=2, intermediate_size=64, num_labels=3))
    sentences = [Sentence(["adenomatous", "polyposis"] * 20, ["O"] * 40), Sentence(["APC"], ["O"])]
    tags = predict_tags(model, tokenizer, sentences, ["O", "B", "I"], max_length=16, batch_size=4)
    assert [len(t) for t in tags] == [40, 1]
    assert all(t in {"O", "B", "I"} for s in tags for t in s)
