"""Lina-Speech end to end: train a small Lina on the offline token corpus, generate, IST vs full fine-tune, RTF,
then (on a CPU with pocketsphinx and espeak-ng) the intelligibility / speaker-similarity tables.

    # GPU (scripts/gpu/suites/lina_speech.sh): train, publish, generate, IST, GPU RTF -> $ART
    python benchmarks/lina_speech.py gpu --data zoo/datasets/data/lina_offline --out $ART [--train-seconds 70] [--smoke]
    # CPU afterwards, from the returned folder: pocketsphinx WER (a) espeak audio, (b) codec resynthesis of the
    # ground-truth tokens, (c) Lina's generations; IST speaker-similarity proxy; RTF on 2 CPU cores; export check
    python benchmarks/lina_speech.py cpu --art runs/lina_gpu --data zoo/datasets/data/lina_offline

WER uses pocketsphinx (PyPI, its bundled US English acoustic model and language model; nobody here trained it),
after lowercasing and stripping punctuation. Speaker-similarity proxies against the held-out voice's reference
audio (espeak-ng renderings of the same test sentences): |mean F0 difference| (Hz, torchaudio's pitch detector on
voiced frames) and the L1 distance of mean log-mel spectra.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

import zoo
from zoo.datasets.lina_speech import IST_VOICE, SPLITS, LinaTokens, synth_espeak
from zoo.models.codec import MelVQCodec
from zoo.models.lina_speech import CharTokenizer, LinaSpeech, collate

HUB_NAME = "lina_speech_small.lina_offline"


def load_codec(data: Path) -> MelVQCodec:
    from safetensors.torch import load_file

    cfg = json.loads((data / "codec.json").read_text())
    codec = MelVQCodec(**cfg["args"])
    codec.load_state_dict(load_file(str(data / "codec.safetensors")))
    return codec


def _batches(ds: LinaTokens, batch_size: int, device, seed: int = 0, bucket: int = 50):
    """Endless length-bucketed random batches (collate dicts on ``device``)."""
    g = np.random.default_rng(seed)
    lens = np.array([ds.offsets[j + 1] - ds.offsets[j] for j in ds.index])
    while True:
        perm = g.permutation(len(ds))
        for s in range(0, len(perm), batch_size * bucket):
            chunk = perm[s : s + batch_size * bucket]
            chunk = chunk[np.argsort(lens[chunk])]
            groups = [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
            for k in g.permutation(len(groups)):
                if len(groups[k]) < 2:
                    continue
                b = collate([ds[int(i)][:2] for i in groups[k]])
                yield {k2: v.to(device, non_blocking=True) for k2, v in b.items()}


def _loss(model, b):
    return model(b["text_token"], b["audio_token"], b["encoder_mask"], b["crossatt_mask"], logits_mask=b["y_mask"],
                 need_weights=False).loss


def train(model: LinaSpeech, batches, seconds: float, lr: float, warmup: int, log, max_steps: int | None = None):
    """AdamW (0.9, 0.999, wd 0.1) + cosine with warm-up, bf16 autocast, grad clip 1.0, for ``seconds`` of wall
    time (the schedule length is fixed from the measured speed after 20 steps) or ``max_steps``."""
    dev = model.txt_embed.weight.device
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=0.1)
    total = [max_steps or 10**9]

    def sched(step):
        if step < warmup:
            return (step + 1) / warmup
        p = min(1.0, (step - warmup) / max(1, total[0] - warmup))
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p))

    lrs = torch.optim.lr_scheduler.LambdaLR(opt, sched)
    model.train()
    t0, step, losses = time.perf_counter(), 0, []
    while step < total[0]:
        b = next(batches)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = _loss(model, b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        lrs.step()
        step += 1
        if step % 25 == 0 or step == 1:
            losses.append((step, loss.item()))
            log(f"step {step}: loss {loss.item():.4f} lr {lrs.get_last_lr()[0]:.2e} ({time.perf_counter() - t0:.1f} s)")
        if step == 20 and max_steps is None:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            per = (time.perf_counter() - t0) / 20
            total[0] = max(40, int(seconds / per))
            log(f"{per * 1000:.1f} ms/step -> {total[0]} steps")
    model.eval()
    return {"steps": step, "seconds": time.perf_counter() - t0, "losses": losses}


@torch.no_grad()
def eval_loss(model, ds: LinaTokens, device, init_state=None, batch_size: int = 32) -> float:
    model.eval()
    tot, n = 0.0, 0
    for s in range(0, len(ds), batch_size):
        b = collate([ds[i][:2] for i in range(s, min(len(ds), s + batch_size))])
        b = {k: v.to(device) for k, v in b.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(b["text_token"], b["audio_token"], b["encoder_mask"], b["crossatt_mask"],
                        logits_mask=b["y_mask"], need_weights=False, init_state=init_state)
        m = int(b["y_mask"][:, 1:].sum())
        tot, n = tot + out.loss.item() * m, n + m
    return tot / max(n, 1)


@torch.no_grad()
def generate_many(model: LinaSpeech, texts: list[str], device, init_state=None, batch_size: int = 64,
                  max_len: int = 500, seed: int = 0, **kw) -> list[np.ndarray]:
    """Batched generation -> list of raw codes (Q, T) int16 arrays."""
    from torch.nn.utils.rnn import pad_sequence

    tok = CharTokenizer()
    out = []
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths together: less padding
    res: dict[int, np.ndarray] = {}
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        ids = [torch.tensor(tok.encode(texts[i])) for i in idx]
        x = pad_sequence(ids, batch_first=True).to(device)
        g = torch.Generator(device=device).manual_seed(seed)
        codes = model.generate(x, max_len=min(max_len, 8 * x.shape[1] + 40), init_state=init_state, generator=g, **kw)
        for i, c in zip(idx, codes):
            res[i] = c.cpu().numpy().astype(np.int16)
    return [res[i] for i in range(len(texts))]


def stream_rtf(model: LinaSpeech, codec, text: str, device, chunk_frames: int = 25, max_len: int = 600, **kw) -> dict:
    """Streaming generation of one sentence: real-time factor (wall / audio seconds) and first-chunk latency."""
    ids = torch.tensor(CharTokenizer().encode(text), device=device)
    for _ in range(2):  # warm-up + measured
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        first, samples = None, 0
        for wav in model.stream(ids, codec, chunk_frames=chunk_frames, max_len=max_len, **kw):
            if first is None:
                first = time.perf_counter() - t0
            samples += wav.numel()
        wall = time.perf_counter() - t0
    audio = samples / codec.sample_rate
    return {"rtf": wall / max(audio, 1e-9), "first_chunk_s": first, "audio_s": audio, "wall_s": wall,
            "chunk_frames": chunk_frames}


# ----------------------------------------------------------------------------------------------------------------
def cmd_gpu(ns) -> int:
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(ns.data)
    logf = open(out / "train_log.txt", "a")

    def log(msg):
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    torch.manual_seed(0)
    codec = load_codec(data)
    args = {"n_quant": codec.n_quant, "n_codebook": codec.codebook_size, "frame_rate": codec.frame_rate,
            "sample_rate": codec.sample_rate}
    if ns.smoke:
        args.update(d_model=64, n_layer=1, d_blind=32, txt_layers=1)
    model = zoo.create_model("lina_speech_small", **args).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"device {dev}, {n_params} params")
    n_voices = len(np.load(data / "tokens.npz")["voices"])
    train_voices = list(range(n_voices - 2)) + [n_voices - 1]  # all but the held-out IST voice
    ds = LinaTokens(data, "train", voices=train_voices, max_frames=ns.max_frames, limit=64 if ns.smoke else None)
    log(f"train utterances: {len(ds)}")
    res: dict = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "params": n_params,
                 "model_args": args}
    res["train"] = train(model, _batches(ds, ns.batch_size, dev), ns.train_seconds, ns.lr, ns.warmup, log,
                         max_steps=4 if ns.smoke else None)
    test_ds = LinaTokens(data, "test", voices=train_voices, max_frames=10**6)
    res["test_loss"] = eval_loss(model, LinaTokens(data, "test", voices=train_voices, max_frames=ns.max_frames,
                                                   limit=8 if ns.smoke else 256), dev)
    log(f"test loss {res['test_loss']:.4f}")

    # hub folder
    from zoo.hub import save_pretrained

    hub = out / "hub" / HUB_NAME
    save_pretrained(model.cpu(), hub, dataset="lina_offline", metrics={"test/loss": res["test_loss"]},
                    recipe={"optimizer": "AdamW(0.9, 0.999, wd 0.1)", "lr": ns.lr, "warmup": ns.warmup,
                            "schedule": "cosine", "precision": "bf16-mixed", "grad_clip": 1.0,
                            "batch_size": ns.batch_size, **{k: v for k, v in res["train"].items() if k != "losses"}},
                    extra_card=CARD_NOTE)
    for f in ("codec.safetensors", "codec.json"):
        (hub / f).write_bytes((data / f).read_bytes())
    model.to(dev)

    # generations for the held-out sentences (ground truth voice-independent: pick one rendering per sentence)
    seen, test_items = set(), []
    for k in range(len(test_ds)):
        j = int(test_ds.index[k])
        t = str(test_ds.text[j])
        if t not in seen and int(test_ds.voice[j]) < n_voices - 2:
            seen.add(t)
            test_items.append(j)
    test_items = test_items[: ns.n_test]
    texts = [str(test_ds.text[j]) for j in test_items]
    gens = {}
    for name, kw in {"greedy": dict(first_greedy_quant=0), "topk": dict(top_k=ns.top_k, temperature=ns.temperature,
                                                                      first_greedy_quant=1)}.items():
        t0 = time.perf_counter()
        gens[name] = generate_many(model, texts, dev, max_len=40 if ns.smoke else 500, **kw)
        log(f"generated {len(texts)} ({name}) in {time.perf_counter() - t0:.1f} s")
    _save_codes(out / "gen_test.npz", texts, gens, gt=[test_ds.codes[:, test_ds.offsets[j] : test_ds.offsets[j + 1]]
                                                      for j in test_items])

    # IST vs full fine-tune on the held-out voice
    res["ist"] = ist_vs_finetune(model, data, dev, ns, log, n_voices - 2, out)

    # streaming RTF on the GPU (and on this machine's CPU when it is one)
    codec = codec.to(dev)
    sent = texts[0] if texts else "The quick brown fox jumps over the lazy dog."
    res["stream_gpu" if dev.type == "cuda" else "stream_cpu"] = stream_rtf(model, codec, sent, dev,
                                                                          max_len=30 if ns.smoke else 600,
                                                                          first_greedy_quant=0)
    log(json.dumps(res.get("stream_gpu", res.get("stream_cpu"))))
    (out / "results.json").write_text(json.dumps(res, indent=1) + "\n")
    return 0


CARD_NOTE = """
## Codec and data

