"""Typed workflow configuration: YAML in, validated pydantic models out, clear errors naming the key.

The schema and its loading only (a leaf: it imports nothing of bioray but the workdir paths); what a
workflow's input files hold is checked by bioray.pipeline.inputs. Both run before any Ray or MLflow
resource starts, so a bad workflow fails in about a second.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import types
import typing
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from bioray.constants import MLFLOW_URI_PREFIXES
from bioray.workdir import Workdir


class ConfigError(ValueError):
    """A workflow file that cannot be used; the message names the key or file."""


# --- names that become paths, run names or registry names ---------------------------------------

NAME_RULE = ("1-64 characters from A-Z a-z 0-9 . _ -, starting with a letter or a digit, without '..' "
             "(no path separators, control characters or leading dots)")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _check_name(value: str) -> str:
    if not _NAME.fullmatch(value) or ".." in value:
        raise ValueError(f"not a valid name: {NAME_RULE}")
    return value


def _check_alias(value: str) -> str:
    """MLflow's alias rule on top of bioray's: no dots, not `latest`, not `v<digits>` (a version)."""
    _check_name(value)
    if "." in value or value.lower() == "latest" or re.fullmatch(r"[vV]\d+", value):
        raise ValueError("not a valid alias: letters, digits, _ and -; not 'latest' or v<number> (MLflow's rule)")
    return value


def _check_rates(value: float | list[float]) -> float | list[float]:
    if isinstance(value, list):
        if not value or len(set(value)) != len(value):
            raise ValueError("a learning-rate grid lists distinct values (at least one)")
    elif value <= 0:
        raise ValueError("a learning rate is positive")
    return value


Name = Annotated[str, AfterValidator(_check_name)]  # a workflow value that becomes a path or an MLflow name
Alias = Annotated[str, AfterValidator(_check_alias)]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --- one section per stage --------------------------------------------------------------------


class SourceConfig(Section):
    """One raw input of the ingest stage."""

    name: Name = Field(description="Short source name stored with every document and in metric names (e.g. 'pubmed').")
    format: Literal["text", "jsonl", "medline", "pmc"] = Field(
        description="text: one document per line; jsonl: JSON Lines (.jsonl/.jsonl.gz); "
        "medline: PubMed XML (.xml/.xml.gz); pmc: PMC JATS (.nxml/.xml)."
    )
    path: str = Field(description="A file, a directory (all matching files inside) or a glob, under data_root.")
    text_field: str = Field("text", description="jsonl only: the field holding the text.")
    id_field: str = Field("id", description="jsonl only: the field holding the document id.")
    documents: Literal["line", "blank_line"] = Field(
        "line", description="text only: one document per line, or per blank-line separated block.")
    max_docs: int | None = Field(None, ge=1, description="Read at most this many documents of each of its files "
                                  "(toy runs).")


class IngestConfig(Section):
    """Raw files -> documents Parquet (deduplicated, sentence-split)."""

    sources: list[SourceConfig] = Field(min_length=1, description="The raw inputs.")
    min_chars: int = Field(20, ge=0, description="Documents with fewer characters are dropped.")

    @model_validator(mode="after")
    def _names_unique(self) -> IngestConfig:
        _unique([s.name for s in self.sources], "ingest.sources", "name")
        return self


def _unique(names: list[str], where: str, key: str) -> None:
    """Names are unique, ignoring case: they become paths, and some filesystems ignore case."""
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name.lower() in seen:
            raise ValueError(f"{where}[{index}].{key}: {name!r} is used twice (also {where}[{seen[name.lower()]}], "
                             "names are compared ignoring case)")
        seen[name.lower()] = index


class VocabConfig(Section):
    """WordPiece vocabulary: trained on the corpus, or taken from an initial checkpoint."""

    size: int = Field(30522, ge=100, description="Vocabulary size to train.")
    lowercase: bool = Field(False, description="Uncased vocabulary (lower-case and strip accents).")
    sample_docs: int = Field(100_000, ge=1, description="Train on about this many documents, sampled uniformly from "
                                                        "the corpus.")
    min_frequency: int = Field(2, ge=1, description="Minimum count of a WordPiece to enter the vocabulary.")
    seed: int = Field(0, description="Seed of the document sample (a seeded hash of each document id).")
    init_checkpoint: str | None = Field(
        None, description="HF checkpoint directory whose vocabulary is reused (BioBERT-style); skips training."
    )


class TokenizeConfig(Section):
    """Documents -> packed token sequences in Parquet shards."""

    seq_len: int = Field(128, ge=16, le=8192, description="Tokens per packed sequence, [CLS] and [SEP] included.")
    long_seq_len: int | None = Field(
        None, ge=16, le=8192, description="Also pack the same tokens into sequences of this length (e.g. 512), "
        "for pretraining's long phase; written beside the first set, tokenized once.")
    packing: Literal["stream", "document"] = Field(
        "stream", description="stream: documents back to back, every position filled (MosaicBERT); "
        "document: whole sentences of one document per sequence (BERT).")
    tokenizer_actors: int = Field(1, ge=1, description="Ray Data actors holding a tokenizer, one CPU each "
                                  "(no more than the cluster's CPUs).")
    nsp: bool = Field(False, description="Next-sentence-prediction pairs: half the B segments taken from another "
                      "document (`next_sentence_label` column); needs packing: document.")
    batch_size: int = Field(1024, ge=1, description="Documents per tokenizer batch (cut from one row group of the "
                                                    "documents); each batch becomes one Parquet shard.")
    documents: Literal["all", "new"] = Field(
        "all", description="all: every ingested document; new: only those from the files the ingest run parsed "
        "(scheduled re-pretraining on new literature).")
    seed: int = Field(0, description="Seed for the A/B split points and of the held-out documents.")
    heldout_fraction: float = Field(
        0.01, ge=0, lt=0.5, description="Fraction of documents held out of pretraining (chosen by a seeded hash of "
        "the document id) for its held-out MLM loss; 0 = none.")

    @model_validator(mode="after")
    def _nsp_needs_documents(self) -> TokenizeConfig:
        if self.nsp and self.packing != "document":
            raise ValueError("tokenize.nsp: next-sentence pairs need `packing: document` (a streamed B may "
                             "continue A across a document boundary, so its label would be wrong)")
        if self.long_seq_len is not None and self.long_seq_len <= self.seq_len:
            raise ValueError(f"tokenize.long_seq_len ({self.long_seq_len}) must be longer than tokenize.seq_len "
                             f"({self.seq_len})")
        return self

    @property
    def seq_lens(self) -> list[int]:
        return [self.seq_len] + ([self.long_seq_len] if self.long_seq_len else [])


class ModelConfig(Section):
    """BERT encoder shape (ignored when pretrain.init_checkpoint is set)."""

    layers: int = Field(12, ge=1, description="Transformer layers.")
    hidden: int = Field(768, ge=8, description="Hidden size.")
    heads: int = Field(12, ge=1, description="Attention heads (must divide hidden).")
    intermediate: int = Field(3072, ge=8, description="Feed-forward size.")
    max_position: int = Field(512, ge=16, description="Maximum sequence length the model supports.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Hidden and attention dropout.")

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ModelConfig:
        if self.hidden % self.heads:
            raise ValueError(f"model.hidden ({self.hidden}) must be divisible by model.heads ({self.heads})")
        return self


class FastPathConfig(Section):
    """The GPU fast path, switch by switch. Each switch has a CPU form (or falls back on CPU with a
    log line), so one workflow runs on a laptop and on GPU nodes."""

    attention: Literal["sdpa", "flash_varlen"] = Field(
        "sdpa", description="sdpa: torch scaled_dot_product_attention (flash / memory-efficient kernels on GPU, "
        "math on CPU); flash_varlen: flash-attn's variable-length kernel on the unpadded tokens (GPU, bf16, "
        "flash-attn installed; otherwise SDPA, with a log line).")
    unpad: bool = Field(True, description="Drop padding before the encoder: every layer computes on real tokens "
                        "only (varlen attention), nothing is spent on padding.")
    compile: bool = Field(False, description="torch.compile each layer's dense blocks (bias+GELU, "
                          "dropout+residual+LayerNorm fuse); pays on GPU, on CPU compile time dominates short runs.")
    fused_optimizer: bool = Field(True, description="torch's fused AdamW (one kernel for all parameters, CPU "
                                  "and GPU); DeepSpeed FusedLamb for LAMB on GPU.")

    def model_switches(self) -> dict:
        """The switches that change the model instance (bioray.model.encoder.apply_fast_path)."""
        return {"unpad": self.unpad, "attention": self.attention, "compile": self.compile}


class PretrainFastPathConfig(FastPathConfig):
    """Pretraining's fast path: the switches every training loop has, and two of its own."""

    masked_only_decoder: bool = Field(True, description="The MLM decoder (hidden x vocabulary) only on masked "
                                      "positions, not on every token.")
    reduce_once_per_step: bool = Field(True, description="With gradient accumulation: all-reduce "
                                       "gradients once per optimizer step, not per micro-batch. ZeRO-2 "
                                       "reduce-scatters every micro-batch, so with accumulation > 1 it runs as "
                                       "ZeRO-1 (optimizer states still partitioned); ZeRO-3 must reduce per "
                                       "micro-batch and is left as it is.")

    def loss_switches(self) -> dict:
        """The switches of the pretraining loss (bioray.model.encoder.pretraining_loss)."""
        return {"unpad": self.unpad, "attention": self.attention, "masked_only_decoder": self.masked_only_decoder}


