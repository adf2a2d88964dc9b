"""`bioray bench finetune`: bioray's NER fine-tuning against a plain HF Trainer, in one run.

Both sides start from the same checkpoint, train on the same NCBI-disease sentences for the same
epochs with the same seed, learning rate, schedule, batch size and torch threads, in this process,
and are scored with the same entity-level F1 on the test set. Parity is measured on the same words:
both sides train on the sentences that fit in max_length sub-tokens (so neither truncation nor windows
come into play) and the parity F1 is over the test sentences that fit; the F1 over all test sentences
is reported beside it (bioray reads long ones in windows, the baseline truncates them).
(a) bioray: the training loop its fine-tuning workers run (`train_epochs`): first-sub-token labels,
    long sentences split into windows, random batches with dynamic padding, the unpadded encoder;
(b) baseline: `Trainer` + `AutoModelForTokenClassification` + `DataCollatorForTokenClassification`
    as HF's run_ner.py example does it (random batches padded to their longest sentence, sentences
    truncated at max_length; words cut off are predicted `O`).
Throughput is training examples (sentences) per second of training, epochs included. F1s and the
per-seed F1 difference come with their standard errors over the seeds.
With workers > 1 each side trains data-parallel on that many processes instead (finetune_workers):
bioray's run_finetune on a group of Ray workers, the Trainer under torchrun, the same global batch.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bioray.config import DatasetConfig, ModelConfig, TrainingConfig
from bioray.constants import IGNORE_INDEX
from bioray.tasks.examples import Sentence
from bioray.tasks.formats.conll import read_conll
from bioray.tasks.ner import NerTask, entity_scores, label_list, predict_tags

# BERT-mini (Turc et al. 2019: 4 layers, 256 hidden) by default; `tiny` is the quickstart's shape.
SHAPES = {"mini": ModelConfig(layers=4, hidden=256, heads=4, intermediate=1024, max_position=512, dropout=0.1),
          "tiny": ModelConfig(layers=2, hidden=128, heads=2, intermediate=512, max_position=512, dropout=0.1)}


def initial_checkpoint(sentences: list[Sentence], directory: Path, seed: int, shape: ModelConfig) -> Path:
    """A tiny BERT with a WordPiece vocabulary of the training text (when no --model is given):
    both sides start from these same weights."""
    from transformers import BertConfig, BertForMaskedLM

    from bioray.data.vocab import train_wordpiece

    tokenizer = train_wordpiece([" ".join(s.words) for s in sentences], 8000, lowercase=False, min_frequency=2)
    torch.manual_seed(seed)
    BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=shape.hidden, num_hidden_layers=shape.layers,
                               num_attention_heads=shape.heads, intermediate_size=shape.intermediate,
                               max_position_embeddings=shape.max_position)).save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory


def bioray_train(model_dir: Path, train, labels, config: TrainingConfig, seed: int) -> tuple:
    """One fine-tune as bioray's fine-tuning workers run it (`train_epochs`), in this process on the CPU, with
    this process's torch threads: (the trained model, its tokenizer, seconds of training alone)."""
    from transformers import AutoTokenizer

    from bioray.model.encoder import apply_fast_path
    from bioray.train.finetune import train_epochs

    task = NerTask(DatasetConfig(name="ncbi-disease", task="ner", train="-", test="-"))
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    torch.manual_seed(seed)
    model = apply_fast_path(task.build_model(str(model_dir), labels), **config.fast.model_switches())
    features = task.encode(train, tokenizer, labels, config.max_length)
    started = time.perf_counter()
    train_epochs(model, task, features, config, random.Random(seed), "cpu", tokenizer.pad_token_id)
    return model, tokenizer, time.perf_counter() - started


def _bioray(model_dir: Path, train, test, labels, config: TrainingConfig, seed: int) -> dict:
    model, tokenizer, seconds = bioray_train(model_dir, train, labels, config, seed)
    return {"seconds": seconds, "predicted": predict_tags(model, tokenizer, test, labels, config.max_length, 64)}