Tokens come from the zoo's offline `MelVQCodec` (16 kHz, hop 320 = 50 frames/s, 2 residual k-means codebooks of
512 over normalised 80-band log-mel frames; decoding: inverse mel + Griffin-Lim), shipped here as
`codec.safetensors` + `codec.json`. Training data: `python -m zoo.datasets.lina_speech prepare` (espeak-ng voices
reading ~5,400 English sentences from the Python stdlib docstrings and Perl POD, plus the asterisk human prompts).
This is a small demonstration model with robotic, low-quality audio; see docs/models/lina_speech.md for its WER.

```python
import torch, zoo
from zoo.models.lina_speech import CharTokenizer
from zoo.models.codec import MelVQCodec
model = zoo.create_model("lina_speech_small", pretrained="hub/zoo-models/lina_speech_small.lina_offline")
```
"""


def _save_codes(path: Path, texts, gens: dict, gt=None, **extra):
    arrs = {"text": np.array(texts)}
    for name, codes in gens.items():
        arrs[f"{name}_offsets"] = np.cumsum([0] + [c.shape[-1] for c in codes])
        arrs[f"{name}_codes"] = (np.concatenate(codes, -1) if codes else np.zeros((1, 0))).astype(np.int16)
    if gt is not None:
        gens = dict(gens, gt=gt)
        arrs["gt_offsets"] = np.cumsum([0] + [c.shape[-1] for c in gt])
        arrs["gt_codes"] = np.concatenate(gt, -1).astype(np.int16)
    arrs.update(extra)
    np.savez_compressed(path, **arrs)


def _load_codes(path: Path) -> tuple[list[str], dict[str, list[np.ndarray]]]:
    z = np.load(path)
    texts = [str(t) for t in z["text"]]
    out = {}
    for k in z.files:
        if k.endswith("_codes"):
            name = k[: -len("_codes")]
            off = z[f"{name}_offsets"]
            out[name] = [z[k][:, off[i] : off[i + 1]].astype(np.int64) for i in range(len(off) - 1)]
    return texts, out


def ist_vs_finetune(model, data: Path, dev, ns, log, ist_voice: int, out: Path) -> dict:
    """Adapt to the held-out voice from its ``ist`` split: initial-state tuning (S0 factors only) vs a full
    fine-tune with the same steps and batches. Teacher-forced loss on the voice's test utterances before/after, and
    generations of its test sentences for the speaker-similarity proxy (computed on the CPU)."""
    from safetensors.torch import save_file

    from zoo.tasks.tts import tune_initial_states

    ist_ds = LinaTokens(data, "ist", max_frames=10**6)
    tgt_ds = LinaTokens(data, "test", voices=[ist_voice], max_frames=10**6, limit=8 if ns.smoke else 64)
    steps = 2 if ns.smoke else ns.ist_steps
    r = {"n_ist_utterances": len(ist_ds), "ist_seconds_of_audio": float(sum(
        ist_ds.offsets[j + 1] - ist_ds.offsets[j] for j in ist_ds.index) / 50.0), "steps": steps,
         "batch_size": ns.ist_batch}
    r["loss_before"] = eval_loss(model, tgt_ds, dev)
    t0 = time.perf_counter()
    ist, losses = tune_initial_states(model, _batches(ist_ds, ns.ist_batch, dev, seed=1), steps, lr=ns.ist_lr,
                                      log_every=25, log=log)
    r["ist_time_s"] = time.perf_counter() - t0
    s0 = [s.detach() for s in ist()]
    r["loss_ist"] = eval_loss(model, tgt_ds, dev, init_state=s0)
    r["ist_params"] = sum(p.numel() for p in ist.parameters())
    save_file({k: v.detach().cpu().contiguous() for k, v in ist.state_dict().items()}, str(out / "ist_voice.safetensors"))
    ft = copy.deepcopy(model)
    t0 = time.perf_counter()
    train(ft, _batches(ist_ds, ns.ist_batch, dev, seed=1), 0, ns.ft_lr, 5, log, max_steps=steps)
    r["ft_time_s"] = time.perf_counter() - t0
    r["loss_ft"] = eval_loss(ft, tgt_ds, dev)
    r["ft_params"] = sum(p.numel() for p in ft.parameters())
    log(f"IST: loss {r['loss_before']:.4f} -> IST {r['loss_ist']:.4f} / full FT {r['loss_ft']:.4f}")
    texts = [str(tgt_ds.text[j]) for j in tgt_ds.index][: ns.n_ist_test]
    kw = dict(top_k=ns.top_k, temperature=ns.temperature, first_greedy_quant=1, max_len=40 if ns.smoke else 500)
    gens = {"base": generate_many(model, texts, dev, **kw), "ist": generate_many(model, texts, dev, init_state=s0, **kw),
            "ft": generate_many(ft, texts, dev, **kw)}
    _save_codes(out / "gen_ist.npz", texts, gens)
    return r


# ----------------------------------------------------------------------------------------------------------------
# CPU side: WER, speaker similarity, CPU RTF, export
# ----------------------------------------------------------------------------------------------------------------
def _norm_words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", text.lower()).split()


def wer(ref: list[str], hyp: list[str]) -> tuple[int, int]:
    """(edit distance, reference length) over words."""
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
            prev, d[j] = d[j], cur
    return d[len(hyp)], len(ref)


def write_arpa_bigram(sentences: list[str], path: Path, discount: float = 0.5) -> Path:
    """A bigram ARPA language model (absolute discounting, backoff to add-0.5 unigrams) over the words of
    ``sentences`` that pocketsphinx's bundled dictionary knows. Used for the "domain LM" WER column: built from the
    corpus' *training* sentences only (the test sentences are held out); the acoustic model is untouched."""
    import pocketsphinx
    from collections import Counter

    vocab = {ln.split()[0].split("(")[0] for ln in open(Path(pocketsphinx.get_model_path()) / "en-us" /
                                                         "cmudict-en-us.dict", encoding="utf-8") if ln.strip()}
    uni, bi = Counter(), Counter()
    for t in sentences:
        ws = ["<s>"] + [w for w in _norm_words(t) if w in vocab] + ["</s>"]
        uni.update(ws)
        bi.update(zip(ws[:-1], ws[1:]))
    words = sorted(uni)
    n = sum(uni.values()) + 0.5 * len(words)
    pu = {w: (uni[w] + 0.5) / n for w in words}
    follow: dict[str, list] = {}
    for (a, b), c in bi.items():
        follow.setdefault(a, []).append((b, c))
    lines = ["\\data\\", f"ngram 1={len(words)}", f"ngram 2={len(bi)}", "", "\\1-grams:"]
    for w in words:
        fl = follow.get(w, [])
        if fl:
            ca = sum(c for _, c in fl)
            left = discount * len(fl) / ca
            bow = left / max(1e-9, 1 - sum(pu[b] for b, _ in fl))
        else:
            bow = 1.0
        lp = -99.0 if w == "<s>" else math.log10(pu[w])
        lines.append(f"{lp:.4f} {w} {math.log10(bow):.4f}")
    lines += ["", "\\2-grams:"]
    for a, fl in sorted(follow.items()):
        ca = sum(c for _, c in fl)
        for b, c in sorted(fl):
            lines.append(f"{math.log10((c - discount) / ca):.4f} {a} {b}")
    lines += ["", "\\end\\", ""]
    path.write_text("\n".join(lines))
    return path