class PretrainConfig(Section):
    """Masked-language-model pretraining with Ray Train + DeepSpeed."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="Encoder shape.")
    init_checkpoint: str | None = Field(None, description="HF checkpoint directory to continue pretraining from.")
    num_workers: int = Field(2, ge=1, description="Ray Train workers.")
    min_workers: int | None = Field(
        None, ge=1, description="Elastic continuation: when workers are lost for good (a node gone), continue from "
        "the last checkpoint on the workers Ray can still place, down to this many, with the same global batch (more "
        "accumulation); Ray grows the group back when resources return. Default num_workers (not elastic).")
    cpus_per_worker: int = Field(1, ge=1, description="CPUs Ray reserves for each training worker (CPU runs; "
                                 "a GPU run reserves one GPU each).")
    use_gpu: bool = Field(False, description="One GPU per worker, NCCL, bf16-capable.")
    deterministic: bool = Field(False, description="Deterministic kernels on GPU (torch's deterministic algorithms, "
                                "cuBLAS's fixed workspace, flash-attn's deterministic backward): the same run twice "
                                "gives the same weights, at some speed; CPU runs are deterministic without it.")
    steps: int = Field(1000, ge=1, description="Optimizer steps.")
    global_batch_size: int = Field(256, ge=1, description="Sequences per optimizer step, all workers together.")
    micro_batch_size: int = Field(32, ge=1, description="Sequences per worker per forward pass.")
    long_phase_fraction: float = Field(
        0.0, ge=0, lt=1, description="Last fraction of the steps trained on tokenize.long_seq_len sequences "
        "(BERT/BioBERT: 0.1 at 512 after 0.9 at 128); 0 = one phase.")
    long_micro_batch_size: int | None = Field(
        None, ge=1, description="Micro-batch size in the long phase (default micro_batch_size); the global batch "
        "stays the same, so gradient accumulation grows instead.")
    nsp: bool = Field(False, description="Next-sentence-prediction head and loss beside MLM (needs tokenize.nsp).")
    lr: float = Field(1e-4, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    optimizer: Literal["adamw", "lamb"] = Field("adamw", description="AdamW (fused on GPU) or LAMB (large batches).")
    warmup_steps: int = Field(100, ge=0, description="Linear warmup steps, then decay to 0 at the last step.")
    decay_power: float = Field(1.0, gt=0, description="Decay after warmup: 1 = linear, other values polynomial (BERT "
                                                      "used 1).")
    grad_clip: float = Field(1.0, ge=0, description="Gradient norm clipping (0 = off).")
    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage.")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="Training precision.")
    fast: PretrainFastPathConfig = Field(default_factory=PretrainFastPathConfig,
                                         description="Fast-path switches.")
    mask_rate: float = Field(0.15, gt=0, lt=1, description="Fraction of tokens masked (80/10/10); MosaicBERT used 0.3.")
    output_bias_init: Literal["zero", "unigram"] = Field(
        "zero", description="unigram: the MLM output bias starts at each token's log frequency in the training "
        "shards, so the encoder predicts the unigram distribution from step 0 and spends its steps on the context "
        "(Adam moves a bias by about lr per step: reaching log frequencies that span ~10 nats takes thousands of "
        "steps otherwise). Applies from scratch and to a checkpoint without an MLM head.")
    whole_word_masking: bool = Field(False, description="Mask all pieces of a chosen word (uses the word_start flags).")
    log_every: int = Field(10, ge=1, description="Log metrics every N steps.")
    export_steps: list[int] = Field(default_factory=list, description="Also export the encoder as it is at these "
                                    "steps (`model-step-<n>/` beside `model/`): points of a learning curve.")
    eval_every: int = Field(100, ge=1, description="Held-out MLM loss and accuracy every N steps and at the end "
                            "(on the tokenize stage's held-out documents, when there are any).")
    eval_sequences: int = Field(512, ge=1, description="Held-out sequences evaluated each time (the same ones, "
                                "with the same masks, every time).")
    checkpoint_every: int = Field(500, ge=1, description="Checkpoint (every rank's DeepSpeed state) every N steps, "
                                                         "and at the end.")
    keep_checkpoints: int = Field(3, ge=1, description="Keep the last K checkpoints in Ray Train storage.")
    max_failures: int = Field(3, ge=-1, description="Worker crashes (a killed process, a lost node) survived by "
                              "restarting from the last checkpoint (-1: no limit); an exception of the training code "
                              "before an attempt's first step, or the same one at the same step on two attempts in a "
                              "row, fails the stage at once.")
    preemption_grace_s: float = Field(30.0, gt=0, description="On SIGTERM to `bioray run`: seconds it waits for "
                                      "the workers to checkpoint the current step before it exits (75).")
    shuffle_buffer: int = Field(10_000, ge=1, description="Sequences in each worker's local shuffle buffer.")
    seed: int = Field(0, description="Random seed.")

    @model_validator(mode="after")
    def _batch_splits(self) -> PretrainConfig:
        if self.min_workers is not None and self.min_workers > self.num_workers:
            raise ValueError(f"pretrain.min_workers ({self.min_workers}) must be at most pretrain.num_workers "
                             f"({self.num_workers})")
        if self.elastic and self.zero_stage == 3:
            raise ValueError("pretrain.min_workers below num_workers needs zero_stage 0, 1 or 2 (a ZeRO-3 "
                             "checkpoint is not continued on another number of workers)")
        for workers in range(self.min_workers or self.num_workers, self.num_workers + 1):  # every size it may run at
            for key, micro in (("micro_batch_size", self.micro_batch_size), ("long_micro_batch_size", self.long_micro)):
                per_step = workers * micro
                if self.global_batch_size % per_step:
                    what = "num_workers" if workers == self.num_workers else f"{workers} workers (min_workers..)"
                    raise ValueError(
                        f"pretrain.global_batch_size ({self.global_batch_size}) must be a multiple of "
                        f"{what} x {key} ({workers} x {micro} = {per_step})"
                    )
        if self.long_phase_fraction and not self.long_steps:
            raise ValueError(f"pretrain.long_phase_fraction ({self.long_phase_fraction}) of {self.steps} steps "
                             "is less than one step")
        return self

    @property
    def elastic(self) -> bool:
        """Whether the run may continue on fewer workers than num_workers."""
        return self.min_workers is not None and self.min_workers < self.num_workers

    @property
    def long_micro(self) -> int:
        return self.long_micro_batch_size or self.micro_batch_size

    @property
    def long_steps(self) -> int:
        """Steps of the long phase (the last ones)."""
        return round(self.steps * self.long_phase_fraction)

    @property
    def grad_accum_steps(self) -> int:
        return self.global_batch_size // (self.num_workers * self.micro_batch_size)

    @property
    def effective_zero_stage(self) -> int:
        """The ZeRO stage the engine runs: ZeRO-2 becomes ZeRO-1 when fast.reduce_once_per_step is on and
        some phase accumulates gradients (ZeRO-2 would reduce-scatter every micro-batch)."""
        accumulates = min(self.micro_batch_size, self.long_micro) * self.num_workers < self.global_batch_size
        if self.zero_stage == 2 and self.fast.reduce_once_per_step and accumulates:
            return 1
        return self.zero_stage


class DatasetConfig(Section):
    """One downstream dataset: an entry (task type + format + files + label scheme), so a
    new dataset in a known format needs no code. These are the keys every entry has; any other key is
    an option of its format (bioray.tasks.formats: each format's `Options`), validated against that
    format when the workflow's inputs are checked."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    name: Name = Field(description="Dataset name, used in stage names (paths), run names and metric names.")
    task: str = Field(description="Task type (bioray.tasks.catalog.TASK_TYPES: ner, relation, similarity, "
                      "doc_classification, qa_yesno, qa_factoid, qa_list): its head, loss and paper metric.")
    format: str | None = Field(None, description="File format (bioray.tasks.catalog.FORMATS: conll, pubtator, tsv, "
                               "jsonl, hoc, pubmedqa, squad, bioasq, ddi_xml); default: the task type's first (conll "
                               "for ner, squad for qa_factoid and qa_list, tsv otherwise).")
    train: str | None = Field(None, description="Training file (ddi_xml: folder), under finetune.data_root.")
    dev: str | None = Field(None, description="Development file (ddi_xml: folder), under finetune.data_root.")
    test: str | None = Field(None, description="Test file (pubmedqa: the test ground-truth JSON; ddi_xml: folder), "
                             "under finetune.data_root.")
    path: str | None = Field(None, description="The one source of formats without split files (hoc folder, "
                             "pubmedqa ori_pqal.json), under finetune.data_root.")
    folds: list[str] | None = Field(None, description="k-fold datasets (GAD/EU-ADR): one folder per fold with "
                                    "train.tsv and test.tsv; the score is the mean over folds.")
    labels: list[str] | None = Field(None, description="The label set (NER tags or classes); any other label is an "
                                                       "error.")
    negative_label: str | None = Field(None, description="relation: the no-relation class, excluded from micro-F1 "
                                       "(the papers' metric; a relation entry sets this or `metric`).")
    metric: str | None = Field(None, description="The score this dataset is ranked by (dev selection, report, gate), "
                               "when not its task type's paper metric: relation: f1 (needs negative_label), "
                               "accuracy, macro_f1; doc_classification: micro_f1, example_f1; qa_factoid: mrr, "
                               "strict_accuracy, lenient_accuracy; qa_yesno: accuracy, macro_f1.")
    benchmark: str | None = Field(None, description="Published numbers to report beside it: a key of "
                                  "bioray/tasks/published.yaml (e.g. chemprot, gad-10fold) or `none`; default: the "
                                  "dataset's name when it is a key, else none.")
    max_train_examples: int | None = Field(None, ge=1, description="Use only the first N training examples.")
    epochs: int | None = Field(None, ge=1, description="This dataset's epochs (default: finetune.epochs).")
    lr: LearningRates | None = Field(None, description="This dataset's learning rate or grid (default: finetune.lr).")
    batch_size: int | None = Field(None, ge=1, description="This dataset's batch size (default: finetune.batch_size).")
    max_length: int | None = Field(None, ge=8, description="This dataset's window (default: finetune.max_length).")


class TrainingConfig(Section):
    """How one fine-tuning run trains (finetune's settings, with a dataset's own where it sets them)."""

    epochs: int = Field(3, ge=1, description="Training epochs; with patience, the most epochs.")
    patience: int | None = Field(
        None, ge=1, description="Stop when the dev metric has not improved for this many epochs (the dev-best "
        "epoch is kept, as always); the learning rate decays over `epochs`, the cap. null: train every epoch.")
    lr: float = Field(5e-5, gt=0, description="Peak learning rate (linear decay).")
    batch_size: int = Field(32, ge=1, description="Examples per optimizer step, over all workers: each worker "
                            "trains on every num_workers-th row of each batch (any batch size works; the loss is "
                            "the mean over the whole batch), so the worker count changes the speed, not the model.")
    max_length: int = Field(128, ge=8, description="Sub-tokens per window; longer sentences are split.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Fraction of steps spent warming up.")
    num_workers: int = Field(1, ge=1, description="Workers per fine-tuning run (one CPU, or one GPU, each): a "
                             "long-lived group, lent to the next fine-tune of the same scaling.")
    max_failures: int = Field(2, ge=0, description="Worker crashes (a killed process, a lost node) survived by "
                              "rerunning the fine-tune from its start on a new worker group; an exception in the "
                              "training code fails the stage at once.")
    use_gpu: bool = Field(False, description="One GPU per worker, NCCL.")
    deterministic: bool = Field(False, description="Deterministic kernels on GPU (as pretrain.deterministic).")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="fp32, or bf16 autocast (weights and "
                                               "optimizer stay fp32).")
    zero_stage: Literal[0, 1, 2] | None = Field(
        None, description="null: plain DDP. 0-2: a DeepSpeed engine at that ZeRO stage (1 partitions "
        "the optimizer state over the workers, 2 also the gradients), for encoders whose Adam state does not "
        "fit one device. ZeRO-3 is not offered: the per-epoch dev scoring on rank 0 needs whole weights.")
    fast: FastPathConfig = Field(default_factory=FastPathConfig, description="Fast-path switches (pretraining's "
                                 "masked_only_decoder and reduce_once_per_step are not among them: an error here).")
    log_model: bool = Field(True, description="Log each fine-tuned model on its run as an MLflow transformers "
                            "model (`mlflow.transformers.load_model` gives a working pipeline).")


