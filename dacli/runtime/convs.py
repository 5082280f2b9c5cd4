"""Convolutions for inference: the weight norm folded into one weight (in the working precision),
run as 2-D convolutions on (B, C, 1, L) channels-last tensors, where oneDNN is 15-40 % faster on
CPUs than on (B, C, L) ones. On the CPU, oneDNN's fused convolution (as torch's own compiler uses it)
also adds the residual unit's skip path inside the convolution: no extra tensor, no extra pass."""

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..model.layers import WeightNormConv


def onednn_op(dtype):
    """oneDNN's fused convolution (``torch.ops.mkldnn._convolution_pointwise``) where this build of
    torch has it and it runs ``dtype`` on this CPU (it refuses bfloat16 without native support), else
    None: plain conv2d then. Tried once on a small input, so the choice is made at preparation and
    never changes while a file is coded."""
    op = getattr(torch.ops.mkldnn, "_convolution_pointwise", None) if torch.backends.mkldnn.is_available() else None
    if op is None:
        return None
    x = torch.zeros(1, 4, 1, 8, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.zeros(4, 4, 1, 3, dtype=dtype).contiguous(memory_format=torch.channels_last)
    try:
        op(x, w, torch.zeros(4, dtype=dtype), [0, 1], [1, 1], [1, 1], 1, "none", [], None)
        op(x, x, w, torch.zeros(4, dtype=dtype), [0, 1], [1, 1], [1, 1], 1, "add", 1.0, None, [], None)
    except (RuntimeError, NotImplementedError):
        return None
    return op


def _packed(w, conv_args, input_shape):
    """A (out, in, 1, k) weight in oneDNN's blocked layout for a convolution with these (stride,
    padding, dilation) of inputs of this shape, or ``w`` itself where torch cannot pack it."""
    stride, padding, dilation = conv_args
    try:
        reorder: Any = torch._C._nn.mkldnn_reorder_conv2d_weight  # its stub lacks the input-shape argument
        return reorder(w.contiguous().to_mkldnn(), [0, padding], [1, stride], [1, dilation], 1, list(input_shape))
    except (AttributeError, RuntimeError, NotImplementedError):
        return w


class FastConv(nn.Module):
    """The inference form of a weight-normalised convolution (see the subclasses). Keeps the plain
    module's geometry (``kernel_size``, ``stride``, ``dilation``, ``padding``, ``default_padding``,
    ``transposed``), so receptive fields and 'valid' padding work on it alike.

    ``onednn``: the op of :func:`onednn_op`, or None. In bfloat16 on the CPU, once two calls in a row
    have the same input shape (the steady windows of a file), the weight is also kept packed in
    oneDNN's layout for that shape: 3-5 % off a decode, 1-3 % off an encode (2 cores, measured). Other
    shapes (first and last windows) use the plain weight, since one packed for another shape may be
    reordered very slowly (90 ms for a 768-channel layer). In float32 the gain was 1 % and the packed
    copy added 10-15 % to the peak memory, so it is not kept."""

    def __init__(self, conv: WeightNormConv, dtype, onednn):
        super().__init__()
        self.kernel_size, self.stride, self.dilation = conv.kernel_size, conv.stride, conv.dilation
        self.padding, self.default_padding = conv.padding, conv.default_padding
        w, b = self.inference_weight(conv.weight().detach(), conv.bias.detach())
        self.register_buffer("weight", w.to(dtype).contiguous(memory_format=torch.channels_last))
        self.register_buffer("bias", b.to(dtype))
        self.onednn = onednn if conv.bias.device.type == "cpu" else None
        self.pack = self.onednn is not None and dtype == torch.bfloat16
        self._last: Optional[tuple] = None
        self._packed: Optional[torch.Tensor] = None
        self._packed_for: Optional[tuple] = None
        self.weight: torch.Tensor
        self.bias: torch.Tensor

    def inference_weight(self, w, b):
        """(weight, bias) of the 2-D convolution run, from the plain module's."""
        raise NotImplementedError

    def conv_args(self):
        """(stride, padding, dilation) of the 2-D convolution run."""
        return self.stride, self.padding, self.dilation

    def _weight_for(self, x):
        if not self.pack:
            return self.weight
        key = (tuple(x.shape), self.conv_args())
        if self._packed_for == key:
            return self._packed
        if self._last == key:
            self._packed = None  # free the old copy first
            self._packed, self._packed_for = _packed(self.weight, self.conv_args(), key[0]), key
            return self._packed
        self._last = key
        return self.weight

    def conv(self, x, add=None):
        """The 2-D convolution of a (B, C, 1, L) channels-last tensor, plus ``add`` if given."""
        stride, padding, dilation = self.conv_args()
        w = self._weight_for(x)
        if self.onednn is not None:
            args = ([0, padding], [1, stride], [1, dilation], 1)
            if add is None:
                return self.onednn(x, w, self.bias, *args, "none", [], None)
            return self.onednn(x, add, w, self.bias, *args, "add", 1.0, None, [], None)
        y = F.conv2d(x, w, self.bias, (1, stride), (0, padding), (1, dilation))
        return y if add is None else y.add_(add)

    def extra_repr(self):
        return (f"{tuple(self.weight.shape)}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, onednn={self.onednn is not None}")


class FastConv1d(FastConv):
    """WNConv1d for inference; ``add`` (the skip path of a residual unit) is added inside."""

    transposed = False

    def inference_weight(self, w, b):
        return w[:, :, None], b

    def forward(self, x, add=None):
        return self.conv(x, add)


class FastConvTranspose1d(FastConv):
    """WNConvTranspose1d (kernel 2·stride) for inference, computed as an ordinary convolution of
    kernel 2 whose ``stride × out`` output channels are the output's phases: output sample
    m·s + r − p is Σ_c x[c, m]·W[c, :, r] + x[c, m−1]·W[c, :, r+s]. In channels-last layout the phases
    interleave by a mere view, and the ordinary convolution is several times faster than oneDNN's
    transposed one."""

    transposed = True

    def inference_weight(self, w, b):
        s = self.stride
        cin, cout, k = w.shape
        assert k == 2 * s and self.dilation == 1
        taps = torch.stack([w[:, :, s:], w[:, :, :s]], -1)              # (in, out, r, tap): tap 0 = x[m-1]
        return taps.permute(2, 1, 0, 3).reshape(s * cout, cin, 1, 2), b.repeat(s)  # channel r·out + o

    def conv_args(self):
        return 1, 1, 1

    def forward(self, x):
        s, n, length = self.stride, x.shape[0], x.shape[-1]
        y = self.conv(x)                                                 # (N, s·out, 1, L+1), channels-last
        out = self.weight.shape[0] // s
        y = y.permute(0, 2, 3, 1).reshape(n, 1, (length + 1) * s, out).permute(0, 3, 1, 2)
        return y[..., self.padding:(length + 1) * s - self.padding]


class FoldedConv1d(nn.Module):
    """A weight-normalised convolution with its weight folded, on (B, C, L) tensors in float32: the
    quantizer's projections (the quantizer always runs in float32)."""

    def __init__(self, conv: WeightNormConv):
        super().__init__()
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.weight: torch.Tensor
        self.bias: torch.Tensor
        self.register_buffer("weight", conv.weight().detach().clone())
        self.register_buffer("bias", conv.bias.detach().clone())

    def forward(self, x):
        return F.conv1d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)