def hf_trainer(model_dir: Path, train, labels, config: TrainingConfig, seed: int, workdir: Path,
               workers: int = 1) -> tuple:
    """The baseline as HF's run_ner.py example fine-tunes (`Trainer` + `AutoModelForTokenClassification`
    + `DataCollatorForTokenClassification`), model loaded and data encoded, not yet trained: (the
    trainer, `encode`: sentences -> (rows, each row's word ids)). With workers > 1 this is one of the
    torchrun processes (bioray.bench.hf_trainer_ddp), each with batch_size / workers sentences per step."""
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    index = {t: i for i, t in enumerate(labels)}

    def encode(sentences: list[Sentence]) -> tuple[list[dict], list[list[int | None]]]:
        rows, word_ids = [], []
        encoded = tokenizer([s.words for s in sentences], is_split_into_words=True, truncation=True,
                            max_length=config.max_length)
        for i, sentence in enumerate(sentences):
            words, previous, tags = encoded.word_ids(i), None, []
            for word in words:  # run_ner.py: the label on a word's first sub-token only
                tags.append(IGNORE_INDEX if word is None or word == previous else index.get(sentence.tags[word], 0))
                previous = word
            rows.append({"input_ids": encoded["input_ids"][i], "attention_mask": encoded["attention_mask"][i],
                         "labels": tags})
            word_ids.append(words)
        return rows, word_ids

    model = AutoModelForTokenClassification.from_pretrained(
        str(model_dir), num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=index)
    arguments = TrainingArguments(
        output_dir=str(workdir), per_device_train_batch_size=config.batch_size // workers,
        num_train_epochs=config.epochs, ddp_backend="gloo" if workers > 1 else None,
        learning_rate=config.lr, warmup_steps=config.warmup_ratio, weight_decay=0.01, max_grad_norm=1.0,
        lr_scheduler_type="linear", seed=seed, use_cpu=True, report_to=[], save_strategy="no",
        logging_strategy="no", dataloader_num_workers=0, disable_tqdm=True)
    trainer = Trainer(model=model, args=arguments, train_dataset=encode(train)[0],
                      data_collator=DataCollatorForTokenClassification(tokenizer))
    return trainer, encode


def trainer_baseline(model_dir: Path, train, test, labels, config: TrainingConfig, seed: int, workdir: Path,
                     workers: int = 1) -> dict:
    """HF's Trainer trained, then its test predictions as entity tags (and its training seconds)."""
    trainer, encode = hf_trainer(model_dir, train, labels, config, seed, workdir, workers)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    test_rows, test_words = encode(test)
    logits = trainer.predict(test_rows).predictions
    predicted = []
    for i, sentence in enumerate(test):
        tags, previous = ["O"] * len(sentence.words), None  # words past the truncation stay O
        for position, word in enumerate(test_words[i]):
            if word is not None and word != previous:
                tags[word] = labels[int(logits[i][position].argmax())]
            previous = word
        predicted.append(tags)
    return {"seconds": seconds, "predicted": predicted}