LearningRates = Annotated[float | list[Annotated[float, Field(gt=0)]], AfterValidator(_check_rates)]


class FinetuneConfig(TrainingConfig):
    """Fine-tuning of the pretrained encoder on each dataset and seed."""

    datasets: list[DatasetConfig] = Field(min_length=1, description="Datasets to fine-tune on (unique names).")
    data_root: str | None = Field(None, description="The datasets' relative paths are resolved against this "
                                  "directory (benchmarks kept apart from the corpus); default: data_root.")
    seeds: list[int] = Field([42], min_length=1, description="One fine-tuning run per seed (unique).")
    lr: LearningRates = Field(5e-5, description="Peak learning rate (linear decay), or a grid of them: one run "
                              "per value, the test set scored once with the run best on the dev set.")

    @model_validator(mode="after")
    def _datasets_and_seeds_unique(self) -> FinetuneConfig:
        _unique([d.name for d in self.datasets], "finetune.datasets", "name")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"finetune.seeds: a seed is listed twice ({self.seeds})")
        return self

    def learning_rates(self, dataset: DatasetConfig, arm: EncoderConfig | None = None) -> list[float]:
        """The learning rate(s) of one (arm, dataset): the arm's, else the dataset's, else these."""
        own = arm.finetune_lr if arm is not None else None
        rates = next(r for r in (own, dataset.lr, self.lr) if r is not None)
        return list(rates) if isinstance(rates, list) else [rates]

    def for_dataset(self, dataset: DatasetConfig, lr: float | None = None) -> TrainingConfig:
        """The training settings of one dataset (and one learning rate of its grid): these, with its own
        epochs / batch_size / max_length where it sets them."""
        own = {k: getattr(dataset, k) for k in ("epochs", "batch_size", "max_length") if getattr(dataset, k)}
        rate = lr if lr is not None else self.learning_rates(dataset)[0]
        settings = self.model_dump(exclude={"datasets", "seeds", "lr", "data_root"})
        return TrainingConfig.model_validate({**settings, **own, "lr": rate})


