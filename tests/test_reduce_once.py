"""fast.reduce_once_per_step: with gradient accumulation, real DeepSpeed engines on two gloo ranks
reduce gradients at the optimizer step only, and train exactly as the per-micro-batch reduction does."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from bioray.config import ModelConfig, PretrainConfig
from bioray.constants import IGNORE_INDEX
from tests.support.gloo import run_ranks

REDUCTIONS = ("all_reduce", "reduce", "reduce_scatter", "reduce_scatter_tensor")
SHAPE = ModelConfig(layers=1, hidden=32, heads=2, intermediate=64, max_position=32, dropout=0.0)


def _batch(rank: int, micro: int) -> dict:
    generator = torch.Generator().manual_seed(rank * 100 + micro)
    input_ids = torch.randint(5, 100, (2, 16), generator=generator)
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[:, ::4] = input_ids[:, ::4]
    return {"input_ids": input_ids, "token_type_ids": torch.zeros_like(input_ids),
            "attention_mask": torch.ones_like(input_ids), "labels": labels}


def _engine_run(rank: int, reduce_once: bool, calls: dict) -> dict:
    """Two optimizer steps of 4 micro-batches each: reductions counted after every micro-batch."""
    from bioray.model.encoder import build_mlm_model, pretraining_loss
    from bioray.train.deepspeed import build_engine

    config = PretrainConfig(model=SHAPE, num_workers=2, global_batch_size=16, micro_batch_size=2, zero_stage=2,
                            steps=2, warmup_steps=0, fast={"reduce_once_per_step": reduce_once})
    torch.manual_seed(0)
    engine, _ = build_engine(build_mlm_model(100, 0, **SHAPE.model_dump()), config, use_gpu=False)
    per_micro, accum = [], config.grad_accum_steps
    for micro in range(2 * accum):
        engine.set_gradient_accumulation_boundary((micro + 1) % accum == 0)
        before = calls["n"]
        loss, _ = pretraining_loss(engine.module, _batch(rank, micro))
        engine.backward(loss)
        engine.step()
        per_micro.append(calls["n"] - before)
    weights = engine.module.bert.encoder.layer[0].output.dense.weight.detach().float()
    return {"per_micro": per_micro, "accum": accum, "stage": config.effective_zero_stage,
            "weights": weights.flatten()[:64].tolist()}


def _count_reductions_each_way(rank: int) -> dict:
    calls = {"n": 0}
    for name in REDUCTIONS:  # DeepSpeed's comm layer calls these through the torch.distributed module
        original = getattr(dist, name)

        def counted(*args, _original=original, **kwargs):
            calls["n"] += 1
            return _original(*args, **kwargs)

        setattr(dist, name, counted)
    return {str(on): _engine_run(rank, on, calls) for on in (True, False)}


@pytest.mark.timeout(600)
def test_gradients_are_reduced_once_per_accumulated_step():
    results = run_ranks(_count_reductions_each_way)
    once, every = results["True"], results["False"]
    print("reductions per micro-batch, switch on:", once["per_micro"], "off:", every["per_micro"])
    assert once["accum"] == every["accum"] == 4
    assert (once["stage"], every["stage"]) == (1, 2)
    boundaries = [(i + 1) % 4 == 0 for i in range(8)]
    # switch on: nothing crosses the network between optimizer steps
    assert [n for n, b in zip(once["per_micro"], boundaries) if not b] == [0, 0, 0, 0, 0, 0]
    assert all(n > 0 for n, b in zip(once["per_micro"], boundaries) if b)
    # switch off (ZeRO-2): a reduction after every micro-batch
    assert all(n > 0 for n in every["per_micro"])
    # and both train the same model
    torch.testing.assert_close(torch.tensor(once["weights"]), torch.tensor(every["weights"]), atol=1e-6, rtol=1e-5)
