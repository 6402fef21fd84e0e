"""Packed regex views: the packing is lossless, and a packed forward gives each view its own padded states."""

from __future__ import annotations

import pytest
import torch

from _objective_helpers import CORE_AND_LLM_JEPA
from conftest import (
    assert_same_loss_and_grads,
    lora64,
    make_tiny_llama,
    make_toy_batch,
    ragged_rows,
    step_loss_and_grads,
    train_four_steps,
)
from jepa_audit.config import AdapterCfg
from jepa_audit.data.packing import pack_rows
from jepa_audit.models.load import build_model
from jepa_audit.objectives.base import target_view_hidden


def ragged(lens: list[int], vocab: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    T = max(lens)
    ids = torch.zeros(len(lens), T, dtype=torch.long)
    mask = torch.zeros(len(lens), T, dtype=torch.long)
    for b, n in enumerate(lens):
        ids[b, :n] = torch.randint(1, vocab, (n,), generator=g)
        mask[b, :n] = 1
    return ids, mask


@pytest.mark.parametrize("decreasing", [False, True])
@pytest.mark.parametrize("lens,capacity", [([3, 5, 2, 7, 1, 4], 8), ([4], 4), ([2, 2, 2, 2], 100), ([5, 5, 5], 5)])
def test_pack_rows_is_lossless_and_restarts_positions(lens, capacity, decreasing):
    ids, mask = ragged(lens)
    p = pack_rows(ids, mask, capacity, filler=0, decreasing=decreasing)
    R, C = p.ids.shape
    assert len(lens) >= R and capacity >= C
    assert sum(lens) <= R * C  # nothing dropped
    flat_ids, flat_pos = p.ids.flatten(), p.pos.flatten()
    for b, n in enumerate(lens):
        assert flat_ids[p.unpack[b, :n]].tolist() == ids[b, :n].tolist()
        assert flat_pos[p.unpack[b, :n]].tolist() == list(range(n))  # each view starts at position 0
        assert (p.unpack[b, n:] == p.unpack[b, n - 1]).all()  # pads repeat the last real token
    # every packed slot is used by at most one view
    real = torch.cat([p.unpack[b, :n] for b, n in enumerate(lens)])
    assert real.unique().numel() == real.numel() == sum(lens)


def test_pack_rows_is_first_fit_and_deterministic():
    ids, mask = ragged([5, 4, 3, 1])
    p = pack_rows(ids, mask, capacity=8)
    # 5 → row 0; 4 does not fit (9 > 8) → row 1; 3 → row 0 (8); 1 → row 1 (5)
    assert p.unpack[:, 0].tolist() == [0, 8 + 0, 5, 8 + 4]
    q = pack_rows(ids, mask, capacity=8)
    assert torch.equal(p.ids, q.ids) and torch.equal(p.pos, q.pos) and torch.equal(p.unpack, q.unpack)


def test_pack_rows_first_fit_decreasing_places_longest_first():
    ids, mask = ragged([2, 3, 5, 4, 6])
    p = pack_rows(ids, mask, capacity=8, decreasing=True)
    # 6 → row 0; 5 → row 1; 4 → row 2; 3 → row 1 (8); 2 → row 0 (8): 3 rows, where batch order needs 4
    assert p.unpack[:, 0].tolist() == [0 * 8 + 6, 1 * 8 + 5, 1 * 8 + 0, 2 * 8 + 0, 0 * 8 + 0]
    assert p.ids.shape[0] == 3 < pack_rows(ids, mask, capacity=8).ids.shape[0]


def test_pack_rows_rejects_bad_input():
    ids, mask = ragged([3, 6])
    with pytest.raises(ValueError, match="capacity 4"):
        pack_rows(ids, mask, capacity=4)
    mask[0] = 0
    with pytest.raises(ValueError, match="at least one real token"):
        pack_rows(ids, mask, capacity=8)
    with pytest.raises(ValueError, match="one \\(B, T\\) shape"):
        pack_rows(ids, mask[:, :2], capacity=8)


def test_batch_packs_its_regex_views_and_moves_them():
    b = make_toy_batch(B=6)
    assert b.target_packed_ids.shape[0] <= 6 and b.target_packed_ids.shape[1] <= b.input_ids.shape[1]
    real = b.target_mask.bool()
    assert torch.equal(b.target_packed_ids.flatten()[b.target_unpack][real], b.target_ids[real])
    moved = b.to("cpu")
    assert torch.equal(moved.target_unpack, b.target_unpack)


@pytest.mark.parametrize("mode", ["none", "lora"])
def test_packed_view_states_equal_padded_rows(mode):
    """Each view attends only to itself: states on real tokens equal the padded forward, at every layer."""
    model = make_tiny_llama()
    if mode == "lora":
        model = build_model(model, AdapterCfg(mode="lora", rank=4, dropout=0.0), seed=0)
        model.train()  # training mode, as in the loop (dropout 0: nothing random)
    b = make_toy_batch(B=7, seed=3)
    with torch.no_grad():
        ref = model(input_ids=b.target_ids, attention_mask=b.target_mask, output_hidden_states=True).hidden_states
        packed = target_view_hidden(model, b)
    real = b.target_mask.bool()
    assert len(packed) == len(ref)
    for h_ref, h_pk in zip(ref, packed, strict=True):
        assert h_pk.shape == h_ref.shape
        torch.testing.assert_close(h_pk[real], h_ref[real], atol=1e-5, rtol=1e-5)
    assert b.target_packed_ids.numel() < b.target_ids.numel()  # fewer token slots than the padded rows


def test_packed_view_gradients_equal_padded_rows():
    """The packed forward is differentiable like the padded one: same gradient of a view loss (in float64, so
    the comparison sees the maths, not fp32 summation order)."""
    torch.manual_seed(0)
    b = make_toy_batch(B=5, seed=1)
    ar = torch.arange(5)

    def grads(packed: bool) -> list[torch.Tensor]:
        model = build_model(make_tiny_llama(), AdapterCfg(mode="lora", rank=4, dropout=0.0), seed=0).double()
        g = torch.Generator().manual_seed(7)
        with torch.no_grad():  # LoRA B starts at 0, which would leave A's gradient 0 on both sides
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64))
        if packed:
            h = target_view_hidden(model, b)[-1]
        else:
            h = model(input_ids=b.target_ids, attention_mask=b.target_mask, output_hidden_states=True).hidden_states[-1]
        h[ar, b.target_last].pow(2).sum().backward()
        return [p.grad.clone() for p in model.parameters() if p.requires_grad]

    g_packed, g_padded = grads(True), grads(False)
    assert all(g.abs().sum() > 0 for g in g_padded)
    for g_pk, g_ref in zip(g_packed, g_padded, strict=True):
        torch.testing.assert_close(g_pk, g_ref, atol=1e-12, rtol=1e-9)