class EvaluateConfig(Section):
    """Scoring of each fine-tuned model on its test set."""

    batch_size: int = Field(64, ge=1, description="Sentences per inference batch.")
    heldout_words: int = Field(
        0, ge=0, description="The domain matrix: every encoder with a masked-LM head is scored (whole-word masked-LM "
        "loss per word) on about this many words of each corpus's held-out documents (tokenize.heldout_fraction); "
        "the same words and masks for every encoder, whatever its vocabulary. 0: not scored.")


class GateConfig(Section):
    """Champion/challenger promotion: the new version takes the champion alias only when it wins."""

    enabled: bool = Field(True, description="Compare with the champion and promote the winner.")
    alias: Alias = Field("champion", description="Alias of the version in service.")
    metric: str = Field("mean", description="What decides: `mean` (the mean of the report's per-dataset scores "
                        "over the datasets both versions were scored on) or one report metric, e.g. "
                        "`report/blurb_style_macro` or `report/ncbi-disease/f1`.")
    margin: float = Field(0.0, ge=0, le=100, description="Points (0-100 scale) the challenger must win by.")


class TaskModelsConfig(Section):
    """The fine-tuned task models in the registry too: one registered model per dataset, one version per
    evaluation (arm, fold, seed), each the fine-tuning run its evaluation scored on test."""

    enabled: bool = Field(True, description="Register the evaluated task models (off: no register-task stage).")
    prefix: Name = Field("bioray", description="Registered model names are `<prefix>-<task>-<dataset>`, e.g. "
                         "bioray-ner-ncbi-disease.")
    alias: Alias = Field("challenger", description="Alias set on the new version best on dev (of a dataset's "
                         "new versions; the first when none has a dev score).")