class Recognizer:
    """pocketsphinx (5.x) batch decoding of 16 kHz float audio with its bundled en-US acoustic model and dictionary;
    its bundled general English LM, or ``lm`` (an ARPA file, e.g. :func:`write_arpa_bigram`)."""

    def __init__(self, lm: str | Path | None = None):
        from pocketsphinx import Decoder

        self.dec = Decoder(loglevel="FATAL", **({"lm": str(lm)} if lm else {}))

    def __call__(self, wav: np.ndarray) -> str:
        pcm = (np.clip(wav, -1, 1) * 32767).astype(np.int16).tobytes()
        self.dec.start_utt()
        self.dec.process_raw(pcm, full_utt=True)
        self.dec.end_utt()
        hyp = self.dec.hyp()
        return hyp.hypstr if hyp is not None else ""


def _wer_rows(asr, texts, wavs) -> dict:
    e = n = 0
    hyps = []
    for t, w in zip(texts, wavs):
        h = asr(w)
        hyps.append(h)
        de, dn = wer(_norm_words(t), _norm_words(h))
        e, n = e + de, n + dn
    return {"wer": e / max(n, 1), "words": n, "utterances": len(texts), "examples": hyps[:3]}


def speaker_proxy(wavs: list[np.ndarray], refs: list[np.ndarray], codec: MelVQCodec) -> dict:
    """|mean F0 - reference mean F0| (Hz) and L1 distance of mean log-mel spectra (nats)."""
    import torchaudio

    def f0(ws):
        vals = []
        for w in ws:
            if len(w) < 4000:
                continue
            p = torchaudio.functional.detect_pitch_frequency(torch.from_numpy(w).float(), 16000, freq_low=60,
                                                             freq_high=400)
            e = torch.from_numpy(w).float().unfold(0, 160, 160).pow(2).mean(-1)
            p = p[(p > 60) & (p < 400)]
            if e.numel() and p.numel():
                vals.append(p.median().item())
        return float(np.mean(vals)) if vals else float("nan")

    def mel(ws):
        feats = [codec.features(torch.from_numpy(w).float()[None])[0] * codec.std + codec.mean for w in ws if len(w)]
        return torch.cat(feats).mean(0)

    return {"f0_hz": f0(wavs), "ref_f0_hz": f0(refs), "abs_f0_diff_hz": abs(f0(wavs) - f0(refs)),
            "logmel_l1": float((mel(wavs) - mel(refs)).abs().mean())}


