"""Operators that do no multiply-accumulate work: ignored on purpose by the fvcore count."""

from __future__ import annotations

__all__ = ["IGNORED_OPS"]


def _aten(names: str, *, inplace: bool = False) -> tuple[str, ...]:
    """``"add mul"`` -> ``("aten::add", "aten::mul")`` (plus ``aten::add_`` ... if ``inplace``)."""
    ops: list[str] = []
    for name in names.split():
        ops.append(f"aten::{name}")
        if inplace:
            ops.append(f"aten::{name}_")
    return tuple(ops)


#: Operators that do no multiply-accumulate work and are ignored on purpose. Any traced operator
#: that is neither here nor in :data:`MAC_HANDLES` makes :func:`archsearch.cost.count` fail.
#: Includes fvcore's own ignore list. Norm layers are *not* here: they have handles (see the
#: module docstring), and so does ``adaptive_avg_pool2d`` (fvcore's default).
IGNORED_OPS: tuple[str, ...] = (
    # Elementwise arithmetic, comparisons and logic, with their in-place variants.
    *_aten(
        """
        add sub rsub mul div true_divide floor_divide remainder fmod neg abs sign
        exp exp2 expm1 log log2 log10 log1p pow sqrt rsqrt reciprocal square sin cos
        erf erfc erfinv clamp clamp_min clamp_max clip round floor ceil trunc frac
        lerp addcmul addcdiv masked_fill where maximum minimum fmax fmin nan_to_num
        eq ne lt le gt ge logical_and logical_or logical_not logical_xor
        bitwise_and bitwise_or bitwise_not bitwise_xor __and__ __or__ __xor__
        isnan isinf isfinite
        """,
        inplace=True,
    ),
    # Activations (softmax included: exponentials and a normalisation, no MACs).
    *_aten(
        """
        relu relu6 gelu silu sigmoid hardsigmoid hardswish hardtanh tanh elu selu celu
        leaky_relu mish softplus softsign threshold hardshrink softshrink tanhshrink
        logsigmoid prelu rrelu glu softmax log_softmax _softmax _log_softmax softmin
        """,
        inplace=True,
    ),
    # Reductions, scans and sorting.
    *_aten(
        """
        mean sum prod max min amax amin aminmax argmax argmin norm linalg_vector_norm
        frobenius_norm var std var_mean std_mean logsumexp cumsum cumprod cummax cummin
        all any topk sort argsort count_nonzero
        """
    ),
    # Shape, indexing and data movement (unfold/im2col and fold/col2im included).
    *_aten(
        """
        view view_as _unsafe_view reshape reshape_as permute transpose t swapaxes swapdims
        movedim moveaxis flatten unflatten squeeze unsqueeze cat concat concatenate stack
        hstack vstack split split_with_sizes tensor_split chunk unbind slice select narrow
        expand expand_as broadcast_to broadcast_tensors repeat repeat_interleave tile
        contiguous unfold fold im2col col2im pad constant_pad_nd reflection_pad1d
        reflection_pad2d replication_pad1d replication_pad2d roll flip index index_select
        index_put index_add index_copy index_fill gather scatter scatter_add scatter_reduce
        masked_select masked_scatter take nonzero pixel_shuffle pixel_unshuffle
        channel_shuffle native_channel_shuffle diagonal tril triu meshgrid as_strided alias
        embedding one_hot
        """
    ),
    # In-place variants of the above that a trace can hold.
    *_aten(
        """
        index_put_ index_add_ index_copy_ index_fill_ masked_scatter_ scatter_ scatter_add_
        scatter_reduce_ unsqueeze_ squeeze_ transpose_ t_ tril_ triu_ resize_ set_
        """
    ),
    # Scalar and size plumbing.
    *_aten(
        """
        size numel dim Int Float Bool ScalarImplicit IntImplicit FloatImplicit item
        _shape_as_tensor sym_size sym_numel
        """
    ),
    # Pooling (fvcore's adaptive_avg_pool2d handle is kept: 1 per input element).
    *_aten(
        """
        avg_pool1d avg_pool2d avg_pool3d max_pool1d max_pool2d max_pool3d
        max_pool1d_with_indices max_pool2d_with_indices max_pool3d_with_indices
        adaptive_avg_pool1d adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d
        adaptive_max_pool3d
        """
    ),
    # Dropout and stochastic depth (identities in eval mode).
    *_aten(
        "dropout feature_dropout alpha_dropout feature_alpha_dropout native_dropout bernoulli",
        inplace=True,
    ),
    # Copies, fills, type conversions and autograd plumbing.
    *_aten("detach copy fill zero", inplace=True),
    *_aten(
        """
        clone to _to_copy type_as float double half bfloat16 int long bool lift_fresh
        lift_fresh_copy requires_grad_ resolve_conj resolve_neg
        """
    ),
    # Tensor factories.
    *_aten(
        """
        zeros zeros_like ones ones_like full full_like empty empty_like empty_strided
        new_zeros new_ones new_full new_empty arange linspace logspace eye scalar_tensor
        tensor rand rand_like randn randn_like randint randperm
        """
    ),
)
