"""`bioray bench pretrain`: bioray's pretraining step against the step most users would write, in one run.

Both sides train the same tiny BERT on the same PubMed sentences until each has processed the same
number of real (non-pad) tokens, in this process with the same torch threads:
(a) bioray: sentences packed into full 128-token sequences (stream packing), dynamic masking, the
    MLM decoder on masked positions only, SDPA attention;
(b) baseline: HF `BertForMaskedLM` + `DataCollatorForLanguageModeling` over padded per-sentence
    batches, as HF's run_mlm.py `--line_by_line` does (decoder over every position).
The DeepSpeed wrapper bioray trains through adds no compute in one process and is left out of both.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from bioray.config import ModelConfig
from bioray.corpus.sentences import sentence_spans

SHAPE = ModelConfig(layers=2, hidden=128, heads=2, intermediate=512, max_position=512, dropout=0.1)


def read_sentences(data: Path, limit_bytes: int) -> list[str]:
    """Sentences of the text files under data (one document per line), up to limit_bytes of text."""
    sentences, size = [], 0
    for path in sorted(p for p in data.rglob("*") if p.is_file() and not p.name.endswith(".md")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            for start, end in sentence_spans(line):
                sentences.append(line[start:end])
                size += end - start
            if size >= limit_bytes:
                return sentences
    return sentences


def _timed(step, batches, budget_tokens: int, warmup: int = 2) -> tuple[float, int, int]:
    """Seconds, real tokens and positions of steps over batches until budget_tokens real tokens."""
    for batch in batches[:warmup]:
        step(batch)
    seconds, tokens, positions = 0.0, 0, 0
    for batch in batches[warmup:]:
        started = time.perf_counter()
        step(batch)
        seconds += time.perf_counter() - started
        tokens += int(batch["attention_mask"].sum())
        positions += batch["attention_mask"].numel()
        if tokens >= budget_tokens:
            break
    return seconds, tokens, positions


def bench_pretrain(data: Path, tokenizer_dir: Path | None = None, budget_tokens: int = 150_000, batch_size: int = 32,
                   seq_len: int = 128) -> dict:
    from transformers import (
        AutoTokenizer,
        BertForMaskedLM,
        DataCollatorForLanguageModeling,
    )

    from bioray.data.masking import mask_batch
    from bioray.data.pack import pack_stream
    from bioray.data.vocab import train_wordpiece
    from bioray.model.encoder import build_mlm_model, pretraining_loss

    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    sentences = read_sentences(data, limit_bytes=4_000_000)
    if tokenizer_dir is None:  # not timed: an input of the benchmark
        tokenizer = train_wordpiece(sentences, 30522, lowercase=False, min_frequency=2)
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    encoded = tokenizer(sentences, add_special_tokens=False, truncation=True, max_length=seq_len - 2)["input_ids"]
    torch.manual_seed(0)

    # (a) bioray: the same sentences packed back to back into full sequences
    lengths = np.array([len(ids) for ids in encoded])
    ids = np.fromiter((t for sentence in encoded for t in sentence), dtype=np.int32, count=int(lengths.sum()))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    packed = pack_stream(ids, np.ones_like(ids, dtype=np.int8), starts, starts[:1], seq_len, tokenizer.cls_token_id,
                         tokenizer.sep_token_id, np.random.default_rng(0))
    generator = torch.Generator().manual_seed(0)
    special = list(tokenizer.all_special_ids)
    ours = [mask_batch({k: packed[k][i:i + batch_size] for k in ("input_ids", "token_type_ids", "length")}, 0.15,
                       tokenizer.mask_token_id, len(tokenizer), special, generator)
            for i in range(0, len(packed["length"]) - batch_size + 1, batch_size)]
    model = build_mlm_model(SHAPE, len(tokenizer), tokenizer.pad_token_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def bioray_step(batch):
        loss, _ = pretraining_loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    ours_seconds, ours_tokens, ours_positions = _timed(bioray_step, ours, budget_tokens)

    # (b) baseline: one sentence per example, padded per batch, full-vocabulary decoder everywhere
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    examples = [{"input_ids": [tokenizer.cls_token_id, *sentence, tokenizer.sep_token_id]} for sentence in encoded]
    theirs = [collator(examples[i:i + batch_size]) for i in range(0, len(examples) - batch_size + 1, batch_size)]
    baseline = build_mlm_model(SHAPE, len(tokenizer), tokenizer.pad_token_id)
    assert isinstance(baseline, BertForMaskedLM)
    baseline_optimizer = torch.optim.AdamW(baseline.parameters(), lr=1e-4)

    def baseline_step(batch):
        baseline(**batch).loss.backward()
        baseline_optimizer.step()
        baseline_optimizer.zero_grad(set_to_none=True)

    base_seconds, base_tokens, base_positions = _timed(baseline_step, theirs, budget_tokens)
    ours_rate, base_rate = ours_tokens / ours_seconds, base_tokens / base_seconds
    return {
        "torch_threads": torch.get_num_threads(),
        "model_params": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "seq_len": seq_len,
        "batch_size": batch_size,
        "bioray_tokens_per_s": ours_rate,
        "baseline_tokens_per_s": base_rate,
        "ratio": ours_rate / base_rate,
        "real_tokens": {"bioray": ours_tokens, "baseline": base_tokens},
        "fill_ratio": {"bioray": ours_tokens / ours_positions, "baseline": base_tokens / base_positions},
        "seconds": {"bioray": ours_seconds, "baseline": base_seconds},
    }
