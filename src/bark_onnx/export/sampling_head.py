"""The draw at the end of a graph: Bark's sampling of one token per row, on the device that has the logits.

Per row r (a sequence of a causal graph, or a position of a fine window):

    z = logits / temperature_r + bands[band_r]      (a band's columns 0, the others -inf; T = 1 when greedy;
                                                     the graphs scale the hidden state before the head by 1 / T)
    temperature_r == 0:  token = argmax z            (greedy: the first largest)
    otherwise:           p = softmax(z); token = the first column whose cumulative p exceeds u_r * sum(p)
    eos_p_r = p[eos]     (semantic only: the P(EOS) of Bark's min_eos_p rule; 0 or 1 when greedy)

u_r is one uniform number in [0, 1) that the request drew from its own random
stream, exactly where the host draws it. The columns are cut into blocks
(10 001 = 73 x 137; 2048 = 32 x 64), so that the argmax and the cumulative sum
look at every column once, through reductions, and scan only the block sizes and
one block (ONNX Runtime's CPU CumSum and ArgMax over 10 001 columns cost more than
the GPT step of a small model):

    z (R, n) ─blocks─> (R, nb, bs) ─ReduceMax─> (R, nb) ─ArgMax─> block ─GatherElements─> (R, bs) ─ArgMax─> greedy
    p (R, n) ─blocks─> (R, nb, bs) ─ReduceSum─> (R, nb) ─CumSum─> block cdf ─count <= u * total─> block
             ─GatherElements─> (R, bs) ─CumSum + the blocks before─> count <= u * total ─> column

kernels/sampling.py has the same arithmetic in NumPy (`draw_rows`), the reference the
tests compare with. Everything is float32 and standard ONNX ops, so the graph runs on
every provider; a float32 CDF can put a token on the other side of a CDF edge than the
host's float64 one, which benchmarks/README.md measures.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from bark_onnx.kernels.sampling import block_shape

from .onnx_builder import GraphBuilder


def band_table(n: int, bands: tuple[tuple[int, int], ...]) -> np.ndarray:
    """(K, n) float32: row k is 0 on band k's columns [lo, hi), -inf elsewhere."""
    table = np.full((len(bands), n), -np.inf, np.float32)
    for k, (lo, hi) in enumerate(bands):
        table[k, lo:hi] = 0.0
    return table


def scale_by_temperature(g: GraphBuilder, temperature: str, name: str = "/draw") -> str:
    """(R, 1) of the graph's float type: 1 / T per row, and 1 where T is 0 (greedy). Multiplying the
    hidden state by it before the head gives the logits over T at the cost of D columns, not n."""
    zero, one = g.const(0.0, np.float32), g.const(1.0, np.float32)
    t = g.op("Where", [g.op("Greater", [temperature, zero], f"{name}/t_positive"), temperature, one], f"{name}/t")
    inverse = g.op("Div", [one, g.op("Unsqueeze", [t, g.const([1])], f"{name}/t_col")], f"{name}/inverse_t")
    if g.dtype != np.float32:
        inverse = g.op("Cast", [inverse], f"{name}/inverse_t_cast", to=g.float_type)
    return inverse


