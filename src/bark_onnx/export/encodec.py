"""PyTorch reference of the EnCodec 24 kHz decoder: codes (B, n_q, T) -> audio (B, T * 320).

The quantizer sums one embedding per codebook; the SEANet decoder is a causal
convolution, a 2-layer LSTM with a skip, four upsampling stages (ELU,
transposed convolution, residual block) and a last convolution. Weight norm
is folded into plain weights when a checkpoint is loaded (see checkpoints.py),
so the modules here are plain `Conv1d` / `ConvTranspose1d`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bark_onnx.runtime.model.config import CodecConfig


class CausalConv1d(nn.Module):
    """Conv1d with EnCodec's causal reflect padding on the left."""

    def __init__(self, cin: int, cout: int, kernel: int, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, dilation=dilation)
        self.pad = (kernel - 1) * dilation  # stride is always 1 in the decoder

    def forward(self, x):  # (B, C, T)
        if self.pad == 0:
            return self.conv(x)
        # EnCodec pads `pad` reflected samples on the left, after appending zeros
        # on the right when T is too short to reflect. Only the reflected head is
        # built here (x[1 : pad + 1], zero-filled to `pad` when T is short, then
        # reversed): one concatenation instead of two padded copies and a slice
        # of the whole signal, with the same values for every T.
        head = x[..., 1 : self.pad + 1]
        head = F.pad(head, (0, self.pad - head.shape[-1]))
        return self.conv(torch.cat([head.flip(-1), x], dim=-1))


class CausalConvTranspose1d(nn.Module):
    """ConvTranspose1d trimmed on the right, so T frames give T * stride samples."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(cin, cout, kernel, stride)
        self.trim = kernel - stride

    def forward(self, x):
        y = self.conv(x)
        return y[..., : y.shape[-1] - self.trim]


class LSTM(nn.Module):
    def __init__(self, dim: int, layers: int):
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, layers)

    def forward(self, x):  # (B, C, T)
        y = x.permute(2, 0, 1)  # (T, B, C)
        y = self.lstm(y)[0] + y
        return y.permute(1, 2, 0)


class ResnetBlock(nn.Module):
    def __init__(self, cfg: CodecConfig, dim: int, dilation: int):
        super().__init__()
        hidden = dim // cfg.compress
        # indices 1 and 3 hold the convolutions, as in EnCodec's checkpoints
        self.block = nn.ModuleList([
            nn.ELU(), CausalConv1d(dim, hidden, cfg.residual_kernel_size, dilation),
            nn.ELU(), CausalConv1d(hidden, dim, 1),
        ])
        self.shortcut = CausalConv1d(dim, dim, 1)

    def forward(self, x):
        y = x
        for layer in self.block:
            y = layer(y)
        return self.shortcut(x) + y


class EncodecDecoder(nn.Module):
    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.cfg = cfg
        self.codebooks = nn.Parameter(torch.zeros(cfg.n_codebooks, cfg.codebook_size, cfg.hidden_size))
        scale = 2 ** len(cfg.upsampling_ratios)
        layers: list[nn.Module] = [
            CausalConv1d(cfg.hidden_size, scale * cfg.num_filters, cfg.kernel_size),
            LSTM(scale * cfg.num_filters, cfg.num_lstm_layers),
        ]
        for ratio in cfg.upsampling_ratios:
            ch = scale * cfg.num_filters
            layers += [nn.ELU(), CausalConvTranspose1d(ch, ch // 2, 2 * ratio, ratio)]
            layers += [ResnetBlock(cfg, ch // 2, cfg.dilation_growth_rate ** j) for j in range(cfg.num_residual_layers)]
            scale //= 2
        layers += [nn.ELU(), CausalConv1d(cfg.num_filters, cfg.audio_channels, cfg.last_kernel_size)]
        self.layers = nn.ModuleList(layers)

    def forward(self, codes):
        """codes (B, n_q, T) int64 -> audio (B, T * hop) float32 (mono)."""
        n_q = codes.shape[1]
        offsets = torch.arange(n_q, device=codes.device)[None, :, None] * self.cfg.codebook_size
        table = self.codebooks[:n_q].reshape(-1, self.cfg.hidden_size)  # (n_q * K, D)
        x = F.embedding(codes + offsets, table).sum(dim=1).transpose(1, 2)  # (B, D, T)
        for layer in self.layers:
            x = layer(x)
        return x[:, 0, :]