def cmd_cpu(ns) -> int:
    torch.set_num_threads(ns.threads)
    art, data = Path(ns.art), Path(ns.data)
    codec = load_codec(data)
    res = json.loads((art / "results.json").read_text()) if (art / "results.json").is_file() else {}
    texts, gens = _load_codes(art / "gen_test.npz")
    texts, gens = texts[: ns.n], {k: v[: ns.n] for k, v in gens.items()}
    z = np.load(data / "tokens.npz")
    voices = list(z["voices"])
    train_texts = sorted({str(t) for t, s in zip(z["text"], z["split"]) if s == SPLITS["train"]})
    lms = {"general_lm": None, "domain_lm": write_arpa_bigram(train_texts, art / "domain_bigram.arpa")}
    # (a) espeak audio: the same sentence rendered by its training voice
    vmap = {str(t): int(v) for t, v, s in zip(z["text"], z["voice"], z["split"]) if s == SPLITS["test"]
            and int(v) < len(voices) - 2}
    audio = {"a_espeak_audio": [synth_espeak(t, str(voices[vmap.get(t, 0)])) for t in texts],
             "b_codec_resynthesis": [codec.decode(torch.from_numpy(c)).numpy() for c in gens["gt"]]}
    for name in ("greedy", "topk"):
        if name in gens:
            audio[f"c_lina_{name}"] = [codec.decode(torch.from_numpy(c)).numpy() if c.shape[-1]
                                       else np.zeros(1600, np.float32) for c in gens[name]]
    table = {}
    for lm_name, lm in lms.items():
        asr = Recognizer(lm)
        for k, wavs in audio.items():
            table[f"{k} ({lm_name})"] = _wer_rows(asr, texts, wavs)
            print(k, lm_name, table[f"{k} ({lm_name})"]["wer"], flush=True)
    res["wer"] = table
    print(json.dumps(table, indent=1))
    # IST speaker proxy
    if (art / "gen_ist.npz").is_file():
        itexts, igens = _load_codes(art / "gen_ist.npz")
        refs = [synth_espeak(t, IST_VOICE) for t in itexts]
        res["ist_similarity"] = {name: speaker_proxy([codec.decode(torch.from_numpy(c)).numpy() for c in igens[name]
                                                      if c.shape[-1]], refs, codec) for name in igens}
        res["ist_similarity"]["codec_reference"] = speaker_proxy(
            [codec.decode(codec.encode(torch.from_numpy(r))).numpy() for r in refs], refs, codec)
        print(json.dumps(res["ist_similarity"], indent=1))
    # CPU RTF with the trained weights
    hub = art / "hub" / HUB_NAME
    if hub.is_dir():
        model = zoo.create_model("lina_speech_small", pretrained=str(hub)).eval()
        res["stream_cpu"] = stream_rtf(model, codec, texts[0], torch.device("cpu"), first_greedy_quant=0)
        res["stream_cpu"]["threads"] = ns.threads
        print(json.dumps(res["stream_cpu"]))
        res["export"] = export_check(model, texts[0], art)
        print(json.dumps(res["export"]))
    (art / "results_cpu.json").write_text(json.dumps(res, indent=1) + "\n")
    (art / "lina_speech.md").write_text(markdown(res))
    print(markdown(res))
    return 0


