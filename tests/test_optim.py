import math

import torch

from bioray.train.optim import Lamb, warmup_decay


def test_lamb_step_matches_the_paper_formula():
    torch.manual_seed(0)
    weight = torch.randn(4, 3)
    grad = torch.randn(4, 3)
    param = torch.nn.Parameter(weight.clone())
    param.grad = grad.clone()
    Lamb([param], lr=0.1, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.01).step()

    m_hat = (0.1 * grad) / 0.1  # first step: bias correction undoes the (1 - beta) factor
    v_hat = (0.01 * grad * grad) / 0.01
    update = m_hat / (v_hat.sqrt() + 1e-6) + 0.01 * weight
    expected = weight - 0.1 * (weight.norm() / update.norm()) * update
    assert torch.allclose(param.data, expected, atol=1e-6)


def test_lamb_trains_a_small_regression():
    torch.manual_seed(0)
    x, true_w = torch.randn(256, 8), torch.randn(8, 1)
    y = x @ true_w
    model = torch.nn.Linear(8, 1)
    optimizer = Lamb(model.parameters(), lr=0.05)
    first = None
    for _ in range(200):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        first = first if first is not None else loss.item()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05 * first


def test_warmup_then_linear_or_polynomial_decay():
    linear, poly = warmup_decay(10, 110), warmup_decay(10, 110, power=2.0)
    assert linear(0) == 0.1 and linear(9) == 1.0 and linear(10) == 1.0
    assert math.isclose(linear(60), 0.5) and math.isclose(poly(60), 0.25) and linear(110) == 0.0
    hf = warmup_decay(10, 110, first=0)  # fine-tuning: HF Trainer's and Google BERT's warmup, from lr 0
    assert hf(0) == 0.0 and hf(5) == 0.5 and hf(10) == 1.0 and math.isclose(hf(60), 0.5)


def test_flops_per_token_counts_dense_and_attention_terms():
    from bioray.train.flops import flops_per_token

    # BERT-base: 110M parameters, 12 layers, 768 hidden, 128 tokens
    assert flops_per_token(110_000_000, 12, 768, 128) == 6 * 110_000_000 + 12 * 12 * 768 * 128
