"""Fine-tuning on a worker group of two gives the model one worker gives: the same per-step losses (as
logged to MLflow) and the same weights after an epoch, through the path a fine-tuning stage takes
(`run_finetune` on long-lived Ray actors), on real NCBI-disease sentences with dropout off."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file
from transformers import BertConfig, BertForMaskedLM

from bioray.config import DatasetConfig, TrainingConfig
from bioray.data.vocab import train_wordpiece
from bioray.tasks.formats.conll import read_conll
from bioray.tasks.ner import NerTask
from bioray.tracking.context import RunContext
from bioray.train.finetune import run_finetune
from bioray.train.worker_group import Scaling, WorkerGroup

SENTENCES = 41  # in batches of 8: rows split 4 + 4, and a last batch of one row (worker 2 has none) when
# no sentence is split into windows


@pytest.fixture(scope="module")
def encoder(tmp_path_factory, data_root) -> tuple[Path, list]:
    """A tiny BERT without dropout, its vocabulary from the training sentences."""
    train = read_conll(data_root / "NCBI-disease" / "biobert" / "train.tsv")
    directory = tmp_path_factory.mktemp("encoder")
    tokenizer = train_wordpiece([" ".join(s.words) for s in train[:2000]], 2000, lowercase=False, min_frequency=2)
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=128, max_position_embeddings=128, hidden_dropout_prob=0.0,
                               attention_probs_dropout_prob=0.0)).save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory, train


def _finetune(encoder_dir: Path, sentences: list, tmp: Path, workers: int, group=None) -> tuple[list[float], dict]:
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("t") or client.get_experiment(client.create_experiment("t"))
    run_id = client.create_run(experiment.experiment_id).info.run_id
    task = NerTask(DatasetConfig(name="ncbi-disease", task="ner", train="-", test="-"))
    labels = task.label_list(sentences)
    output = tmp / f"workers-{workers}"
    output.mkdir()
    config = TrainingConfig(epochs=1, lr=1e-3, batch_size=8, max_length=64, num_workers=workers)
    metrics = run_finetune(config, task, {"train": sentences}, labels, 7, encoder_dir=encoder_dir, output=output,
                           context=RunContext(uri, experiment.experiment_id, run_id, run_id), group=group)
    assert metrics["finetune/startup_s"] > 0
    history = sorted(client.get_metric_history(run_id, "finetune/loss"), key=lambda m: m.step)
    return [m.value for m in history], load_file(str(output / "model" / "model.safetensors"))


def test_two_workers_train_the_model_one_worker_trains(ray_session, encoder, tmp_path):
    encoder_dir, train = encoder
    sentences = train[:SENTENCES]
    one_losses, one_weights = _finetune(encoder_dir, sentences, tmp_path, 1)
    group = WorkerGroup(Scaling(2))
    try:
        two_losses, two_weights = _finetune(encoder_dir, sentences, tmp_path, 2, group)
    finally:
        group.shutdown()
    from transformers import AutoTokenizer

    task = NerTask(DatasetConfig(name="ncbi-disease", task="ner", train="-", test="-"))
    features = task.encode(sentences, AutoTokenizer.from_pretrained(str(encoder_dir)), task.label_list(sentences), 64)
    assert len(one_losses) == -(-len(features) // 8)  # every window trained on, no step lost or added
    assert two_losses == pytest.approx(one_losses, rel=1e-4, abs=1e-6)
    assert one_weights.keys() == two_weights.keys()
    for name, weight in one_weights.items():
        assert torch.allclose(two_weights[name], weight, rtol=1e-3, atol=1e-5), name
    embeddings = "bert.embeddings.word_embeddings.weight"
    assert not torch.equal(one_weights[embeddings], load_file(str(encoder_dir / "model.safetensors"))[embeddings])


def test_a_fine_tune_on_two_workers_stops_together_at_its_dev_plateau(ray_session, encoder, tmp_path):
    """patience: rank 0 decides from dev, both ranks stop (a rank that went on would wait forever for the
    other's gradients); the dev-best epoch is kept and the metrics say the plateau was reached."""
    encoder_dir, train = encoder
    task = NerTask(DatasetConfig(name="ncbi-disease", task="ner", train="-", test="-"))
    sentences = train[:16]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("plateau")
    run_id = client.create_run(experiment_id).info.run_id
    # a learning rate too small to change a prediction: dev F1 is flat, so no epoch after the first improves
    config = TrainingConfig(epochs=8, patience=2, lr=1e-12, batch_size=8, max_length=64, num_workers=2)
    group = WorkerGroup(Scaling(2))
    try:
        metrics = run_finetune(config, task, {"train": sentences, "dev": train[16:24]}, task.label_list(train[:24]),
                               7, encoder_dir=encoder_dir, output=tmp_path, context=RunContext(
                                   uri, experiment_id, run_id, run_id), group=group)
    finally:
        group.shutdown()
    assert metrics["finetune/best_epoch"] == 1
    assert (metrics["finetune/epochs_trained"], metrics["finetune/plateau"]) == (3, 1)