def draw_head(g: GraphBuilder, z: str, n: int, temperature: str, uniform: str, band: str | None,
              bands: tuple[tuple[int, int], ...] = (), eos: int | None = None,
              name: str = "/draw") -> tuple[str, str | None]:
    """Tokens (R,) int64 column indices drawn from z (R, n) float32, the logits over the temperature
    (see scale_by_temperature), and P(eos) (R,) when `eos`.

    temperature (R,) float32 (0: greedy), uniform (R,) float32, band (R,) int64 an index into
    `bands` (the columns [lo, hi) each band may take), or None for every column."""
    nb, bs = block_shape(n)
    zero = g.const(0.0, np.float32)
    sampled_rows = g.op("Greater", [temperature, zero], f"{name}/sampled")  # (R,)
    if band is not None:
        # a table gathered by index, added after the scaling (so an infinite temperature keeps the mask)
        table = g.weight(f"{name[1:]}.bands", band_table(n, bands), keep_dtype=True)  # float32; shared by name
        z = g.op("Add", [z, g.op("Gather", [table, band], f"{name}/band_mask", axis=0)], f"{name}/masked")

    def blocks(x: str, what: str) -> str:  # (R, n) -> (R, nb, bs)
        return g.op("Reshape", [x, g.const([-1, nb, bs])], f"{name}/{what}_blocks")

    def in_block(x3: str, index: str, what: str) -> str:  # (R, nb, bs), block (R,) -> (R, bs)
        at = g.op("Unsqueeze", [index, g.const([1, 2])], f"{name}/{what}_at")  # (R, 1, 1)
        at = g.op("Expand", [at, g.const([1, 1, bs])], f"{name}/{what}_at_row")
        row = g.op("GatherElements", [x3, at], f"{name}/{what}_row", axis=1)  # (R, 1, bs)
        return g.op("Squeeze", [row, g.const([1])], f"{name}/{what}_flat")

    # greedy: the first largest column (the first block holding the largest value, then within it)
    z3 = blocks(z, "z")
    best = g.op("ArgMax", [g.op("ReduceMax", [z3], f"{name}/block_max", axes=[2], keepdims=0)],
                f"{name}/best_block", axis=1, keepdims=0)  # (R,)
    within = g.op("ArgMax", [in_block(z3, best, "best")], f"{name}/best_within", axis=1, keepdims=0)
    greedy = g.op("Add", [g.op("Mul", [best, g.const(bs)], f"{name}/best_start"), within], f"{name}/greedy")

    # sampled: inverse CDF by blocks
    probs = g.op("Softmax", [z], f"{name}/softmax", axis=-1)
    p3 = blocks(probs, "p")
    mass = g.op("ReduceSum", [p3, g.const([2])], f"{name}/block_mass", keepdims=0)  # (R, nb)
    block_cdf = g.op("CumSum", [mass, g.const(1)], f"{name}/block_cdf")
    total = g.op("Gather", [block_cdf, g.const([nb - 1])], f"{name}/total", axis=1)  # (R, 1)
    threshold = g.op("Mul", [g.op("Unsqueeze", [uniform, g.const([1])], f"{name}/u_col"), total], f"{name}/threshold")

    def count_below(cdf: str, what: str) -> str:  # #{j : cdf_j <= threshold}, (R,) int64
        below = g.op("Cast", [g.op("LessOrEqual", [cdf, threshold], f"{name}/{what}_le")], f"{name}/{what}_le_f",
                     to=TensorProto.FLOAT)
        return g.op("Cast", [g.op("ReduceSum", [below, g.const([1])], f"{name}/{what}_count", keepdims=0)],
                    f"{name}/{what}_count_int", to=TensorProto.INT64)

    # rounding can leave u * total at the total: the draw then falls in the last block, at its last column
    block = g.op("Min", [count_below(block_cdf, "block"), g.const(nb - 1)], f"{name}/block")
    # the mass of the blocks before the chosen one: the block cdf shifted right by one column
    starts = g.op("Concat", [g.op("Mul", [total, zero], f"{name}/zero_col"), block_cdf], f"{name}/block_starts",
                  axis=1)  # (R, nb + 1)
    before = g.op("GatherElements", [starts, g.op("Unsqueeze", [block, g.const([1])], f"{name}/block_col")],
                  f"{name}/before", axis=1)  # (R, 1)
    local = g.op("Add", [g.op("CumSum", [in_block(p3, block, "cdf"), g.const(1)], f"{name}/local_cdf"), before],
                 f"{name}/cdf")
    column = g.op("Min", [count_below(local, "column"), g.const(bs - 1)], f"{name}/column")
    sampled = g.op("Add", [g.op("Mul", [block, g.const(bs)], f"{name}/block_start"), column], f"{name}/inverse_cdf")
    token = g.op("Where", [sampled_rows, sampled, greedy], f"{name}/token")
    if eos is None:
        return token, None
    p = g.op("Gather", [probs, g.const(eos)], f"{name}/eos_prob", axis=1)  # (R,)
    hit = g.op("Cast", [g.op("Equal", [greedy, g.const(eos)], f"{name}/greedy_eos")],
               f"{name}/greedy_eos_p", to=TensorProto.FLOAT)
    return token, g.op("Where", [sampled_rows, p, hit], f"{name}/eos_p")
