"""Text-to-speech tasks: next-token training of codec-token TTS models (Lina-Speech), and initial-state tuning.

Batches are :func:`zoo.models.lina_speech.collate` dicts (``text_token``, ``audio_token``, ``encoder_mask``,
``crossatt_mask``, ``y_mask``). The loss is the authors' next-token cross-entropy over every codebook
(``ignore_index=1``), masked by the audio lengths. Recipe (the authors'): AdamW (0.9, 0.999, wd 0.1), cosine with
warm-up, bf16-mixed, gradient clipping 1.0 (set in the trainer config).
"""
from __future__ import annotations

from typing import Any

import torch

from zoo.tasks.base import ZooTask

__all__ = ["TextToSpeechTask", "tune_initial_states"]


class TextToSpeechTask(ZooTask):
    """Teacher-forced next-token training of a Lina-Speech model.

    Logs ``loss`` and ``acc`` (top-1 next-token accuracy on non-special targets) per stage.
    """

    def __init__(self, model: str = "lina_speech_small", model_args: dict | None = None,
                 pretrained: bool | str = False, optimizer: dict | None = None, scheduler: dict | None = None):
        optimizer = optimizer or {"name": "adamw", "lr": 1e-3, "weight_decay": 0.1, "betas": [0.9, 0.999]}
        scheduler = scheduler or {"name": "cosine", "warmup_steps": 100, "min_lr_ratio": 0.05}
        super().__init__(model, model_args, pretrained, optimizer, scheduler)

    def step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        out = self.model(batch["text_token"], batch["audio_token"], batch["encoder_mask"], batch["crossatt_mask"],
                         logits_mask=batch["y_mask"], need_weights=False)
        tgt = out.masked_target
        keep = tgt > 2
        acc = (out.masked_logits.argmax(-1)[keep] == tgt[keep]).float().mean() if keep.any() else out.loss * 0
        self.log_metrics(stage, {"loss": out.loss, "acc": acc}, batch_size=batch["text_token"].shape[0],
                         prog_bar=("loss",))
        return out.loss

    def model_card_info(self) -> dict[str, Any]:
        info = super().model_card_info()
        info["recipe"].update({"loss": "next-token cross-entropy over all codebooks (ignore_index=1)"})
        return info


def tune_initial_states(model, batches, steps: int, lr: float = 0.1, rank: int | None = 1, scale: float = 0.02,
                        grad_acc: int = 1, seed: int = 0, log_every: int = 0, log=print):
    """Initial-state tuning as the authors' ``train_initial_state``: only the low-rank S0 factors
    (:class:`zoo.models.lina_speech.InitialStates`) are optimised (Adam, ``lr``), the model is frozen, in train mode
    (dropout active), GLA in recurrent mode. ``batches``: an iterator of collate dicts (on the model's device),
    cycled. Returns (InitialStates, list of losses)."""
    from zoo.models.lina_speech import InitialStates

    g = torch.Generator().manual_seed(seed)
    ist = InitialStates(model, rank=rank, scale=scale, generator=g)
    req = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    was_training = model.training
    model.train()
    opt = torch.optim.Adam(ist.parameters(), lr=lr)
    losses = []
    dev_type = model.txt_embed.weight.device.type
    try:
        for i in range(steps * grad_acc):
            b = next(batches)
            with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=dev_type == "cuda"):
                out = model(b["text_token"], b["audio_token"], b["encoder_mask"], b["crossatt_mask"],
                            logits_mask=b["y_mask"], init_state=ist(), need_weights=False)
            (out.loss / grad_acc).backward()
            losses.append(out.loss.item())
            if i % grad_acc == grad_acc - 1:
                opt.step()
                opt.zero_grad()
            if log_every and i % log_every == 0:
                log(f"ist step {i // grad_acc}: loss {losses[-1]:.4f}")
    finally:
        for p, r in zip(model.parameters(), req):
            p.requires_grad_(r)
        model.train(was_training)
    return ist, losses