def export_check(model: LinaSpeech, text: str, art: Path, steps: int = 30) -> dict:
    """Export the per-step decoder to .pt2 (torch.export) and .pte (ExecuTorch, XNNPACK) and compare the greedy
    tokens they generate for a fixed text with eager's."""
    from zoo.export import _run_pte, _to_pte
    from zoo.models.lina_speech import LinaStepDecoder

    dec = LinaStepDecoder(model).eval()
    ids = torch.tensor([CharTokenizer().encode(text)])
    ctx = model.encode_text(ids)
    ctx = ctx._replace(k=ctx.k.contiguous(), v=ctx.v.contiguous(), pos=ctx.pos.contiguous())
    flat = dec.flatten(model.initial_state(1))
    tok = torch.ones(1, model.n_quant, dtype=torch.long)
    with torch.no_grad():
        ep = torch.export.export(dec, (tok, ctx.k, ctx.v, ctx.pos, *flat))
    torch.export.save(ep, str(art / "lina_step.pt2"))
    runners = {"eager": dec, "pt2": torch.export.load(str(art / "lina_step.pt2")).module()}
    out = {}
    try:
        _to_pte(ep, art / "lina_step.pte")
        runners["pte"] = lambda *a: _run_pte(art / "lina_step.pte", tuple(x.contiguous() for x in a))
    except Exception as e:  # noqa: BLE001 - report why .pte was not made
        out["pte_error"] = repr(e)[:300]
    toks = {}
    for name, run in runners.items():
        t, st, seq = tok, flat, []
        with torch.no_grad():
            for _ in range(steps):
                o = run(t, ctx.k, ctx.v, ctx.pos, *st)
                t, st = o[0], list(o[2:])
                seq.append(t)
        toks[name] = torch.cat(seq, -1)
    for name in toks:
        out[f"{name}_equal_eager"] = bool(torch.equal(toks[name], toks["eager"]))
    out["steps"] = steps
    return out


