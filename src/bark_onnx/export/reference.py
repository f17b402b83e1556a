"""Bark's generation loops in PyTorch (KV cached): the reference the runtime is checked against.

A direct transcription of Suno's `generate_text_semantic`, `generate_coarse`,
`generate_fine` and `codec_decode`, written independently of the runtime's
NumPy loops so that a mistake in either shows up as a token mismatch.
Sampling uses torch.multinomial; temperature 0 or None is greedy (argmax),
and then a semantic row stops when EOS is the argmax (the T -> 0 limit of
Bark's P(EOS) >= min_eos_p rule).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from bark_onnx.runtime import constants as C

Tokenize = Callable[[str], list[int]]


def _greedy(temp) -> bool:
    return temp is None or temp == 0


def _pick(logits: torch.Tensor, temp, gen: torch.Generator | None, top_k=None, top_p=None):
    """One token from 1-D logits; returns (token, probabilities)."""
    logits = logits.clone().float()
    if top_p is not None:
        order = torch.argsort(logits, descending=True)
        cum = torch.cumsum(F.softmax(logits[order], dim=-1), dim=-1)
        remove = cum > top_p
        remove[1:] = remove[:-1].clone()
        remove[0] = False
        logits[order[remove]] = -float("inf")
    if top_k is not None:
        v, _ = torch.topk(logits, min(top_k, logits.numel()))
        logits[logits < v[-1]] = -float("inf")
    if _greedy(temp):
        token = int(torch.argmax(logits))
        probs = torch.zeros_like(logits)
        probs[token] = 1.0
        return token, probs
    probs = F.softmax(logits / temp, dim=-1)
    return int(torch.multinomial(probs, 1, generator=gen)), probs


@torch.inference_mode()
def generate_semantic(model, tokenize: Tokenize, text: str, voice=None, temp=0.7, top_k=None, top_p=None,
                      min_eos_p=0.2, max_gen_duration_s=None, allow_early_stop=True,
                      gen: torch.Generator | None = None) -> np.ndarray:
    text = " ".join(text.split())
    encoded = np.array(tokenize(text), dtype=np.int64) + C.TEXT_ENCODING_OFFSET
    encoded = encoded[:256]
    encoded = np.pad(encoded, (0, 256 - len(encoded)), constant_values=C.TEXT_PAD_TOKEN)
    if voice is not None:
        hist = voice["semantic_prompt"].astype(np.int64)[-256:]
        hist = np.pad(hist, (0, 256 - len(hist)), constant_values=C.SEMANTIC_PAD_TOKEN)
    else:
        hist = np.full(256, C.SEMANTIC_PAD_TOKEN, dtype=np.int64)
    x = torch.from_numpy(np.hstack([encoded, hist, [C.SEMANTIC_INFER_TOKEN]]).astype(np.int64))[None]
    kv = None
    duration = 0.0
    for n in range(C.MAX_SEMANTIC_STEPS):
        x_input = x[:, [-1]] if kv is not None else x
        logits, kv = model(x_input, merge_context=True, past_kv=kv)
        relevant = logits[0, 0, : C.SEMANTIC_VOCAB_SIZE]
        if allow_early_stop:
            relevant = torch.hstack((relevant, logits[0, 0, [C.SEMANTIC_PAD_TOKEN]]))
        token, probs = _pick(relevant, temp, gen, top_k, top_p)
        if allow_early_stop and (token == C.SEMANTIC_VOCAB_SIZE or (min_eos_p is not None and probs[-1] >= min_eos_p)):
            break
        x = torch.cat((x, torch.tensor([[token]])), dim=1)
        duration += 1 / C.SEMANTIC_RATE_HZ
        if max_gen_duration_s is not None and duration > max_gen_duration_s:
            break
        if n == C.MAX_SEMANTIC_STEPS - 1:
            break
    return x[0, 513:].numpy()


def _flatten(arr: np.ndarray) -> np.ndarray:
    arr = arr.copy()
    for n in range(1, arr.shape[0]):
        arr[n, :] += C.CODEBOOK_SIZE * n
    return arr.ravel("F")


@torch.inference_mode()
def generate_coarse(model, semantic: np.ndarray, voice=None, temp=0.7, top_k=None, top_p=None,
                    max_coarse_history=630, sliding_window_len=60, gen: torch.Generator | None = None) -> np.ndarray:
    ratio = C.COARSE_RATE_HZ / C.SEMANTIC_RATE_HZ * C.N_COARSE_CODEBOOKS
    max_semantic_history = int(np.floor(max_coarse_history / ratio))
    if voice is not None:
        sem_hist = voice["semantic_prompt"].astype(np.int64)
        coarse_hist = _flatten(voice["coarse_prompt"].astype(np.int64)) + C.SEMANTIC_VOCAB_SIZE
        n_sem = np.min([max_semantic_history, len(sem_hist) - len(sem_hist) % 2,
                        int(np.floor(len(coarse_hist) / ratio))])
        n_coarse = int(round(n_sem * ratio))
        sem_hist = sem_hist[-n_sem:]
        coarse_hist = coarse_hist[-n_coarse:][:-2]
    else:
        sem_hist = np.array([], dtype=np.int64)
        coarse_hist = np.array([], dtype=np.int64)
    n_steps = int(round(np.floor(len(semantic) * ratio / C.N_COARSE_CODEBOOKS) * C.N_COARSE_CODEBOOKS))
    x_semantic = torch.from_numpy(np.hstack([sem_hist, semantic]).astype(np.int64))[None]
    x_coarse = torch.from_numpy(coarse_hist.astype(np.int64))[None]
    base = len(sem_hist)
    n_step = 0
    for _ in range(int(np.ceil(n_steps / sliding_window_len))):
        semantic_idx = base + int(round(n_step / ratio))
        x_in = x_semantic[:, max(0, semantic_idx - max_semantic_history):][:, :256]
        x_in = F.pad(x_in, (0, 256 - x_in.shape[-1]), "constant", C.COARSE_SEMANTIC_PAD_TOKEN)
        x_in = torch.hstack([x_in, torch.tensor([[C.COARSE_INFER_TOKEN]]), x_coarse[:, -max_coarse_history:]])
        kv = None
        for _ in range(sliding_window_len):
            if n_step >= n_steps:
                continue
            major = n_step % C.N_COARSE_CODEBOOKS == 0
            x_input = x_in[:, [-1]] if kv is not None else x_in
            logits, kv = model(x_input, past_kv=kv)
            start = C.SEMANTIC_VOCAB_SIZE + (1 - int(major)) * C.CODEBOOK_SIZE
            token, _ = _pick(logits[0, 0, start: start + C.CODEBOOK_SIZE], temp, gen, top_k, top_p)
            token = torch.tensor([[token + start]])
            x_coarse = torch.cat((x_coarse, token), dim=1)
            x_in = torch.cat((x_in, token), dim=1)
            n_step += 1
    out = x_coarse[0, len(coarse_hist):].numpy().reshape(-1, C.N_COARSE_CODEBOOKS).T - C.SEMANTIC_VOCAB_SIZE
    for n in range(1, C.N_COARSE_CODEBOOKS):
        out[n, :] -= n * C.CODEBOOK_SIZE
    return out


@torch.inference_mode()
def generate_fine(model, coarse: np.ndarray, voice=None, temp=0.5, gen: torch.Generator | None = None) -> np.ndarray:
    n_coarse = coarse.shape[0]
    in_arr = np.vstack([coarse, np.zeros((C.N_FINE_CODEBOOKS - n_coarse, coarse.shape[1])) + C.CODEBOOK_SIZE])
    in_arr = in_arr.astype(np.int64)
    if voice is not None:
        hist = voice["fine_prompt"].astype(np.int64)[:, -512:]
        in_arr = np.hstack([hist, in_arr])
        n_history = hist.shape[1]
    else:
        n_history = 0
    n_remove_from_end = 0
    if in_arr.shape[1] < 1024:
        n_remove_from_end = 1024 - in_arr.shape[1]
        in_arr = np.hstack([in_arr, np.zeros((C.N_FINE_CODEBOOKS, n_remove_from_end), dtype=np.int64) + C.CODEBOOK_SIZE])
    n_loops = np.max([0, int(np.ceil((coarse.shape[1] - (1024 - n_history)) / 512))]) + 1
    arr = torch.from_numpy(in_arr.T.copy())
    for n in range(n_loops):
        start = int(np.min([n * 512, arr.shape[0] - 1024]))
        fill = int(np.min([n_history + n * 512, arr.shape[0] - 512]))
        rel = fill - start
        buf = arr[start: start + 1024, :][None]  # a view into arr
        for nn in range(n_coarse, C.N_FINE_CODEBOOKS):
            logits = model(nn, buf)
            if _greedy(temp):
                preds = torch.argmax(logits[0, rel:, : C.CODEBOOK_SIZE], -1)
            else:
                probs = F.softmax(logits[0, :, : C.CODEBOOK_SIZE] / temp, dim=-1)
                preds = torch.multinomial(probs[rel:1024], num_samples=1, generator=gen).reshape(-1)
            buf[0, rel:, nn] = preds
    out = arr.numpy().T[:, n_history:]
    if n_remove_from_end > 0:
        out = out[:, :-n_remove_from_end]
    return out


@torch.inference_mode()
def decode(codec, fine: np.ndarray) -> np.ndarray:
    return codec(torch.from_numpy(fine.astype(np.int64))[None])[0].numpy()


def generate_audio(models: dict, tokenize: Tokenize, text: str, voice=None, text_temp=0.7, waveform_temp=0.7,
                   fine_temp=0.5, seed: int | None = None) -> dict[str, np.ndarray]:
    """The whole pipeline; returns every stage's output."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    semantic = generate_semantic(models["semantic"], tokenize, text, voice, text_temp, gen=gen)
    coarse = generate_coarse(models["coarse"], semantic, voice, waveform_temp, gen=gen)
    fine = generate_fine(models["fine"], coarse, voice, fine_temp, gen=gen)
    return {"semantic": semantic, "coarse": coarse, "fine": fine, "audio": decode(models["codec"], fine)}

