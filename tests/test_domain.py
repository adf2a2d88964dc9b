"""The domain comparison: an arm pretrained on a corpus of its own (general-domain text beside the
biomedical corpus), the domain matrix of held-out masked-LM loss that compares encoders whatever their
vocabularies, and fine-tuning until dev stops improving (patience)."""

from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from bioray.pipeline.inputs import load_checked
from bioray.pipeline.plan import build_plan, compute_keys

GENERAL = {"sources": [{"name": "abstracts", "format": "text", "path": "pubmed-raw/abstracts_one_per_line"}]}


def test_an_arm_with_its_own_corpus_gets_its_own_chain_and_the_matrix_reads_both(write_workflow, quickstart_tree):
    quickstart_tree["encoders"] = [{"name": "random", "source": "random"}, {"name": "scratch"},
                                   {"name": "general-scratch", "corpus": GENERAL}]
    quickstart_tree["evaluate"] = {"heldout_words": 500}
    nodes = {n.name: n for n in build_plan(load_checked(write_workflow(quickstart_tree)))}
    # its own ingest, a vocabulary trained on it with the vocab section's settings, the same recipe and budget
    assert nodes["ingest/general-scratch"].params.sources[0].path == GENERAL["sources"][0]["path"]
    assert nodes["vocab/general-scratch"].inputs == ("ingest/general-scratch",)
    assert nodes["vocab/general-scratch"].params == nodes["vocab"].params
    assert nodes["tokenize/general-scratch"].inputs == ("vocab/general-scratch", "ingest/general-scratch")
    assert nodes["pretrain/general-scratch"].inputs == ("tokenize/general-scratch", "vocab/general-scratch")
    assert nodes["pretrain/general-scratch"].params.steps == nodes["pretrain"].params.steps
    assert nodes["finetune/general-scratch/ncbi-disease/seed-42"].inputs == ("pretrain/general-scratch",)
    # the matrix: every encoder on both corpora, labelled `corpus` (the workflow's) and by the arm
    for arm, source in (("random", "encoder/random"), ("scratch", "pretrain"),
                        ("general-scratch", "pretrain/general-scratch")):
        assert nodes[f"heldout/{arm}"].inputs == (source, "ingest", "ingest/general-scratch")
        assert nodes[f"heldout/{arm}"].params.corpora == ["corpus", "general-scratch"]
    assert len(set(compute_keys(list(nodes.values())).values())) == len(nodes)


def test_an_arm_trained_only_on_its_own_corpus_needs_no_workflow_corpus(write_workflow, quickstart_tree):
    del quickstart_tree["ingest"]
    quickstart_tree["encoders"] = [{"name": "general-scratch", "corpus": GENERAL}]
    names = [n.name for n in build_plan(load_checked(write_workflow(quickstart_tree)))]
    assert "ingest" not in names and "vocab" not in names and "pretrain/general-scratch" in names
    assert not any(n.startswith("heldout/") for n in names)  # heldout_words 0: no matrix


@pytest.mark.parametrize(("arm", "rule"), [
    ({"name": "x", "source": "random", "corpus": GENERAL}, "corpus is the corpus this arm is pretrained on"),
    ({"name": "x", "at_fraction": 0.5, "corpus": GENERAL}, "no corpus of its own"),
])
def test_a_corpus_on_an_arm_that_does_not_pretrain_is_a_config_error(arm, rule):
    from pydantic import ValidationError

    from bioray.config import EncoderConfig

    with pytest.raises(ValidationError, match=rule):
        EncoderConfig.model_validate(arm)


def test_the_matrix_needs_held_out_documents(write_workflow, quickstart_tree):
    from bioray.config import ConfigError

    quickstart_tree["evaluate"] = {"heldout_words": 500}
    quickstart_tree["tokenize"]["heldout_fraction"] = 0
    with pytest.raises(ConfigError, match="needs tokenize.heldout_fraction > 0"):
        load_checked(write_workflow(quickstart_tree))