class RegisterConfig(Section):
    """Registration in the MLflow model registry: the evaluated encoder (register stage) and the
    fine-tuned task models (register-task stage)."""

    enabled: bool = Field(True, description="Use the model registry (off: neither the register nor the "
                          "register-task stage).")
    encoder: Name | None = Field(None, description="Which encoder (of `encoders`) is registered and gated; "
                                 "default: this workflow's pretrained one, else the first.")
    model_name: Name = Field("bioray-encoder", description="Registered model name.")
    alias: Alias = Field("challenger", description="Alias set on the new version.")
    gate: GateConfig = Field(default_factory=GateConfig, description="Promotion of the new version to champion.")
    task_models: TaskModelsConfig = Field(default_factory=TaskModelsConfig, description="The fine-tuned task "
                                          "models, registered as `<prefix>-<task>-<dataset>`.")


class TagConfig(Section):
    """Batch inference: a fine-tuned NER model of this workflow over the ingested documents."""

    dataset: str | None = Field(None, description="NER dataset whose fine-tuned model tags the corpus (none = no tag "
                                                  "stage).")
    seed: int | None = Field(None, description="Which seed's model (default: the first of finetune.seeds).")
    actors: int = Field(1, ge=1, description="Ray Data actors holding a model, one CPU each (no more than "
                        "the cluster's CPUs).")
    batch_size: int = Field(32, ge=1, description="Sentences per forward pass.")


class RayConfig(Section):
    """Where Ray runs."""

    address: str | None = Field(None, description="Cluster address; empty = start a local Ray (RAY_ADDRESS also "
                                                  "works).")
    num_cpus: int | None = Field(
        None, ge=1, description="Local Ray only: logical CPUs (default: max(4, cores), so training workers and data "
        "tasks fit)."
    )


class FetchSourceConfig(Section):
    """One NLM directory to mirror before a scheduled run."""

    listing: str = Field(description="PubMed directory listing URL (e.g. https://ftp.ncbi.nlm.nih.gov/pubmed/updatefiles/).")
    destination: str = Field(description="Directory the files go to, under data_root; an ingest source should read it.")


class RepretrainConfig(Section):
    """Scheduled re-pretraining: fetch new files, run only when something is new, one run at a time."""

    fetch: list[FetchSourceConfig] = Field(default_factory=list, description="Listings to fetch new files from.")
    lock_stale_after_s: float = Field(3600, gt=0, description="A run lock not refreshed for this long belongs to a "
                                      "dead run and is taken over (a live run refreshes it every minute).")


class TrackingConfig(Section):
    """Where MLflow tracks."""

    uri: str | None = Field(None, description="Tracking URI; empty = MLFLOW_TRACKING_URI or sqlite:///<workdir>/mlflow.db.")
    experiment: Name = Field("bioray", description="MLflow experiment name.")


class EncoderConfig(Section):
    """A starting point that is fine-tuned and scored: one arm of a comparison (the same fine-tuning from
    different encoders is what BioBERT's and PubMedBERT's tables compare)."""

    name: Name = Field(description="Arm name, used in stage names, run names and the report.")
    source: Literal["pretrain", "random", "checkpoint"] = Field(
        "pretrain", description="pretrain: this workflow's pretraining (pretrain section); random: a randomly "
        "initialised model of pretrain.model's shape with the vocab stage's vocabulary (no pretraining at all); "
        "checkpoint: an existing Hugging Face checkpoint (a folder under data_root, or an MLflow URI).")
    checkpoint: str | None = Field(None, description="source checkpoint: the checkpoint.")
    continue_pretraining: bool = Field(
        False, description="source checkpoint: first pretrain it further on this workflow's corpus with the "
        "pretrain section's schedule and the checkpoint's own vocabulary (the BioBERT recipe).")
    steps: int | None = Field(
        None, ge=1, description="continue_pretraining: optimizer steps of this arm's pretraining (default "
        "pretrain.steps); a time budget for a bigger model than pretrain.model is fewer steps.")
    pretrain_lr: float | None = Field(
        None, gt=0, description="continue_pretraining: peak learning rate of this arm's pretraining (default "
        "pretrain.lr); a trained checkpoint wants BERT's own 1e-4, not a from-scratch recipe's larger one.")
    export_fractions: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=list, description="continue_pretraining: also export the encoder at these fractions of its "
        "steps (the heldout stage scores each export: how fast the checkpoint adapts to the corpus).")
    at_fraction: float | None = Field(
        None, gt=0, le=1, description="source pretrain: the encoder at this fraction of the pretraining steps (a "
        "point of a learning curve); default: at the end.")
    seed: int = Field(0, description="source random: the initialisation seed.")
    corpus: IngestConfig | None = Field(
        None, description="source pretrain: pretrain this arm on its own corpus (the ingest section's keys), with a "
        "vocabulary trained on it (the vocab section's settings) and the pretrain section's recipe and budget, "
        "instead of the workflow's corpus: e.g. a general-domain arm beside the biomedical one.")
    finetune_lr: LearningRates | None = Field(
        None, description="This arm's fine-tuning learning rate or grid (default: the dataset's, else finetune.lr): "
        "a trained checkpoint wants a smaller one than a randomly initialised tiny model.")

    @model_validator(mode="after")
    def _fields_fit_the_source(self) -> EncoderConfig:
        if (self.source == "checkpoint") != (self.checkpoint is not None):
            raise ValueError("`checkpoint` is set with (and only with) source: checkpoint")
        if self.continue_pretraining and self.source != "checkpoint":
            raise ValueError("continue_pretraining continues a checkpoint: it needs source: checkpoint")
        for key in ("steps", "pretrain_lr", "export_fractions"):
            if getattr(self, key) not in (None, []) and not self.continue_pretraining:
                raise ValueError(f"{key} is a continued pretraining's setting: it needs continue_pretraining: true")
        if self.at_fraction is not None and (self.source != "pretrain" or self.corpus is not None):
            raise ValueError("at_fraction picks a point of this workflow's pretraining: it needs source: pretrain "
                             "and no corpus of its own")
        if self.corpus is not None and self.source != "pretrain":
            raise ValueError("corpus is the corpus this arm is pretrained on: it needs source: pretrain")
        return self

    @property
    def needs_corpus(self) -> bool:
        """Whether it reads the workflow's corpus (ingest section): to pretrain on, or for its vocabulary."""
        return (self.source in ("pretrain", "random") and self.corpus is None) or self.continue_pretraining

    @property
    def own_corpus(self) -> bool:
        return self.corpus is not None


