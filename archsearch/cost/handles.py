"""fvcore operator handles: multiply-accumulate (MAC) counts per traced ``aten`` operator.

fvcore's :class:`~fvcore.nn.FlopCountAnalysis` traces a model with ``torch.jit`` and calls one
*handle* per graph node. Its defaults cover only a handful of operators, silently skip
``aten::scaled_dot_product_attention`` (a tiny ViT comes out ~14% low with fused attention on) and
merely warn about other unknown operators. This module completes that set:

* :data:`MAC_HANDLES` maps every operator that does multiply-accumulate work to a handle;
* :data:`archsearch.cost.ignored.IGNORED_OPS` lists, in one place, the operators that do none
  and are skipped on purpose.

:func:`archsearch.cost.count` refuses any operator in neither, so a model is never under-counted
silently.

Counting convention (fvcore's): one multiply-accumulate is one MAC; a multiply whose product is
not accumulated (an outer product, a Hadamard einsum) also counts one MAC; bias additions,
activations, softmax and other elementwise work count nothing. Norm layers keep fvcore's rough
defaults, the only non-MAC work that is counted: ``layer_norm``, ``group_norm`` and
``instance_norm`` (and ``rms_norm``, added here) count 5 per element with an affine transform and
4 without; ``batch_norm`` in eval mode counts 2 per element with affine and 1 without. fvcore's
defaults for ``adaptive_avg_pool2d`` (1 per input element), ``upsample_nearest2d`` (1 per output
element), ``upsample_bilinear2d`` and ``grid_sampler`` (4 per output element) are kept as well.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import CountError

with warnings.catch_warnings():  # fvcore.nn scripts a loss at import: torch.jit deprecation noise
    warnings.simplefilter("ignore")
    from fvcore.nn.flop_count import _DEFAULT_SUPPORTED_OPS

__all__ = [
    "Handle",
    "MAC_HANDLES",
    "sdpa_macs",
    "einsum_macs",
    "conv_handle",
    "contraction_handle",
    "sdpa_handle",
    "einsum_handle",
]

#: An fvcore handle: ``(inputs, outputs) -> MACs`` (or a Counter of named MACs), where inputs and
#: outputs are the ``torch._C.Value`` objects of one traced graph node.
Handle = Callable[[list[Any], list[Any]], Any]


# --------------------------------------------------------------------------- helpers


def _shape(value: Any, op: str, what: str) -> list[int]:
    """Return the static shape of a traced tensor value, or raise naming the operator."""
    if value.isCompleteTensor():
        return list(value.type().sizes())
    raise CountError(f"{op}: expected a tensor with a known shape for {what}, got {value.type()}")


def _numel(shape: Sequence[int]) -> int:
    return math.prod(int(s) for s in shape)


def _broadcast(*shapes: Sequence[int]) -> list[int]:
    """Right-aligned broadcast of batch shapes (1 broadcasts; otherwise the larger size wins)."""
    rank = max((len(s) for s in shapes), default=0)
    out = [1] * rank
    for s in shapes:
        for i, size in enumerate(s, start=rank - len(s)):
            out[i] = max(out[i], int(size))
    return out


# --------------------------------------------------------------------------- attention


def sdpa_macs(
    q: Sequence[int], k: Sequence[int], v: Sequence[int], *, heads_last: bool = False
) -> int:
    """MACs of scaled dot-product attention from the shapes of query, key and value.

    ``q @ k^T`` costs ``L * S * E`` and ``attn @ v`` costs ``L * S * Ev`` per batch element, so
    ``MACs = prod(batch dims) * L * S * (E + Ev)``. Batch dims are right-aligned and broadcast
    (this also covers grouped-query attention, where key and value carry fewer heads than the
    query). Masks and ``is_causal`` change nothing: the dense count is reported.

    Args:
        q: query shape ``(..., L, E)``.
        k: key shape ``(..., S, E)``.
        v: value shape ``(..., S, Ev)``.
        heads_last: the ``(B, L, H, E)`` layout of ``aten::_flash_attention_forward`` and
            ``aten::_efficient_attention_forward`` instead of ``(..., H, L, E)``.
    """
    if heads_last:
        if not (len(q) == len(k) == len(v) == 4):
            raise CountError(
                f"attention: expected 4-D (B, L, H, E) query/key/value, got {q}, {k}, {v}"
            )
        q = [q[0], q[2], q[1], q[3]]
        k = [k[0], k[2], k[1], k[3]]
        v = [v[0], v[2], v[1], v[3]]
    if min(len(q), len(k), len(v)) < 2:
        raise CountError(f"attention: expected query/key/value of rank >= 2, got {q}, {k}, {v}")
    batch = _broadcast(q[:-2], k[:-2], v[:-2])
    length, e = int(q[-2]), int(q[-1])
    s, ev = int(k[-2]), int(v[-1])
    return _numel(batch) * length * s * (e + ev)


def sdpa_handle(op: str, *, heads_last: bool = False) -> Handle:
    """Handle for an SDPA operator whose first three inputs are query, key and value."""

    def handle(inputs: list[Any], outputs: list[Any]) -> int:
        q, k, v = (_shape(inputs[i], op, name) for i, name in enumerate(("query", "key", "value")))
        return sdpa_macs(q, k, v, heads_last=heads_last)

    return handle


# --------------------------------------------------------------------------- matmul family


def contraction_handle(op: str, first: int, *, contracted: bool = True) -> Handle:
    """Handle for a matmul-like operator: ``MACs = numel(output) * K``.

    ``K`` is the last dim of input ``first`` (the left matrix, vector or activation). This is
    exact for every layout ``torch.matmul`` accepts (1-D operands, broadcast batch dims on either
    side), for ``mm``, ``bmm``, ``mv``, ``dot``, ``linear`` and the ``add*`` variants whose bias
    addition is free. With ``contracted=False`` (outer products) ``K`` is 1.
    """

    def handle(inputs: list[Any], outputs: list[Any]) -> int:
        out = _shape(outputs[0], op, "the output")
        if not contracted:
            return _numel(out)
        left = _shape(inputs[first], op, f"input {first}")
        return _numel(out) * (int(left[-1]) if left else 1)

    return handle


def _addbmm_handle(inputs: list[Any], outputs: list[Any]) -> int:
    # addbmm sums the batch of products into one (n, m) matrix: b * n * k * m.
    b1 = _shape(inputs[1], "aten::addbmm", "batch1")
    b2 = _shape(inputs[2], "aten::addbmm", "batch2")
    return _numel(b1) * int(b2[-1])


def _tensordot_handle(inputs: list[Any], outputs: list[Any]) -> int:
    a = _shape(inputs[0], "aten::tensordot", "self")
    out = _shape(outputs[0], "aten::tensordot", "the output")
    dims = inputs[2].toIValue()
    return _numel(out) * math.prod(int(a[d]) for d in dims)


# --------------------------------------------------------------------------- einsum


def _parse_einsum(
    equation: str, shapes: Sequence[Sequence[int]]
) -> tuple[list[list[str]], list[str], dict[str, int]]:
    """Split an einsum equation into per-operand dim labels, output labels and label sizes.

    Ellipsis dims get labels ``"...0"``, ``"...1"`` (counted from the right) and broadcast across
    operands like batch dims.
    """
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise CountError(
            f"aten::einsum: expected {len(terms)} operands for {equation!r}, got {len(shapes)}"
        )
    labels: list[list[str]] = []
    sizes: dict[str, int] = {}
    ell_rank = 0
    for term, shape in zip(terms, shapes):
        letters = term.replace("...", "")
        if not all(c.isalpha() for c in letters) or term.count("...") > 1:
            raise CountError(
                f"aten::einsum: expected an equation like 'bij,bjk->bik', got {equation!r}"
            )
        n_ell = len(shape) - len(letters) if "..." in term else 0
        if n_ell < 0 or ("..." not in term and len(letters) != len(shape)):
            raise CountError(
                f"aten::einsum: expected operand {term!r} to have rank {len(letters)}, "
                f"got shape {list(shape)}"
            )
        ell_rank = max(ell_rank, n_ell)
        head, _, tail = term.partition("...")
        ell = [f"...{i}" for i in reversed(range(n_ell))] if "..." in term else []
        names = list(head) + ell + list(tail)
        for name, size in zip(names, shape):
            sizes[name] = max(sizes.get(name, 1), int(size))
        labels.append(names)
    if arrow:
        head, has_ell, tail = rhs.partition("...")
        out = list(head) + ([f"...{i}" for i in reversed(range(ell_rank))] if has_ell else [])
        out += list(tail)
    else:
        counts = Counter(c for names in labels for c in names if not c.startswith("..."))
        out = [f"...{i}" for i in reversed(range(ell_rank))]
        out += sorted(c for c, n in counts.items() if n == 1)
    return labels, out, sizes


def einsum_macs(equation: str, shapes: Sequence[Sequence[int]]) -> int:
    """MACs of ``torch.einsum(equation, *operands)`` from the operand shapes.

    Two operands: the product of the sizes of all distinct labels (every combination of indices
    is one multiply, accumulated or not). More operands: the operands are contracted pairwise
    from left to right, each intermediate keeping only the labels still needed later, and the
    pairwise costs are summed. One operand (transpose, diagonal, sum) costs nothing.
    """
    labels, out, sizes = _parse_einsum(equation, shapes)
    if len(labels) < 2:
        return 0
    total = 0
    current = set(labels[0])
    for i in range(1, len(labels)):
        joint = current | set(labels[i])
        total += math.prod(sizes[n] for n in joint)
        needed = set(out).union(*(set(names) for names in labels[i + 1 :]))
        current = joint & needed
    return total


def einsum_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """Handle for ``aten::einsum(str equation, Tensor[] tensors, *, int[]? path)``.

    Replaces fvcore's, which knows two equations, otherwise asks numpy for an "optimal" path and
    halves numpy's flop estimate (wrong by 2x for outer and Hadamard products, and not the order
    torch uses).
    """
    equation = inputs[0].toIValue()
    node = inputs[1].node()
    if node.kind() != "prim::ListConstruct":
        raise CountError(f"aten::einsum: expected a literal list of operands, got {node.kind()}")
    shapes = [_shape(v, "aten::einsum", "an operand") for v in node.inputs()]
    return einsum_macs(equation, shapes)


# --------------------------------------------------------------------------- convolution


def conv_handle(op: str, *, transposed: bool | int) -> Handle:
    """Handle for a convolution operator (grouped, dilated, strided, batched or not).

    ``MACs = numel(output) * Cin/groups * prod(kernel)`` for a convolution and
    ``numel(input) * Cout/groups * prod(kernel)`` for a transposed one: in both cases the
    per-element weight fan ``prod(weight.shape[1:])`` times the number of elements of the larger
    side. Bias is not counted. ``transposed`` is a bool, or the index of the operator's own
    ``transposed`` argument (``aten::_convolution`` and ``aten::convolution``).
    """

    def handle(inputs: list[Any], outputs: list[Any]) -> Counter[str]:
        w = _shape(inputs[1], op, "the weight")
        is_t = bool(inputs[transposed].toIValue()) if type(transposed) is int else transposed
        side = _shape(inputs[0], op, "the input") if is_t else _shape(outputs[0], op, "the output")
        return Counter({"conv": _numel(side) * _numel(w[1:])})

    return handle


# --------------------------------------------------------------------------- registry


def _norm_handle(op: str, affine_index: int) -> Handle:
    # Same estimate as fvcore's norm_flop_counter: 5 per element with affine, 4 without.
    def handle(inputs: list[Any], outputs: list[Any]) -> int:
        x = _shape(inputs[0], op, "the input")
        affine = inputs[affine_index].isCompleteTensor()
        return _numel(x) * (5 if affine else 4)

    return handle


def _per_output(op: str, scale: int) -> Handle:
    # Resampling cost in fvcore's convention: `scale` taps per output element.
    def handle(inputs: list[Any], outputs: list[Any]) -> int:
        return scale * _numel(_shape(outputs[0], op, "the output"))

    return handle


_SDPA_OPS = (
    "aten::scaled_dot_product_attention",
    "aten::_scaled_dot_product_attention_math",
    "aten::_scaled_dot_product_flash_attention",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_efficient_attention",
    "aten::_scaled_dot_product_cudnn_attention",
    "aten::_scaled_dot_product_fused_attention_overrideable",
)

#: Every operator with a MAC handle: fvcore's defaults, plus attention, a complete matmul family
#: (replacing fvcore's ``matmul``/``mm``/``bmm``/``addmm``/``linear`` with handles that give the
#: same numbers in the layouts fvcore supports and are also right for 1-D and broadcast operands),
#: a general ``einsum``, every convolution spelling a trace can hold, ``rms_norm`` and the
#: resampling modes fvcore lacks.
MAC_HANDLES: dict[str, Handle] = {
    **_DEFAULT_SUPPORTED_OPS,
    **{op: sdpa_handle(op) for op in _SDPA_OPS},
    "aten::_flash_attention_forward": sdpa_handle(
        "aten::_flash_attention_forward", heads_last=True
    ),
    "aten::_efficient_attention_forward": sdpa_handle(
        "aten::_efficient_attention_forward", heads_last=True
    ),
    "aten::matmul": contraction_handle("aten::matmul", 0),
    "aten::mm": contraction_handle("aten::mm", 0),
    "aten::bmm": contraction_handle("aten::bmm", 0),
    "aten::mv": contraction_handle("aten::mv", 0),
    "aten::dot": contraction_handle("aten::dot", 0),
    "aten::vdot": contraction_handle("aten::vdot", 0),
    "aten::inner": contraction_handle("aten::inner", 0),
    "aten::linear": contraction_handle("aten::linear", 0),
    "aten::addmm": contraction_handle("aten::addmm", 1),
    "aten::addmv": contraction_handle("aten::addmv", 1),
    "aten::baddbmm": contraction_handle("aten::baddbmm", 1),
    "aten::addbmm": _addbmm_handle,
    "aten::outer": contraction_handle("aten::outer", 0, contracted=False),
    "aten::ger": contraction_handle("aten::ger", 0, contracted=False),
    "aten::addr": contraction_handle("aten::addr", 1, contracted=False),
    "aten::tensordot": _tensordot_handle,
    "aten::einsum": einsum_handle,
    "aten::_convolution": conv_handle("aten::_convolution", transposed=6),
    "aten::convolution": conv_handle("aten::convolution", transposed=6),
    "aten::_convolution_mode": conv_handle("aten::_convolution_mode", transposed=False),
    "aten::conv1d": conv_handle("aten::conv1d", transposed=False),
    "aten::conv2d": conv_handle("aten::conv2d", transposed=False),
    "aten::conv3d": conv_handle("aten::conv3d", transposed=False),
    "aten::mkldnn_convolution": conv_handle("aten::mkldnn_convolution", transposed=False),
    "aten::cudnn_convolution": conv_handle("aten::cudnn_convolution", transposed=False),
    "aten::conv_transpose1d": conv_handle("aten::conv_transpose1d", transposed=True),
    "aten::conv_transpose2d": conv_handle("aten::conv_transpose2d", transposed=True),
    "aten::conv_transpose3d": conv_handle("aten::conv_transpose3d", transposed=True),
    "aten::rms_norm": _norm_handle("aten::rms_norm", 2),
    **{
        op: _per_output(op, taps)
        for op, taps in (
            ("aten::upsample_nearest1d", 1),
            ("aten::upsample_nearest3d", 1),
            ("aten::upsample_linear1d", 2),
            ("aten::upsample_bicubic2d", 16),
            ("aten::upsample_trilinear3d", 8),
        )
    },
}