def test_batch_select_repacks_the_chosen_rows():
    b = make_toy_batch(B=6, seed=2)
    rows = torch.tensor([4, 1, 3])
    s = b.select(rows)
    assert torch.equal(s.input_ids, b.input_ids[rows]) and torch.equal(s.target_ids, b.target_ids[rows])
    real = s.target_mask.bool()
    assert torch.equal(s.target_packed_ids.flatten()[s.target_unpack][real], s.target_ids[real])


def test_packed_views_of_an_hf_llama_directory_equal_its_padded_rows(tmp_path):
    """The real path: a Llama-3-templated HF directory, its own chat rows through `collate`, LoRA in training
    mode; the packed regex views give the states of the padded rows on every real token."""
    from conftest import make_hf_llama_dir
    from jepa_audit.cell import prepare
    from jepa_audit.config import load_config
    from jepa_audit.data.views import collate

    texts = ["lines containing the word dog", ".*dog.*", "lines with a number", ".*[0-9].*"] * 20
    d = make_hf_llama_dir(tmp_path / "llama", texts)
    cfg = load_config(None, None, ["model.kind=hf", f"model.path={d}", "data.n_train=64", "data.n_test=8",
                                   "data.val_size=8", "data.geometry_size=16", "adapter.dropout=0.0"])
    prep = prepare(cfg)
    b = collate(prep.train_rows[:12], int(prep.tok.pad_token_id))
    assert b.target_packed_ids.shape[0] < 12  # the views did pack into fewer rows
    prep.model.train()
    with torch.no_grad():
        ref = prep.model(input_ids=b.target_ids, attention_mask=b.target_mask, output_hidden_states=True).hidden_states
        packed = target_view_hidden(prep.model, b)
    real = b.target_mask.bool()
    for h_ref, h_pk in zip(ref, packed, strict=True):
        torch.testing.assert_close(h_pk[real], h_ref[real], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# train.pack: the CE rows packed (train.forward_rows)
# ----------------------------------------------------------------------------------------------------------


def test_packed_ce_rows_compute_no_padding_and_unpack_to_the_padded_layout():
    from jepa_audit.train import forward_rows, pack_ce_rows

    b = make_toy_batch(B=7, seed=4)
    assert pack_ce_rows(b, "none") is None
    assert pack_ce_rows(b, "longest").ids.shape[1] == b.input_ids.shape[1]
    p = pack_ce_rows(b, "flat")
    assert p.ids.shape[0] == 1 and p.ids.numel() == int(b.attention_mask.sum())  # not one padding slot
    model = lora64()
    with torch.no_grad():
        h_pad, lg_pad = forward_rows(model, b)
        h_pk, lg_pk = forward_rows(model, b, p)
    real = b.attention_mask.bool()
    assert lg_pk.shape == lg_pad.shape and len(h_pk) == len(h_pad)
    torch.testing.assert_close(lg_pk[real], lg_pad[real], atol=1e-12, rtol=1e-10)
    for a, c in zip(h_pk, h_pad, strict=True):
        torch.testing.assert_close(a[real], c[real], atol=1e-12, rtol=1e-10)


CORE = CORE_AND_LLM_JEPA  # the registry's core flag, plus llm-jepa


@pytest.mark.parametrize("method", [None, *CORE])
def test_packed_and_padded_steps_give_the_same_loss_and_gradients(method):
    """CE + λ·aux on the packed CE rows equals the padded forward's, loss and every trainable gradient, in
    float64 (so the comparison sees the maths, not fp32 summation order), for CE and every core objective."""
    from jepa_audit.train import pack_ce_rows

    b = make_toy_batch(B=6, seed=5)
    packed = pack_ce_rows(b, "flat")
    assert_same_loss_and_grads(step_loss_and_grads(b, method, packed), step_loss_and_grads(b, method), method)


@pytest.mark.slow  # trains the tiny model twice (packed, padded) to the end
def test_packed_training_ends_at_the_same_weights():
    """A few real steps of train.train with train.pack on and off, float64: same data order, same losses, same
    trained weights (CE and a two-view objective)."""
    rows = ragged_rows()
    for method in (None, "llm-jepa"):
        loss_pad, w_pad, _ = train_four_steps(rows, method, pack="none")
        rel = 1e-9 if method is None else 1e-5  # the objective's own fp32 maths
        for how in ("flat", "longest"):
            loss_pk, w_pk, _ = train_four_steps(rows, method, pack=how)
            assert loss_pk == pytest.approx(loss_pad, rel=rel, abs=1e-12)
            for a, c in zip(w_pk, w_pad, strict=True):
                torch.testing.assert_close(a, c, atol=rel * 1e-2, rtol=rel)