def _fitting(sentences: list[Sentence], model_dir: Path, max_length: int) -> list[int]:
    """Indices of the sentences whose sub-tokens, with [CLS] and [SEP], fit in max_length."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    encoded = tokenizer([s.words for s in sentences], is_split_into_words=True)
    return [i for i, ids in enumerate(encoded["input_ids"]) if len(ids) <= max_length]


def _scores(side: dict, test: list[Sentence], fitting: list[int]) -> dict:
    """F1 over the test sentences that fit (the parity measure) and over all of them."""
    fit = entity_scores([test[i].tags for i in fitting], [side["predicted"][i] for i in fitting])["f1"]
    timings = {key: value for key, value in side.items() if key.endswith("seconds") or key == "torch_threads"}
    return {**timings, "f1": fit, "f1_all_test": entity_scores([s.tags for s in test], side["predicted"])["f1"]}


def _sides(start: Path, train, test, labels, config: TrainingConfig, seed: int, workdir: Path, shared) -> dict:
    """Both sides in this process, or (shared: a finetune_workers.Session) each on its N workers."""
    if shared is None:
        return {"bioray": _bioray(start, train, test, labels, config, seed),
                "baseline": trainer_baseline(start, train, test, labels, config, seed, workdir / "trainer")}
    from bioray.bench.finetune_workers import baseline_workers, bioray_workers

    return {"bioray": bioray_workers(shared, start, train, test, labels, config, seed, workdir),
            "baseline": baseline_workers(shared, start, train, test, labels, config, seed, workdir)}


def mean_and_se(values: list[float]) -> tuple[float, float | None]:
    """Mean and its standard error, sd / sqrt(n) (None from a single value)."""
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None


def bench_finetune(data: Path, model_dir: Path | None = None, epochs: int = 3, seeds: tuple[int, ...] = (42,),
                   batch_size: int = 32, lr: float = 1e-3, max_length: int = 128, max_train: int | None = None,
                   size: str = "mini", workers: int = 1) -> dict:
    """Both sides once per seed (its own initial weights when no model is given); F1 and examples/s
    are means over the seeds, with standard errors (a single NER run's F1 moves by a point or two
    with the seed). workers > 1: both sides data-parallel on that many processes (finetune_workers),
    batch_size the global batch."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    if workers > 1:
        from bioray.bench.finetune_workers import check_batch, workers_session

        check_batch(batch_size, workers)
    train = read_conll(data / "train.tsv")[:max_train]
    test = read_conll(data / "test.tsv")
    labels = label_list(train)
    config = TrainingConfig(epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length)
    runs = []
    with contextlib.ExitStack() as stack:
        shared = None  # with workers > 1: one Ray and one MLflow store for all seeds
        if workers > 1:
            shared = stack.enter_context(workers_session(
                workers, Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bioray-bench-")))))
        for seed in seeds:
            with tempfile.TemporaryDirectory() as tmp:
                start = model_dir or initial_checkpoint(train, Path(tmp) / "init", seed, SHAPES[size])
                fitting_train = [train[i] for i in _fitting(train, start, max_length)]
                fitting_test = _fitting(test, start, max_length)
                sides = _sides(start, fitting_train, test, labels, config, seed, Path(tmp), shared)
                runs.append({"seed": seed, "train": len(fitting_train), "test_fitting": len(fitting_test),
                             **{name: _scores(side, test, fitting_test) for name, side in sides.items()}})
    examples = statistics.fmean(run["train"] for run in runs) * epochs

    def mean(side: str, key: str) -> float:
        return statistics.fmean(run[side][key] for run in runs)

    ours_f1, ours_se = mean_and_se([run["bioray"]["f1"] for run in runs])
    baseline_f1, baseline_se = mean_and_se([run["baseline"]["f1"] for run in runs])
    difference_se = mean_and_se([100 * (run["bioray"]["f1"] - run["baseline"]["f1"]) for run in runs])[1]
    threads = {"torch_threads": torch.get_num_threads()}
    if shared is not None:  # per process, both sides; what each side's processes reported
        threads = {"torch_threads": shared.threads, "bioray_torch_threads": shared.ray_threads,
                   "baseline_torch_threads": runs[0]["baseline"]["torch_threads"]}
    return {
        "bioray_f1": ours_f1, "baseline_f1": baseline_f1, "f1_difference_points": 100 * (ours_f1 - baseline_f1),
        "bioray_f1_se": ours_se, "baseline_f1_se": baseline_se, "f1_difference_se_points": difference_se,
        "bioray_f1_all_test": mean("bioray", "f1_all_test"), "baseline_f1_all_test": mean("baseline", "f1_all_test"),
        "bioray_examples_per_s": examples / mean("bioray", "seconds"),
        "baseline_examples_per_s": examples / mean("baseline", "seconds"),
        "speedup": mean("baseline", "seconds") / mean("bioray", "seconds"),
        "per_seed": [{"seed": r["seed"], "bioray_f1": r["bioray"]["f1"], "baseline_f1": r["baseline"]["f1"],
                      "bioray_seconds": r["bioray"]["seconds"], "baseline_seconds": r["baseline"]["seconds"],
                      **{f"bioray_{key}": r["bioray"][key] for key in ("wall_seconds", "startup_seconds")
                         if key in r["bioray"]},
                      "train_examples": r["train"], "test_sentences_fitting": r["test_fitting"]} for r in runs],
        "train_sentences": len(train), "test_sentences": len(test), "epochs": epochs, "seeds": list(seeds),
        "batch_size": batch_size, "lr": lr, "max_length": max_length, "workers": workers, **threads,
        "model": str(model_dir) if model_dir else f"random init, {size}: {SHAPES[size].layers} layers, "
                                                  f"hidden {SHAPES[size].hidden}",
    }


def _plus_minus(se: float | None, scale: float = 100) -> str:
    return f" ± {scale * se:.2f}" if se is not None else ""


def render(result: dict) -> str:
    """The result as the table `bioray bench finetune` prints (± : standard errors over the seeds)."""
    fitting = result["per_seed"][0]
    workers = result.get("workers", 1)
    processes = (f"{workers} workers a side (Ray actors; torchrun), {result['torch_threads']} torch threads each"
                 if workers > 1 else f"{result['torch_threads']} torch threads")
    timed = " (training seconds: bioray's epochs, the Trainer's train())" if workers > 1 else ""
    return "\n".join([
        f"{fitting['train_examples']} of {result['train_sentences']} training sentences fit in {result['max_length']} "
        f"sub-tokens (both sides train on them) x {result['epochs']} epochs, seeds "
        f"{','.join(map(str, result['seeds']))}, global batch {result['batch_size']}, {processes}, {result['model']}",
        f"test entity F1 on the {fitting['test_sentences_fitting']} test sentences that fit (parity), and on all "
        f"{result['test_sentences']}:",
        *(f"{side:9s} {100 * result[side + '_f1']:6.2f}{_plus_minus(result.get(side + '_f1_se')):8s}  "
          f"{100 * result[side + '_f1_all_test']:6.2f}   {result[side + '_examples_per_s']:7.1f} examples/s"
          for side in ("bioray", "baseline")),
        f"F1 difference {result['f1_difference_points']:+.2f}{_plus_minus(result.get('f1_difference_se_points'), 1)} "
        f"points (per-seed bioray - baseline), speed-up {result['speedup']:.2f}x{timed}"])
