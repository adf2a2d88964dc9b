"""`bioray bench pretrain`: bioray's pretraining step against the steps most users would write, in one run.

Three arms train the same BERT on the same PubMed sentences until each has processed the same
number of real (non-pad) tokens, in this process, on the same device:
(a) bioray: sentences packed into full sequences (stream packing), dynamic masking, and the fast
    path of `pretrain.fast` (unpadded encoder, MLM decoder on masked positions only, SDPA or
    flash-attn attention, fused AdamW; on CUDA also bf16 and torch.compile);
(b) baseline: HF `BertForMaskedLM` + `DataCollatorForLanguageModeling` over padded per-sentence
    batches, as HF's run_mlm.py `--line_by_line` does (decoder over every position), torch AdamW;
    on CUDA in bf16 autocast, as run_mlm.py `--bf16`;
(c) packed baseline: the same HF step over run_mlm.py's default grouping (no `--line_by_line`):
    every sentence as [CLS] sentence [SEP], all concatenated and cut into full blocks of T, so no
    padding; the decoder still runs over every position.
The model is a tiny BERT (2 x 128) or BERT-base (`size`; by default tiny on CPU, base on CUDA, at
T=128 and T=512 there). The DeepSpeed wrapper bioray trains through adds no compute in one process
and is left out of all three.
MFU counts the same model FLOPs per real token for every arm (6N + 12·L·d·T, N from `mlm_parameters`),
against the device's vendor peak on GPU and, on any device, against this machine's measured GEMM peak
at the model's own shapes (`gemm_peak`): `peak_fraction`. A few profiled bioray steps say where the
time that is not GEMM goes (`step_profile`, CPU).
"""

from __future__ import annotations

import datetime
import itertools
import os
import time
from pathlib import Path

import numpy as np
import torch

from bioray.bench.gemm_peak import best_peak, measure_peak, model_gemms, step_gemm_flops
from bioray.bench.step_profile import profile_steps, render_breakdown
from bioray.config import ModelConfig, PretrainFastPathConfig
from bioray.corpus.sentences import sentence_spans

TINY = ModelConfig(layers=2, hidden=128, heads=2, intermediate=512, max_position=512, dropout=0.1)
BASE = ModelConfig()  # BERT-base: 12 layers, 768 hidden, 12 heads, 3072 feed-forward
BERT_BASE_VOCAB = 30522
# Per size: the encoder shape and the model's vocabulary rows at least (None: the tokenizer's pieces).
# base keeps BERT-base's 30,522 rows when the bench text yields fewer WordPiece pieces (1 MB of
# abstracts yields ~14,000): the rows no token uses cost the embedding and the decoder the same.
SIZES = {"tiny": (TINY, None), "base": (BASE, BERT_BASE_VOCAB)}
# Per device: the size and settings measured by default, precision, torch.compile.
DEVICES = {
    "cpu": {"size": "tiny", "seq_lens": (128,), "bf16": False, "compile": False},
    "cuda": {"size": "base", "seq_lens": (128, 512), "bf16": True, "compile": True},
}
# Per device and size: sequences per batch at each length, untimed warmup steps, and the real tokens
# each arm trains on per setting (`steps`: that many full batches' worth, batch x T, when a whole
# token budget would take too long: BERT-base on a CPU measures a handful of steps).
RUNS = {
    ("cpu", "tiny"): {"batch": {128: 32, 512: 8}, "warmup": 2, "tokens": 150_000},
    ("cpu", "base"): {"batch": {128: 8, 512: 2}, "warmup": 1, "steps": 4},
    ("cuda", "tiny"): {"batch": {128: 256, 512: 64}, "warmup": 15, "tokens": 10_000_000},
    ("cuda", "base"): {"batch": {128: 256, 512: 64}, "warmup": 15, "tokens": 10_000_000},
}
MASK_RATE = 0.15
PROFILED_STEPS = 2  # bioray steps under torch.profiler for the breakdown, after the timed ones


def model_vocab_size(size: str, tokenizer_pieces: int) -> int:
    """The vocabulary rows of the model every arm trains: the tokenizer's pieces, at least BERT-base's
    30,522 for the base size."""
    return max(tokenizer_pieces, SIZES[size][1] or 0)


def pack_blocks(encoded: list[list[int]], seq_len: int, cls_id: int, sep_id: int) -> np.ndarray:
    """run_mlm.py's grouping without --line_by_line: each text tokenized with its special tokens
    ([CLS] text [SEP]), all texts concatenated into one stream, the stream cut into blocks of exactly
    seq_len tokens; the last, shorter remainder is dropped. No padding anywhere: (blocks, seq_len)."""
    stream = np.fromiter(itertools.chain.from_iterable((cls_id, *ids, sep_id) for ids in encoded), dtype=np.int64)
    blocks = len(stream) // seq_len
    return stream[: blocks * seq_len].reshape(blocks, seq_len)