def markdown(res: dict) -> str:
    lines = ["# Lina-Speech small on the offline espeak-ng corpus", ""]
    if "wer" in res:
        lines += ["| audio | WER (pocketsphinx) | words | utterances |", "|---|---|---|---|"]
        for k, v in res["wer"].items():
            lines.append(f"| {k} | {100 * v['wer']:.1f} % | {v['words']} | {v['utterances']} |")
        lines.append("")
    for k in ("stream_gpu", "stream_cpu"):
        if k in res:
            v = res[k]
            lines.append(f"- streaming {k[7:].upper()}: RTF {v['rtf']:.3f}, first chunk {1000 * v['first_chunk_s']:.0f} ms "
                         f"({v['audio_s']:.2f} s of audio, chunks of {v['chunk_frames']} frames)")
    if "ist" in res:
        i = res["ist"]
        lines += ["", "| held-out voice | test loss | params tuned |", "|---|---|---|",
                  f"| before | {i['loss_before']:.4f} | 0 |", f"| IST (S0 only) | {i['loss_ist']:.4f} | {i['ist_params']} |",
                  f"| full fine-tune | {i['loss_ft']:.4f} | {i['ft_params']} |"]
    if "ist_similarity" in res:
        lines += ["", "| generations | mean F0 (Hz) | abs F0 diff to target | log-mel L1 to target |", "|---|---|---|---|"]
        for k, v in res["ist_similarity"].items():
            lines.append(f"| {k} | {v['f0_hz']:.1f} | {v['abs_f0_diff_hz']:.1f} | {v['logmel_l1']:.3f} |")
    if "export" in res:
        lines += ["", f"- export: {json.dumps(res['export'])}"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/lina_speech.py")
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gpu")
    g.add_argument("--data", default="zoo/datasets/data/lina_offline")
    g.add_argument("--out", required=True)
    g.add_argument("--train-seconds", type=float, default=70)
    g.add_argument("--batch-size", type=int, default=48)
    g.add_argument("--max-frames", type=int, default=400)
    g.add_argument("--lr", type=float, default=2e-3)
    g.add_argument("--warmup", type=int, default=100)
    g.add_argument("--n-test", type=int, default=60)
    g.add_argument("--top-k", type=int, default=100)
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--ist-steps", type=int, default=100)
    g.add_argument("--ist-batch", type=int, default=16)
    g.add_argument("--ist-lr", type=float, default=0.1)
    g.add_argument("--ft-lr", type=float, default=3e-4)
    g.add_argument("--n-ist-test", type=int, default=20)
    g.add_argument("--smoke", action="store_true")
    c = sub.add_parser("cpu")
    c.add_argument("--art", required=True)
    c.add_argument("--data", default="zoo/datasets/data/lina_offline")
    c.add_argument("--n", type=int, default=60)
    c.add_argument("--threads", type=int, default=2)
    ns = p.parse_args(argv)
    return cmd_gpu(ns) if ns.cmd == "gpu" else cmd_cpu(ns)


if __name__ == "__main__":
    sys.exit(main())
