"""Fused RNN-T joint + loss (zoo.kernels.rnnt) against the materialised joint + torchaudio.functional.rnnt_loss.

On a machine without CUDA the kernels run under the Triton CPU interpreter (TRITON_INTERPRET=1, set by
tests/conftest.py), in exact fp32 ("ieee" dots); the gpu-marked case checks the bf16 and fp32 GPU paths.
"""
import os

import pytest
import torch

pytest.importorskip("torchaudio")
triton = pytest.importorskip("triton")

from zoo.kernels.rnnt import fused_rnnt_loss, rnnt_joint_loss_reference  # noqa: E402

_CPU = not torch.cuda.is_available()
# CPU tensors through the Triton kernels: only under the interpreter (on a GPU machine the gpu-marked case runs them)
needs_interp = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="TRITON_INTERPRET unset")


def _case(b, t, u, j, v, bias=True, seed=0, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(b, t, j, generator=g).to(device, dtype).requires_grad_()
    lab = torch.randn(b, u + 1, j, generator=g).to(device, dtype).requires_grad_()
    w = (torch.randn(v, j, generator=g) * j ** -0.5).to(device).requires_grad_()
    bb = torch.randn(v, generator=g).to(device).requires_grad_() if bias else None
    y = torch.randint(1, v, (b, u), generator=g).to(device)
    return a, lab, w, bb, y


def _grads(loss, ins):
    return torch.autograd.grad(loss, [x for x in ins if x is not None])


@needs_interp
def test_fused_matches_torchaudio_chunked_joint_and_ragged_lengths():
    """J 20 (two joint chunks), V 19 (two vocabulary chunks), bias, an utterance with no labels; per-utterance
    losses and every gradient to 1e-4."""
    a, lab, w, bb, y = _case(3, 6, 4, 20, 19)
    tlen, ulen = torch.tensor([6, 4, 5]), torch.tensor([4, 2, 0])
    got = fused_rnnt_loss(a, lab, w, bb, y, tlen, ulen, blank=0, reduction="none", backend="triton")
    ref = rnnt_joint_loss_reference(a, lab, w, bb, y, tlen, ulen, blank=0, reduction="none")
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    wts = torch.tensor([0.5, -1.0, 2.0])
    for g, r in zip(_grads((got * wts).sum(), [a, lab, w, bb]), _grads((ref * wts).sum(), [a, lab, w, bb])):
        torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4)


@needs_interp
def test_fused_single_joint_chunk_no_bias_last_blank_mean():
    a, lab, w, _, y = _case(2, 5, 3, 16, 12, bias=False, seed=1)
    tlen, ulen = torch.tensor([5, 3]), torch.tensor([3, 3])
    got = fused_rnnt_loss(a, lab, w, None, y - 1, tlen, ulen, blank=11, backend="triton")
    ref = rnnt_joint_loss_reference(a, lab, w, None, y - 1, tlen, ulen, blank=11)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    for g, r in zip(_grads(got, [a, lab, w]), _grads(ref, [a, lab, w])):
        torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4)


def test_bad_arguments():
    a, lab, w, bb, y = _case(2, 4, 3, 8, 6)
    tlen, ulen = torch.tensor([4, 4]), torch.tensor([3, 3])
    with pytest.raises(ValueError, match="targets"):
        fused_rnnt_loss(a, lab, w, bb, y[:, :2], tlen, ulen)
    with pytest.raises(ValueError, match="blank"):
        fused_rnnt_loss(a, lab, w, bb, y, tlen, ulen, blank=6)
    with pytest.raises(ValueError, match="reduction"):
        fused_rnnt_loss(a, lab, w, bb, y, tlen, ulen, reduction="avg")


def test_reference_backend_is_torchaudio_on_materialised_joint():
    a, lab, w, bb, y = _case(2, 4, 3, 8, 6)
    tlen, ulen = torch.tensor([4, 3]), torch.tensor([3, 1])
    got = fused_rnnt_loss(a, lab, w, bb, y, tlen, ulen, backend="reference", reduction="sum")
    import torchaudio

    logits = torch.tanh(a[:, :, None] + lab[:, None]) @ w.T + bb
    ref = torchaudio.functional.rnnt_loss(logits, y.int(), tlen.int(), ulen.int(), blank=0, reduction="sum")
    torch.testing.assert_close(got, ref)


@pytest.mark.gpu
@pytest.mark.skipif(_CPU, reason="needs CUDA")
@pytest.mark.parametrize("precision,tol", [("ieee", 1e-4), ("tf32", 2e-2), ("bf16", 5e-2)])
def test_fused_gpu(precision, tol):
    """B4 T60 U20 J512 V1024 on the GPU (the benchmark's kernel specialisation): exact fp32 to 1e-4, tf32/bf16
    tensor-core operands to a relative bound."""
    a, lab, w, bb, y = _case(4, 60, 20, 512, 1024, device="cuda")
    tlen = torch.tensor([60, 41, 55, 30], device="cuda")
    ulen = torch.tensor([20, 13, 0, 20], device="cuda")
    got = fused_rnnt_loss(a, lab, w, bb, y, tlen, ulen, reduction="none", precision=precision)
    ref = rnnt_joint_loss_reference(a, lab, w, bb, y, tlen, ulen, reduction="none")
    torch.testing.assert_close(got, ref, atol=tol, rtol=tol)
    for g, r in zip(_grads(got.sum(), [a, lab, w, bb]), _grads(ref.sum(), [a, lab, w, bb])):
        err = ((g - r).norm() / r.norm()).item()
        assert err < tol, (precision, err)


@needs_interp
def test_transducer_forward_fused_loss_matches_materialised_joint():
    """The model's ``fused_loss`` switch: same loss and joint/encoder gradients as the torchaudio path."""
    from zoo.registry import create_model

    torch.manual_seed(0)
    m = create_model("transformer_transducer_small", vocab_size=12, blank=0, joint_dim=32).eval()
    audio, al = torch.randn(2, 4000), torch.tensor([4000, 3000])
    tg, tgl = torch.randint(1, 12, (2, 3)), torch.tensor([3, 2])
    params = [m.joint_out.weight, m.joint_out.bias, m.audio_proj.weight, m.label_proj.weight]
    ref = m(audio, al, tg, tgl)["loss"]
    got = m(audio, al, tg, tgl, fused_loss=True)["loss"]
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    for g, r in zip(torch.autograd.grad(got, params), torch.autograd.grad(ref, params)):
        torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4)