def hf_batches(tokenizer, examples: list[dict], batch_size: int) -> list[dict]:
    """Full batches of the examples through HF's DataCollatorForLanguageModeling (pads each batch to
    its longest example, masks 15%), as a Trainer over run_mlm.py's dataset gets them."""
    from transformers import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=MASK_RATE)
    batches = [collator(examples[i:i + batch_size]) for i in range(0, len(examples) - batch_size + 1, batch_size)]
    return [{k: v for k, v in b.items() if k in ("input_ids", "attention_mask", "token_type_ids", "labels")}
            for b in batches]


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


def _timed(step, batches: list[dict], budget_tokens: int, warmup: int, device: torch.device) -> dict:
    """Steps over the batches (cycling) until budget_tokens real tokens, after `warmup` untimed steps
    (torch.compile compiles there). Counts are taken on the host before timing: no sync per step."""
    counts = [(int(b["attention_mask"].sum()), b["attention_mask"].numel(), b["input_ids"].shape[0]) for b in batches]
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
    for batch in itertools.islice(itertools.cycle(batches), warmup):
        step(batch)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    tokens = positions = sequences = 0
    started = time.perf_counter()
    for batch, (real, total, rows) in itertools.cycle(zip(batches, counts)):
        step(batch)
        tokens, positions, sequences = tokens + real, positions + total, sequences + rows
        if tokens >= budget_tokens:
            break
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {"tokens_per_s": tokens / seconds, "sequences_per_s": sequences / seconds, "real_tokens": tokens,
            "sequences": sequences, "fill_ratio": tokens / positions, "seconds": seconds,
            "peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return platform.processor() or platform.machine()


def _versions() -> dict:
    import transformers

    try:
        import flash_attn

        flash = flash_attn.__version__
    except ImportError:
        flash = None
    return {"torch": torch.__version__, "transformers": transformers.__version__, "flash_attn": flash,
            "cuda": torch.version.cuda}


def _bioray_side(tokenizer, encoded, shape, vocab_size, seq_len, batch_size, budget_tokens, device, fast, bf16,
                 warmup, breakdown) -> tuple[dict, float, dict | None]:
    """(a): the same sentences packed back to back into full sequences, through bioray's fast path.
    Returns the timing, the model's masked-LM FLOPs per real token and (CPU, `breakdown`) where a
    few more steps' time went."""
    from bioray.data.masking import mask_batch
    from bioray.data.pack import pack_stream
    from bioray.model.encoder import apply_fast_path, build_mlm_model, pretraining_loss
    from bioray.train.flops import flops_per_token, mlm_parameters
    from bioray.train.optim import build_optimizer, decay_groups

    lengths = np.array([len(ids) for ids in encoded])
    ids = np.fromiter((t for sentence in encoded for t in sentence), dtype=np.int32, count=int(lengths.sum()))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    packed = pack_stream(ids, np.ones_like(ids, dtype=np.int8), starts, starts[:1], seq_len, tokenizer.cls_token_id,
                         tokenizer.sep_token_id, np.random.default_rng(0))
    generator = torch.Generator().manual_seed(0)
    special = list(tokenizer.all_special_ids)
    batches = [mask_batch({k: packed[k][i:i + batch_size] for k in ("input_ids", "token_type_ids", "length")},
                          MASK_RATE, tokenizer.mask_token_id, len(tokenizer), special, generator)
               for i in range(0, len(packed["length"]) - batch_size + 1, batch_size)]
    torch.manual_seed(0)
    model = apply_fast_path(build_mlm_model(vocab_size, tokenizer.pad_token_id, **shape.model_dump()).to(device),
                            **fast.model_switches())
    optimizer = build_optimizer("adamw", decay_groups(model, 0.01), 1e-4, device.type == "cuda", fast.fused_optimizer)

    def step(batch):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, _ = pretraining_loss(model, batch, **fast.loss_switches())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    per_token = flops_per_token(mlm_parameters(model, MASK_RATE), shape.layers, shape.hidden, seq_len)
    timing = _timed(step, batches, budget_tokens, warmup, device)
    profiled = profile_steps(step, batches, PROFILED_STEPS) if breakdown and device.type == "cpu" else None
    return timing, per_token, profiled


def _hf_side(tokenizer, batches, shape, vocab_size, budget_tokens, device, bf16, warmup) -> dict:
    """The plain HF step over ready batches: BertForMaskedLM (the full-vocabulary decoder at every
    position), torch AdamW."""
    from bioray.model.encoder import build_mlm_model

    torch.manual_seed(0)
    model = build_mlm_model(vocab_size, tokenizer.pad_token_id, **shape.model_dump()).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(batch):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return _timed(step, batches, budget_tokens, warmup, device)


def _baseline_side(tokenizer, encoded, shape, vocab_size, batch_size, budget_tokens, device, bf16, warmup) -> dict:
    """(b): one sentence per example, padded per batch (run_mlm.py --line_by_line)."""
    examples = [{"input_ids": [tokenizer.cls_token_id, *sentence, tokenizer.sep_token_id]} for sentence in encoded]
    return _hf_side(tokenizer, hf_batches(tokenizer, examples, batch_size), shape, vocab_size, budget_tokens, device,
                    bf16, warmup)


def _packed_baseline_side(tokenizer, encoded, shape, vocab_size, seq_len, batch_size, budget_tokens, device, bf16,
                          warmup) -> dict:
    """(c): the same sentences grouped into full blocks of seq_len (run_mlm.py without --line_by_line)."""
    blocks = pack_blocks(encoded, seq_len, tokenizer.cls_token_id, tokenizer.sep_token_id)
    examples = [{"input_ids": block} for block in blocks.tolist()]
    return _hf_side(tokenizer, hf_batches(tokenizer, examples, batch_size), shape, vocab_size, budget_tokens, device,
                    bf16, warmup)


def utilisation(tokens_per_s: float, per_token: float, vendor_peak: float | None, measured_peak: float) -> dict:
    """An arm's model FLOP/s, its MFU against the vendor peak (GPU; None elsewhere) and its fraction of
    the machine's measured GEMM peak."""
    achieved = tokens_per_s * per_token
    return {"achieved_flops": achieved, "mfu": achieved / vendor_peak if vendor_peak else None,
            "peak_fraction": achieved / measured_peak}


def _gemm_peak(shape: ModelConfig, vocab_size: int, seq_len: int, batch_size: int, device: torch.device,
               bf16: bool) -> tuple[list, dict]:
    """The step's linear layers (a full batch of tokens, 15% of them masked) and their measured peak."""
    tokens = batch_size * seq_len
    gemms = model_gemms(shape, tokens, round(MASK_RATE * tokens), vocab_size)
    return gemms, measure_peak(gemms, device=device, dtype=torch.bfloat16 if bf16 else torch.float32)


def _setting(tokenizer, encoded: list[list[int]], shape: ModelConfig, vocab_size: int, seq_len: int,
             batch_size: int, budget_tokens: int, device: torch.device, fast: PretrainFastPathConfig, bf16: bool,
             warmup: int, peak: float | None, breakdown: bool = True) -> dict:
    """One sequence length: the GEMM peak, bioray's step, the peak again, then the two baselines', on the
    same sentences and device."""
    encoded = [ids[: seq_len - 2] for ids in encoded]
    gemms, before = _gemm_peak(shape, vocab_size, seq_len, batch_size, device, bf16)
    bioray, per_token, profiled = _bioray_side(tokenizer, encoded, shape, vocab_size, seq_len, batch_size,
                                               budget_tokens, device, fast, bf16, warmup, breakdown)
    # Measured on both sides of bioray's arm, the best kept: other work on the machine only slows a GEMM.
    measured = best_peak(before, _gemm_peak(shape, vocab_size, seq_len, batch_size, device, bf16)[1])
    if profiled is not None and profiled["kinds"]["gemm"]["seconds"]:
        profiled["gemm_flops_per_s"] = (step_gemm_flops(gemms) * profiled["steps"]
                                        / profiled["kinds"]["gemm"]["seconds"])
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the first side's model and optimizer are gone with its function
    reference = _baseline_side(tokenizer, encoded, shape, vocab_size, batch_size, budget_tokens, device, bf16, warmup)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    packed = _packed_baseline_side(tokenizer, encoded, shape, vocab_size, seq_len, batch_size, budget_tokens, device,
                                   bf16, warmup)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    for side in (bioray, reference, packed):
        side.update(utilisation(side["tokens_per_s"], per_token, peak, measured["flops_per_s"]))
    return {"seq_len": seq_len, "batch_size": batch_size, "budget_tokens": budget_tokens,
            "flops_per_token": per_token, "measured_peak_flops": measured["flops_per_s"], "measured_peak": measured,
            "peak_fraction": bioray["peak_fraction"], "breakdown": profiled,
            "bioray": bioray, "baseline": reference, "packed_baseline": packed,
            "ratio": bioray["tokens_per_s"] / reference["tokens_per_s"],
            "packed_baseline_tokens_per_s": packed["tokens_per_s"],
            "packed_ratio": bioray["tokens_per_s"] / packed["tokens_per_s"]}


def bench_pretrain(data: Path, tokenizer_dir: Path | None = None, budget_tokens: int | None = None,
                   device: str = "cpu", seq_lens: tuple[int, ...] | None = None,
                   fast: PretrainFastPathConfig | None = None, size: str | None = None,
                   breakdown: bool = True) -> dict:
    """Every arm at every sequence length; size is tiny or base (default: the device's, see DEVICES);
    breakdown: profile a few bioray steps per setting (CPU)."""
    from transformers import AutoTokenizer

    from bioray.data.vocab import train_wordpiece
    from bioray.train.flops import peak_flops

    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench pretrain --device cuda: torch sees no CUDA device here")
    settings = DEVICES[device]
    size = size or settings["size"]
    run = RUNS[device, size]
    shape = SIZES[size][0]
    torch_device = torch.device(device)
    fast = fast or PretrainFastPathConfig(compile=settings["compile"])
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    sentences = read_sentences(data, limit_bytes=4_000_000)
    if tokenizer_dir is None:  # not timed: an input of the benchmark
        tokenizer = train_wordpiece(sentences, BERT_BASE_VOCAB, lowercase=False, min_frequency=2)
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    vocab_size = model_vocab_size(size, len(tokenizer))
    encoded = tokenizer(sentences, add_special_tokens=False)["input_ids"]
    name = _device_name(torch_device)
    peak = peak_flops(name) if device == "cuda" else None
    load_before = os.getloadavg()  # other work on the machine: the numbers mean less under load
    results = []
    for seq_len in seq_lens or settings["seq_lens"]:
        batch = run["batch"].get(seq_len, 8)
        budget = budget_tokens or run.get("tokens") or run["steps"] * batch * seq_len
        results.append(_setting(tokenizer, encoded, shape, vocab_size, seq_len, batch, budget, torch_device, fast,
                                settings["bf16"], run["warmup"], peak, breakdown))
    return {
        "date": datetime.date.today().isoformat(),
        "device": device,
        "device_name": name,
        "peak_tflops": peak / 1e12 if peak else None,
        "versions": _versions(),
        "torch_threads": torch.get_num_threads(),
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "model_size": size,
        "model": shape.model_dump(),
        "vocab_size": len(tokenizer),
        "model_vocab_size": vocab_size,
        "warmup_steps": run["warmup"],
        "precision": "bf16" if settings["bf16"] else "fp32",
        "fast": fast.model_dump(),
        "settings": results,
    }


def render(result: dict) -> str:
    """The result as the table `bioray bench pretrain` prints: a line per side and sequence length."""
    model = result["model"]
    lines = [f"{result['device_name']} ({result['device']}, {result['precision']}), BERT {result['model_size']} "
             f"{model['layers']} x {model['hidden']}, vocab {result['model_vocab_size']} rows "
             f"({result['vocab_size']} WordPiece pieces), {result['torch_threads']} torch threads, load average "
             f"{result['load_average']['before'][0]:.2f} before, {result['load_average']['after'][0]:.2f} after"]
    for setting in result["settings"]:
        for side, label in (("bioray", "bioray"), ("baseline", "HF line-by-line"), ("packed_baseline", "HF packed")):
            row = setting[side]
            mfu = f", MFU {row['mfu']:.1%}" if row["mfu"] is not None else ""
            mfu += f", {row['peak_fraction']:.1%} of measured peak"
            memory = f", peak {row['peak_memory_mb']:.0f} MiB" if row["peak_memory_mb"] is not None else ""
            lines.append(f"T={setting['seq_len']:<4d} {label:15s} {row['tokens_per_s']:12.0f} real tokens/s "
                         f"{row['sequences_per_s']:9.1f} seq/s (fill {row['fill_ratio']:.2f}{mfu}{memory})")
        lines.append(f"T={setting['seq_len']:<4d} ratio to line-by-line {setting['ratio']:.2f}, "
                     f"to packed {setting['packed_ratio']:.2f}")
        measured = setting["measured_peak"]
        lines.append(f"T={setting['seq_len']:<4d} measured GEMM peak {measured['flops_per_s'] / 1e9:.1f} GFLOP/s "
                     f"({measured['dtype']}, {measured['threads']} threads, the model's shapes); bioray at "
                     f"{setting['peak_fraction']:.1%} of it")
        if setting["breakdown"]:
            lines += render_breakdown(setting["breakdown"])
    return "\n".join(lines)