class WorkflowConfig(Section):
    """A whole pipeline: global settings plus one section per stage."""

    name: Name = Field(description="Workflow name (parent MLflow run name).")
    workdir: str = Field("./bioray-work", description="Stage outputs, MLflow store and Ray Train storage live here.")
    data_root: str | list[str] = Field(".", description="Relative input paths are resolved against this directory; "
                                       "a list: the first of them that exists (empty entries skipped).")
    storage_path: str | None = Field(None, description="Ray Train storage (local path or s3://); default "
                                                       "<workdir>/ray_train.")
    storage_endpoint: str | None = Field(None, description="The S3 API endpoint of an s3:// storage_path on an "
                                         "S3-compatible store (MinIO, Ceph: http(s)://host:port); unset: AWS S3. "
                                         "Not a secret: the credentials come from the environment only.")
    ray: RayConfig = Field(default_factory=RayConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    ingest: IngestConfig | None = Field(None, description="The corpus (needed unless every encoder is an "
                                        "existing checkpoint, used as it is).")
    encoders: list[EncoderConfig] | None = Field(
        None, description="The starting points fine-tuned and scored, each an arm of the report; default: one, "
        "this workflow's pretraining.")
    vocab: VocabConfig = Field(default_factory=VocabConfig)
    tokenize: TokenizeConfig = Field(default_factory=TokenizeConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    finetune: FinetuneConfig
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    registry: RegisterConfig = Field(default_factory=RegisterConfig, description="The register and "
                                     "register-task stages.")
    tag: TagConfig = Field(default_factory=TagConfig, description="The optional batch-inference stage.")
    repretrain: RepretrainConfig | None = Field(None, description="Makes `bioray run` a scheduled re-pretraining run.")
    plugins: list[str] = Field(default_factory=list, description="Python modules imported before the workflow's "
                               "entries are checked, each registering task types, dataset formats or stage kinds "
                               "of its own (docs/development.md, How to add ...); importable wherever stages run.")

    @model_validator(mode="after")
    def _encoders_have_what_they_need(self) -> WorkflowConfig:
        if self.encoders is not None:
            if not self.encoders:
                raise ValueError("encoders: list at least one (or leave the key out for this workflow's pretraining)")
            _unique([e.name for e in self.encoders], "encoders", "name")
        if self.ingest is None and any(e.needs_corpus for e in self.arms):
            needing = [e.name for e in self.arms if e.needs_corpus]
            raise ValueError(f"ingest: required, the encoders {needing} are trained on the corpus (or take their "
                             "vocabulary from it)")
        registered = self.registry.encoder
        if registered is not None and registered not in {e.name for e in self.arms}:
            raise ValueError(f"registry.encoder: {registered!r} is not one of encoders "
                             f"{[e.name for e in self.arms]}")
        return self

    @model_validator(mode="after")
    def _endpoint_is_an_s3_url(self) -> WorkflowConfig:
        endpoint = self.storage_endpoint
        if endpoint:  # "" as None: `${BIORAY_STORAGE_ENDPOINT:-}` unset
            if not (self.storage_path or "").startswith("s3://"):
                raise ValueError("storage_endpoint: an S3 endpoint, for an s3:// storage_path only")
            parts = urllib.parse.urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"storage_endpoint: {endpoint!r} is not an http(s)://host[:port] URL")
            if parts.username or parts.password:  # a key in the workflow file would be logged with it
                raise ValueError("storage_endpoint: no credentials in the URL; set AWS_ACCESS_KEY_ID and "
                                 "AWS_SECRET_ACCESS_KEY in the environment")
        return self

    @property
    def arms(self) -> list[EncoderConfig]:
        """The encoders, or the one implicit encoder: this workflow's pretraining."""
        return self.encoders or [EncoderConfig(name="pretrain")]

    @model_validator(mode="after")
    def _tag_names_an_ner_dataset(self) -> WorkflowConfig:
        if self.tag.dataset is not None:
            tasks = {d.name: d.task for d in self.finetune.datasets}
            if tasks.get(self.tag.dataset) != "ner":
                raise ValueError(f"tag.dataset: {self.tag.dataset!r} is not an NER dataset of finetune.datasets "
                                 f"(NER datasets: {[n for n, t in tasks.items() if t == 'ner']})")
            if self.tag.seed is not None and self.tag.seed not in self.finetune.seeds:
                raise ValueError(f"tag.seed: {self.tag.seed} is not one of finetune.seeds {self.finetune.seeds}")
        return self

    @model_validator(mode="after")
    def _pretrain_matches_tokenize(self) -> WorkflowConfig:
        """Pretraining options that need something from the tokenize stage."""
        pretrain, tokenize = self.pretrain, self.tokenize
        if pretrain.long_phase_fraction and tokenize.long_seq_len is None:
            raise ValueError("pretrain.long_phase_fraction needs tokenize.long_seq_len (the long phase's sequences)")
        if self.evaluate.heldout_words and not tokenize.heldout_fraction:
            raise ValueError("evaluate.heldout_words scores held-out text: it needs tokenize.heldout_fraction > 0")
        if pretrain.nsp and not tokenize.nsp:
            raise ValueError("pretrain.nsp needs tokenize.nsp (sequence pairs with next_sentence_label)")
        longest = max(tokenize.seq_lens) if pretrain.long_phase_fraction else tokenize.seq_len
        if pretrain.init_checkpoint is None and longest > pretrain.model.max_position:
            raise ValueError(f"tokenize sequences of {longest} tokens exceed pretrain.model.max_position "
                             f"({pretrain.model.max_position})")
        return self

    def data_path(self, relative: str) -> Path:
        """An input path resolved against data_root (absolute paths stay as they are)."""
        return (Path(self.data_root) / relative).resolve()

    def dataset_path(self, relative: str) -> Path:
        """A dataset entry's path resolved against finetune.data_root (set by load_workflow)."""
        return (Path(self.finetune.data_root or self.data_root) / relative).resolve()

    @property
    def workdir_path(self) -> Path:
        return Path(self.workdir).resolve()

    @property
    def paths(self) -> Workdir:
        """Every path bioray writes under the workdir (checked to stay inside it)."""
        return Workdir(self.workdir)

    @property
    def train_storage(self) -> str:
        return self.storage_path or str(self.paths.train_storage)


# --- loading ----------------------------------------------------------------------------------

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}")


