"""Fisher objectives under a bf16 head: the head matmul is fp32 (chunked), never rounded to bf16."""

from __future__ import annotations

import pytest
import torch

from jepa_audit.objectives import fisher
from jepa_audit.objectives.fisher import fisher_quadratic, head


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(fisher, "HEAD_CHUNK", 96)  # V = 1000: 11 chunks, the last one short


@pytest.mark.parametrize("autocast", [False, True])
def test_bf16_head_equals_the_fp32_computation(small_chunks, autocast):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(1000, 64, generator=g).to(torch.bfloat16).requires_grad_()
    x = torch.randn(37, 64, generator=g, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        s = head(W, x)
    exact = x.detach().double() @ W.detach().double().T  # W's bf16 values, exactly
    assert s.dtype == torch.float32 and s.shape == (37, 1000)
    torch.testing.assert_close(s.double(), exact, rtol=1e-5, atol=1e-5)
    rounded = (x.detach().to(torch.bfloat16) @ W.detach().T).double()  # the old path: off by ~1e-2
    assert (rounded - exact).abs().max() > 100 * (s.double() - exact).abs().max()
    s.square().sum().backward()
    assert W.grad is not None and W.grad.dtype == torch.bfloat16 and x.grad is not None
    gx = 2 * exact @ W.detach().double()
    torch.testing.assert_close(x.grad.double(), gx, rtol=1e-4, atol=1e-3)


def test_fp32_head_under_autocast_stays_fp32():
    g = torch.Generator().manual_seed(1)
    W, x = torch.randn(300, 32, generator=g), torch.randn(5, 32, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s = head(W, x)
    torch.testing.assert_close(s, x @ W.T, rtol=1e-6, atol=1e-5)


def test_fisher_quadratic_with_bf16_head_matches_fp32(small_chunks):
    g = torch.Generator().manual_seed(2)
    W = torch.randn(1000, 64, generator=g).to(torch.bfloat16)
    p = torch.softmax(torch.randn(8, 1000, generator=g), -1)
    delta = torch.randn(8, 64, generator=g) * 1e-2  # small steps: where bf16 logits would be noise
    torch.testing.assert_close(fisher_quadratic(W, p, delta), fisher_quadratic(W.float(), p, delta),
                               rtol=1e-5, atol=1e-9)
