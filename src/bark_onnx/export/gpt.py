"""PyTorch reference of Bark's GPTs: the causal text/coarse model and the fine model.

Module and parameter names follow Suno's checkpoints (nanoGPT), so a Suno
state dict loads as it is and the Hugging Face layout is renamed onto it.
This is the model every exported graph is checked against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bark_onnx.runtime.model.config import GPTConfig

KVCache = list[tuple[torch.Tensor, torch.Tensor]]


class SelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig, causal: bool):
        super().__init__()
        self.n_head = cfg.n_head
        self.causal = causal
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)

    def forward(self, x, past=None):
        B, T, D = x.shape
        q, k, v = self.c_attn(x).split(D, dim=2)
        q, k, v = (t.view(B, T, self.n_head, D // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if past is not None:
            k = torch.cat((past[0], k), dim=2)  # (B, nh, P + T, hs)
            v = torch.cat((past[1], v), dim=2)
        mask = None
        if self.causal:
            # query i sits at absolute position P + i and sees keys 0 .. P + i
            P = k.shape[2] - T
            mask = torch.ones(T, P + T, dtype=torch.bool, device=x.device).tril(diagonal=P)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, D)
        return self.c_proj(y), (k, v)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))  # exact (erf) GELU, as Bark


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, causal: bool):
        super().__init__()
        norm_bias = cfg.bias if causal else True  # the fine model's LayerNorms always carry a bias
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=1e-5, bias=norm_bias)
        self.attn = SelfAttention(cfg, causal)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=1e-5, bias=norm_bias)
        self.mlp = MLP(cfg)

    def forward(self, x, past=None):
        a, present = self.attn(self.ln_1(x), past)
        x = x + a
        return x + self.mlp(self.ln_2(x)), present


class CausalGPT(nn.Module):
    """The text (semantic) and coarse models."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.input_vocab_size, cfg.n_embd),
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            h=nn.ModuleList(Block(cfg, causal=True) for _ in range(cfg.n_layer)),
            ln_f=nn.LayerNorm(cfg.n_embd, eps=1e-5, bias=cfg.bias),
        ))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.output_vocab_size, bias=False)

    def forward(self, idx, merge_context=False, past_kv: KVCache | None = None, last_only=True):
        """idx (B, T) -> logits (B, 1 or T', V) and the new cache.

        merge_context (first semantic step only): idx is 256 text + 256 history
        + the rest; position i < 256 embeds text[i] + history[i], so the model
        sees T - 256 positions.
        """
        wte = self.transformer.wte
        if merge_context and past_kv is None:
            tok = torch.cat([wte(idx[:, :256]) + wte(idx[:, 256:512]), wte(idx[:, 512:])], dim=1)
        else:
            tok = wte(idx)
        past_len = 0 if past_kv is None else past_kv[0][0].shape[2]
        pos = torch.arange(past_len, past_len + tok.shape[1], device=idx.device)
        x = tok + self.transformer.wpe(pos)
        present: KVCache = []
        for i, block in enumerate(self.transformer.h):
            x, kv = block(x, None if past_kv is None else past_kv[i])
            present.append(kv)
        x = self.transformer.ln_f(x)
        if last_only:
            x = x[:, -1:, :]
        return self.lm_head(x), present


class FineGPT(nn.Module):
    """The non-causal fine model: predicts codebook `pred_idx` from codebooks 0..pred_idx."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        n_heads = cfg.n_codes_total - cfg.n_codes_given
        self.transformer = nn.ModuleDict(dict(
            wtes=nn.ModuleList(nn.Embedding(cfg.input_vocab_size, cfg.n_embd) for _ in range(cfg.n_codes_total)),
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            h=nn.ModuleList(Block(cfg, causal=False) for _ in range(cfg.n_layer)),
            ln_f=nn.LayerNorm(cfg.n_embd, eps=1e-5),
        ))
        self.lm_heads = nn.ModuleList(
            nn.Linear(cfg.n_embd, cfg.output_vocab_size, bias=False) for _ in range(n_heads)
        )
        for i in range(n_heads):  # head i predicts codebook i + 1 and shares that codebook's table
            self.lm_heads[i].weight = self.transformer.wtes[i + 1].weight

    def forward(self, pred_idx: int, idx):
        """idx (B, T, n_codes_total) -> logits (B, T, output_vocab_size)."""
        T = idx.shape[1]
        x = sum(self.transformer.wtes[i](idx[:, :, i]) for i in range(pred_idx + 1))  # (B, T, D)
        x = x + self.transformer.wpe(torch.arange(T, device=idx.device))
        for block in self.transformer.h:
            x, _ = block(x)
        x = self.transformer.ln_f(x)
        return self.lm_heads[pred_idx - self.cfg.n_codes_given](x)