def interpolate_env(value: Any, where: str = "") -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string of a YAML tree."""
    if isinstance(value, dict):
        return {k: interpolate_env(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate_env(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        name, has_default, default = match.group(1), match.group(2), match.group(3)
        if name in os.environ and (os.environ[name] or not has_default):
            return os.environ[name]
        if has_default is not None:
            return default
        raise ConfigError(f"{where}: environment variable ${{{name}}} is not set (use ${{{name}:-default}} for a "
                          f"default)")

    return _ENV_PATTERN.sub(substitute, value)


# --- YAML written by someone else: bounded before anything is built from it ---------------------
# A workflow file is often someone else's (a shared config, a PR). Its YAML is first read as an event
# stream (iterative: no recursion, however deep the nesting), counting what building it would make;
# only then is it built. The shipped workflows are under 5 KB, at most 5 levels deep, under 300 values,
# under 40 keys a section, and use no aliases: every limit below is more than 10 times that, and low
# enough that a file over it is refused in milliseconds, before PyYAML's recursive composer, the
# constructor, pydantic or a dict copy ever sees it. An error names the limit.
MAX_WORKFLOW_BYTES = 1024 * 1024  # the file's size, checked before it is read: a 50 MB file is never read
MAX_YAML_DEPTH = 64  # nesting levels (aliases expanded): far below Python's recursion limit (1000)
MAX_YAML_NODES = 10_000  # values, lists and mappings as built, each alias counted as everything it expands to:
#                          a "billion laughs" (aliases of aliases: 9**10 values from 12 lines) stops here
MAX_YAML_ALIASES = 100  # alias uses (`*name`, `<<: *name`); anchors are for sharing a few settings
MAX_YAML_ITEMS = 1_000  # keys of one mapping or items of one list (a section has under 40 keys)
MAX_YAML_SCALAR = 16 * 1024  # characters of one value: 4 times the longest Linux path; numbers are far shorter
#                              (a YAML 1.1 base-60 integer of 16 K characters still builds in milliseconds)
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's when built with it: the same rules, faster


def _one_line(exc: Exception) -> str:
    """A YAML error as one line: PyYAML's own spans several (the context, the problem, a caret under it)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        text = "; ".join(filter(None, [exc.context, exc.problem]))
        text += f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    else:
        text = str(exc).split("; use sys.set_int_max_str_digits()")[0]  # Python's hint, not the user's
    return _shorten(" ".join(text.split()), 300)


def _check_yaml_events(events, source: str) -> None:
    """Refuse what building the document would make too deep or too large (see the limits above)."""
    open_nodes: list[list] = []  # per open list or mapping: [anchor, nodes before it, its height, items, kind]
    anchored: dict[str, tuple[int, int]] = {}  # anchor -> (nodes it expands to, its height)
    nodes = aliases = 0

    def refuse(event, what: str) -> typing.NoReturn:
        raise ConfigError(f"{source}: line {event.start_mark.line + 1}: {what}; not read further")

    for event in events:
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            open_nodes.append([event.anchor, nodes, 1, 0, "mapping" if isinstance(event, yaml.MappingStartEvent)
                               else "list"])
            nodes += 1
            if len(open_nodes) > MAX_YAML_DEPTH:
                refuse(event, f"nested more than {MAX_YAML_DEPTH} levels deep (the limit for a workflow file)")
            if nodes > MAX_YAML_NODES:
                refuse(event, f"more than {MAX_YAML_NODES:,} values (the limit for a workflow file)")
            continue
        if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            anchor, before, height, *_ = open_nodes.pop()
            size = nodes - before
            if anchor:
                anchored[anchor] = (size, height)
        elif isinstance(event, yaml.ScalarEvent):
            if len(event.value) > MAX_YAML_SCALAR:
                refuse(event, f"a value of {len(event.value):,} characters, over the {MAX_YAML_SCALAR:,} a "
                              f"workflow value may have")
            size, height = 1, 0
            nodes += 1
            if event.anchor:
                anchored[event.anchor] = (1, 0)
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_YAML_ALIASES:
                refuse(event, f"more than {MAX_YAML_ALIASES} aliases (the limit for a workflow file)")
            if any(frame[0] == event.anchor for frame in open_nodes):
                refuse(event, f"alias *{_shorten(event.anchor, 40)} inside its own anchor (a recursive structure)")
            if event.anchor not in anchored:
                refuse(event, f"alias *{_shorten(event.anchor, 40)} names no anchor before it")
            size, height = anchored[event.anchor]
            nodes += size
            if nodes > MAX_YAML_NODES:
                refuse(event, f"aliases expand to more than {MAX_YAML_NODES:,} values (the limit for a workflow "
                              f"file; nested aliases such as a 'billion laughs')")
            if len(open_nodes) + height > MAX_YAML_DEPTH:
                refuse(event, f"alias *{_shorten(event.anchor, 40)} nests more than {MAX_YAML_DEPTH} levels deep "
                              f"(the limit for a workflow file)")
        else:
            continue  # stream and document start and end
        if open_nodes:
            parent = open_nodes[-1]
            parent[2] = max(parent[2], height + 1)
            parent[3] += 1
            if parent[3] > (2 if parent[4] == "mapping" else 1) * MAX_YAML_ITEMS:
                items = "keys" if parent[4] == "mapping" else "items"
                refuse(event, f"a {parent[4]} of more than {MAX_YAML_ITEMS:,} {items} (the limit for a workflow file)")


def parse_yaml(text: str, source: str) -> Any:
    """YAML text (a workflow file's, a --set value's) as Python values, or a one-line ConfigError naming
    `source`: never a recursion error, never minutes of alias expansion (see the limits above)."""
    try:
        _check_yaml_events(yaml.parse(text, Loader=_SAFE_LOADER), source)
        return yaml.load(text, Loader=_SAFE_LOADER)  # a safe loader: plain data only
    except ConfigError:
        raise
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {_one_line(exc)}") from None
    except (ValueError, OverflowError, RecursionError) as exc:  # e.g. an integer of 5,000 digits
        raise ConfigError(f"{source}: a value YAML cannot build: {_one_line(exc)}") from None