def _documents(directory, count: int, words: int = 40):
    rng = random.Random(0)
    vocabulary = ["tumour", "necrosis", "factor", "patients", "the", "of", "hepatocellular", "carcinoma", "and",
                  "was", "in", "receptor", "kinase", "inhibitor", "treated", "with"]
    texts = [" ".join(rng.choice(vocabulary) for _ in range(words)) for _ in range(count)]
    directory.mkdir()
    table = pa.table({"doc_id": [f"d{i}" for i in range(count)], "text": texts})
    pq.write_table(table.slice(0, count // 2), directory / "part-0.parquet")  # two files: order must not matter
    pq.write_table(table.slice(count // 2), directory / "part-1.parquet")
    return texts


def _encoder(directory, texts, size: int):
    from bioray.data.vocab import train_wordpiece
    from bioray.model.encoder import build_mlm_model

    tokenizer = train_wordpiece(texts, size, lowercase=True, min_frequency=1)
    torch.manual_seed(0)
    build_mlm_model(len(tokenizer), tokenizer.pad_token_id, layers=1, hidden=32, heads=2, intermediate=64,
                    max_position=64).save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory


def test_held_out_words_are_the_same_for_every_vocabulary_and_bounded_by_the_budget(tmp_path):
    from bioray.data.ingest import seeded_slice
    from bioray.train.heldout_mlm import heldout_documents, score

    texts = _documents(tmp_path / "documents", 400)
    documents = heldout_documents(tmp_path / "documents", 0.2, 0, words=600)
    held = {f"d{i}" for i, chosen in enumerate(seeded_slice([f"d{i}" for i in range(400)], 0.2, 0, "heldout"))
            if chosen}
    assert {doc_id for doc_id, _ in documents} <= held  # only documents pretraining never saw
    assert 600 <= sum(len(words) for _, words in documents) < 640  # the budget, and no more than one document over
    assert documents == heldout_documents(tmp_path / "documents", 0.2, 0, words=600)  # seeded, whatever the files
    # a small vocabulary cuts words into more pieces; both encoders predict the same masked words
    fine = score(_encoder(tmp_path / "fine", texts, 60), {"bio": documents}, seq_len=32)["bio"]
    coarse = score(_encoder(tmp_path / "coarse", texts, 200), {"bio": documents}, seq_len=32)["bio"]
    assert fine["masked_words"] == coarse["masked_words"] > 0 and fine["words"] == coarse["words"]
    assert fine["subwords_per_word"] > coarse["subwords_per_word"] >= 1.0
    # a word's loss is the sum of its pieces': per word above per piece where words have several pieces
    assert fine["loss_per_word"] > fine["loss_per_piece"]
    assert coarse["loss_per_word"] == pytest.approx(coarse["loss_per_piece"] * coarse["subwords_per_word"], rel=0.2)


def test_fine_tuning_stops_when_every_rank_is_told_dev_stopped_improving():
    """train_epochs asks rank 0 after each epoch; the decision is everyone's (here one process)."""
    from bioray.config import TrainingConfig
    from bioray.train.finetune import train_epochs

    class Task:
        def collate(self, rows, pad_id):
            return {"x": torch.stack([r for r in rows])}

        def loss_terms(self, batch):
            return len(batch["x"])

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            return type("Out", (), {"loss": (self.weight * x).pow(2).mean()})()

    epochs = []
    metrics = train_epochs(Model(), Task(), [torch.ones(1)] * 8, TrainingConfig(epochs=10, batch_size=4),
                           random.Random(0), "cpu", 0, lambda epoch, step, loss: epochs.append(epoch) or {"e": epoch},
                           should_stop=lambda: len(epochs) >= 3)
    assert epochs == [0, 1, 2] and metrics == {"e": 2}


def test_the_general_arm_of_the_bench_needs_its_corpus_in_the_workflow(tmp_path):
    from bioray.bench.quality import _general_corpus

    with pytest.raises(ValueError, match="has no `encoders` entry named general-scratch with a `corpus`"):
        _general_corpus({"encoders": [{"name": "scratch"}]}, tmp_path / "miniature.yaml")
    corpus = {"sources": [{"name": "wiki", "format": "jsonl", "path": "w"}]}
    assert _general_corpus({"encoders": [{"name": "general-scratch", "corpus": corpus}]}, tmp_path) == corpus
