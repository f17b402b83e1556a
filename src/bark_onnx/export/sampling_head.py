"""The draw at the end of a graph: Bark's sampling of one token per row, on the device that has the logits.

Per row r (a sequence of a causal graph, or a position of a fine window):

    z = logits / temperature_r + bands[band_r]      (a band's columns 0, the others -inf; T = 1 when greedy;
                                                     float32 graphs scale the hidden state before the head by
                                                     1 / T, fp16 ones their logits after it, in float32)
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
    each count at most the last block (column) of positive mass: a draw never takes a column of
    probability 0, hence never one outside its band, whatever u in [0, 1) and the rounding

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
    """(R, 1) float32: 1 / T per row, and 1 where T is 0 (greedy)."""
    zero, one = g.const(0.0, np.float32), g.const(1.0, np.float32)
    t = g.op("Where", [g.op("Greater", [temperature, zero], f"{name}/t_positive"), temperature, one], f"{name}/t")
    return g.op("Div", [one, g.op("Unsqueeze", [t, g.const([1])], f"{name}/t_col")], f"{name}/inverse_t")


def hidden_over_temperature(g: GraphBuilder, h: str, temperature: str, name: str) -> str:
    """The hidden state (R, D) that goes into the head. A float32 graph scales it by 1 / T there,
    which gives the logits over T at the cost of D columns, not n. A graph of a smaller float type
    leaves it as it is and scales its logits in float32 after the head
    (float_logits_over_temperature): in fp16, 1 / T overflows below T ~ 1.5e-5 and the logits over
    T near T = 1e-3, and an infinite logit turns the softmax into NaN."""
    if g.dtype != np.float32:
        return h
    return g.op("Mul", [h, scale_by_temperature(g, temperature)], f"{name}/over_t")


def float_logits_over_temperature(g: GraphBuilder, logits: str, temperature: str, name: str,
                                  output: str | None = None) -> str:
    """The head's logits (R, n) in float32 over T, from a graph of a smaller float type (a float32
    graph's are so already, see hidden_over_temperature): cast, then scaled in float32, which holds
    the logits over any temperature that is not greedy (kernels.sampling.is_greedy)."""
    logits = g.op("Cast", [logits], f"{name}/float", to=TensorProto.FLOAT)
    return g.op("Mul", [logits, scale_by_temperature(g, temperature)], f"{name}/over_t",
                outputs=[output] if output else 1)


def draw_head(g: GraphBuilder, z: str, n: int, temperature: str, uniform: str, band: str | None,
              bands: tuple[tuple[int, int], ...] = (), eos: int | None = None,
              name: str = "/draw") -> tuple[str, str | None]:
    """Tokens (R,) int64 column indices drawn from z (R, n) float32, the logits over the temperature
    (see hidden_over_temperature), and P(eos) (R,) when `eos`.

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

    def last_positive(x: str, what: str) -> str:  # (R, m) -> (R,) int64, kernels' twin (0 when none)
        positive = g.op("Cast", [g.op("Greater", [x, zero], f"{name}/{what}_positive")], f"{name}/{what}_positive_f",
                        to=TensorProto.FLOAT)
        # columns with a positive value at or after them: as many as the last positive column's index + 1
        ahead = g.op("CumSum", [positive, g.const(1)], f"{name}/{what}_positive_ahead", reverse=1)
        count = g.op("ReduceSum", [g.op("Cast", [g.op("Greater", [ahead, zero], f"{name}/{what}_before_last")],
                                        f"{name}/{what}_before_last_f", to=TensorProto.FLOAT), g.const([1])],
                     f"{name}/{what}_up_to_last", keepdims=0)
        last = g.op("Sub", [g.op("Cast", [count], f"{name}/{what}_up_to_last_int", to=TensorProto.INT64),
                            g.const(1)], f"{name}/{what}_last")
        return g.op("Max", [last, g.const(0)], f"{name}/{what}_last_or_first")

    # rounding can leave u * total at or past every cumulative sum (u just under 1, or a block whose own
    # sum falls short of the total's): each scan then stops at the last block, and the last column, that
    # has probability, never after it (a column outside the band, or of probability 0)
    block = g.op("Min", [count_below(block_cdf, "block"), last_positive(mass, "block")], f"{name}/block")
    # the mass of the blocks before the chosen one: the block cdf shifted right by one column
    starts = g.op("Concat", [g.op("Mul", [total, zero], f"{name}/zero_col"), block_cdf], f"{name}/block_starts",
                  axis=1)  # (R, nb + 1)
    before = g.op("GatherElements", [starts, g.op("Unsqueeze", [block, g.const([1])], f"{name}/block_col")],
                  f"{name}/before", axis=1)  # (R, 1)
    block_p = in_block(p3, block, "cdf")  # (R, bs)
    local = g.op("Add", [g.op("CumSum", [block_p, g.const(1)], f"{name}/local_cdf"), before], f"{name}/cdf")
    column = g.op("Min", [count_below(local, "column"), last_positive(block_p, "column")], f"{name}/column")
    sampled = g.op("Add", [g.op("Mul", [block, g.const(bs)], f"{name}/block_start"), column], f"{name}/inverse_cdf")
    token = g.op("Where", [sampled_rows, sampled, greedy], f"{name}/token")
    if eos is None:
        return token, None
    p = g.op("Gather", [probs, g.const(eos)], f"{name}/eos_prob", axis=1)  # (R,)
    hit = g.op("Cast", [g.op("Equal", [greedy, g.const(eos)], f"{name}/greedy_eos")],
               f"{name}/greedy_eos_p", to=TensorProto.FLOAT)
    return token, g.op("Where", [sampled_rows, p, hit], f"{name}/eos_p")