def read_workflow_yaml(path: str | Path) -> Any:
    """A workflow file's YAML tree: at most MAX_WORKFLOW_BYTES, UTF-8, within the limits above."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"workflow file not found: {path}")
    size = path.stat().st_size
    with open(path, "rb") as stream:
        data = stream.read(MAX_WORKFLOW_BYTES + 1)  # a file still growing is cut here too
    if len(data) > MAX_WORKFLOW_BYTES:
        raise ConfigError(f"{path}: {max(size, len(data)):,} bytes, over the {MAX_WORKFLOW_BYTES:,} a workflow "
                          f"file may have; not read")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                          f"{exc.start}); a workflow file is UTF-8 YAML") from None
    return parse_yaml(text, str(path))


def _override_path(dotted: str) -> list[str | int]:
    """'finetune.datasets[0].lr' or 'finetune.datasets.0.lr' -> ['finetune', 'datasets', 0, 'lr']."""
    parts: list[str | int] = []
    for part in re.split(r"\.|(?=\[)", dotted.strip()):
        if part.startswith("[") and part.endswith("]"):
            part = part[1:-1]
        if part:
            parts.append(int(part) if part.isdigit() else part)
    return parts


def apply_overrides(tree: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` overrides; the value is parsed as YAML (numbers, lists, booleans)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        dotted, raw = item.split("=", 1)
        parts = _override_path(dotted)
        node = tree
        for i, part in enumerate(parts[:-1]):
            where = dotted.split("=")[0]
            if isinstance(part, int):
                if not isinstance(node, list) or part >= len(node):
                    raise ConfigError(f"--set {where}: no list item {part} there")
                child = node[part]
            else:
                if not isinstance(node, dict):
                    raise ConfigError(f"--set {where}: {part!r} is not inside a section")
                child = node.setdefault(part, {})
            if not isinstance(child, (dict, list)):
                raise ConfigError(f"--set {where}: {'.'.join(map(str, parts[: i + 1]))} is a value, not a section")
            node = child
        last = parts[-1]
        value = parse_yaml(raw, f"--set {dotted}") if raw.strip() else None
        if isinstance(last, int):
            if not isinstance(node, list) or last >= len(node):
                raise ConfigError(f"--set {dotted}: no list item {last} there")
        node[last] = value
    return tree


def _shorten(text: str, limit: int = 80) -> str:
    """A bad value as the error shows it: repr (control characters escaped), cut to a readable length."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def entry_key(section: str, index: int, name: object) -> str:
    """A list entry as every error names it: `finetune.datasets[5] (euadr)`; a name that is not a valid
    one (the error may be about it) is left out, never printed raw."""
    valid = isinstance(name, str) and _NAME.fullmatch(name) and ".." not in name
    return f"{section}[{index}]" + (f" ({name})" if valid else "")


def _key_of(loc: tuple, tree: object) -> str:
    """A schema error's location as a key, each list entry with its name: finetune.datasets[5] (euadr).metric."""
    key, node = "", tree
    for part in loc:
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and part < len(node) else None
            key = entry_key(key, part, node.get("name") if isinstance(node, dict) else None)
        else:
            node = node.get(part) if isinstance(node, dict) else None
            key += f".{part}"
    return key.lstrip(".") or "(top level)"


def section_model(annotation) -> type[BaseModel] | None:
    """The config section a field holds (itself, or inside a list or an optional)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (list, typing.Union, types.UnionType, typing.Annotated):
        return next(filter(None, map(section_model, typing.get_args(annotation))), None)
    return None


def _did_you_mean(loc: tuple) -> str:
    """For an unknown key: the section's own keys closest to it."""
    model = WorkflowConfig
    for part in loc[:-1]:
        if not isinstance(part, int):
            field = model.model_fields.get(part) if model else None
            model = section_model(field.annotation) if field else None
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1) if model else []
    return f" (did you mean {close[0]!r}?)" if close else ""


MAX_ERRORS_SHOWN = 20  # a file of hundreds of unknown keys is not hundreds of lines on the terminal


def _format_validation_error(error: ValidationError, source: str, tree: object = None) -> str:
    lines = [f"{source}: invalid workflow configuration"]
    errors = error.errors()
    for item in errors[:MAX_ERRORS_SHOWN]:
        key = _shorten(_key_of(item["loc"], tree))
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key{_did_you_mean(item['loc'])}")
        elif item["type"] == "missing":
            lines.append(f"  {key}: required key is missing")
        else:
            got = item.get("input")
            shown = "" if isinstance(got, (dict, list)) else f" (got {_shorten(_repr(got))})"
            lines.append(f"  {key}: {item['msg'].removeprefix('Value error, ')}{shown}")
    if len(errors) > MAX_ERRORS_SHOWN:
        lines.append(f"  ... and {len(errors) - MAX_ERRORS_SHOWN} more")
    return "\n".join(lines)


def _repr(value: object) -> str:
    """repr, or what the value is where Python will not show it (an integer of over 4,300 digits)."""
    try:
        return repr(value)
    except ValueError:
        return f"a {type(value).__name__} too long to show"


def is_mlflow_uri(value: str) -> bool:
    """A registered model or run artifact (resolved when the run starts), not a path."""
    return value.startswith(MLFLOW_URI_PREFIXES)


def first_existing(data_root: str | list[str]) -> Path:
    """data_root, or of a list the first directory that exists (e.g. $BIORAY_DATA_ROOT, then
    ../shared/data, then the repository's sample-data)."""
    if isinstance(data_root, str):
        return Path(data_root)
    candidates = [entry for entry in data_root if entry]
    for candidate in candidates:
        if Path(candidate).is_dir():
            return Path(candidate)
    raise ConfigError(f"data_root: none of these directories exists: {', '.join(candidates) or '(none given)'}")


def load_workflow(path: str | Path, overrides: list[str] | None = None) -> WorkflowConfig:
    """Read, interpolate, override and validate a workflow YAML against the schema (keys, types, values).
    Its input files are checked by bioray.pipeline.inputs.check_inputs."""
    path = Path(path)
    tree = read_workflow_yaml(path) or {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    tree = apply_overrides(tree, overrides or [])
    tree = interpolate_env(tree)
    try:
        config = WorkflowConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, str(path), tree)) from None
    # Absolute paths: stage tasks may run in another working directory (a Ray job's working_dir).
    config.workdir = str(Path(config.workdir).resolve()) if "://" not in config.workdir else config.workdir
    config.data_root = str(first_existing(config.data_root).resolve())
    config.finetune.data_root = str(Path(config.data_root, config.finetune.data_root or ".").resolve())
    _import_plugins(config.plugins, str(path))
    return config


def _import_plugins(modules: list[str], source: str) -> None:
    """The workflow's plugins imported: they register the task types, formats and stage kinds it names."""
    problems = []
    for i, module in enumerate(modules):
        try:
            importlib.import_module(module)
        except Exception as exc:  # the plugin's own error, as the key's problem
            problems.append(f"  plugins[{i}]: cannot import {module!r} ({type(exc).__name__}: {exc})")
    if problems:
        raise ConfigError("\n".join([f"{source}: a plugin could not be loaded", *problems]))
