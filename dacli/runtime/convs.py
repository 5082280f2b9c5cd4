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
    """A (out, in, kh, kw) weight in oneDNN's blocked layout for a convolution with these 2-D (stride,
    padding, dilation) of inputs of this shape, or ``w`` itself where torch cannot pack it."""
    stride, padding, dilation = conv_args
    try:
        reorder: Any = torch._C._nn.mkldnn_reorder_conv2d_weight  # its stub lacks the input-shape argument
        return reorder(w.contiguous().to_mkldnn(), list(padding), list(stride), list(dilation), 1, list(input_shape))
    except (AttributeError, RuntimeError, NotImplementedError):
        return w


STABLE_FROM = 128  # outputs per row from which oneDNN is taken to compute every row alike (see FastConv.stable_width)
_WIDTHS: dict = {}  # FastConv.stable_width's findings in this process, per shape, dtype, stride and dilation


def _pad(x, left, right):
    """``x`` with zero samples put before and after it (channels-last)."""
    return F.pad(x, (left, right)).contiguous(memory_format=torch.channels_last) if left or right else x


def _join(x):
    """(B, C, 1, L) channels-last → the (1, C, 1, B·L) row of its rows end to end (a view where ``x``
    is contiguous)."""
    b, c, _, length = x.shape
    return x.permute(0, 2, 3, 1).reshape(1, 1, b * length, c).permute(0, 3, 1, 2)


def _split(y, batch):
    """The inverse of :func:`_join`: (1, C, 1, B·L) → (B, C, 1, L) channels-last."""
    _, c, _, total = y.shape
    return y.permute(0, 2, 3, 1).reshape(batch, 1, total // batch, c).permute(0, 3, 1, 2)


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
        self.stable = False  # computed so that no output depends on the input's length (see conv): streamable
        self._widths: Optional[dict] = None  # the table of stable_width for this layer's shape
        w, b = self.inference_weight(conv.weight().detach(), conv.bias.detach())
        self.register_buffer("weight", w.to(dtype).contiguous(memory_format=torch.channels_last))
        self.register_buffer("bias", b.to(dtype))
        self.onednn = onednn if conv.bias.device.type == "cpu" else None
        self.pack = self.onednn is not None and dtype == torch.bfloat16
        self._packs: dict = {}  # per weight (address, shape: a view shares it): [last key, packed weight, its key]
        self.weight: torch.Tensor
        self.bias: torch.Tensor

    def inference_weight(self, w, b):
        """(weight, bias) of the 2-D convolution run, from the plain module's."""
        raise NotImplementedError

    def conv_args(self):
        """(stride, padding, dilation) of the convolution run, along the signal."""
        return self.stride, self.padding, self.dilation

    def _weight_for(self, x, w, args):
        if not self.pack:
            return w
        key = (tuple(x.shape), args)
        state = self._packs.setdefault((w.data_ptr(), w.shape), [None, None, None])
        if state[2] == key:
            return state[1]
        if state[0] == key:
            state[1] = None  # free the old copy first
            state[1:] = _packed(w, args, key[0]), key
            return state[1]
        state[0] = key
        return w

    def _run(self, x, w, args, add=None, bias=True):
        w = self._weight_for(x, w, args)
        b = self.bias if bias else None
        stride, padding, dilation = args
        if self.onednn is not None:
            if add is None:
                return self.onednn(x, w, b, list(padding), list(stride), list(dilation), 1, "none", [], None)
            return self.onednn(x, add, w, b, list(padding), list(stride), list(dilation), 1, "add", 1.0,
                               None, [], None)
        y = F.conv2d(x, w, b, stride, padding, dilation)
        return y if add is None else y.add_(add)

    def conv(self, x, add=None, padding=None):
        """The convolution of a (B, C, 1, L) channels-last tensor, plus ``add`` if given; with the
        module's padding or ``padding`` (0: 'valid', as :mod:`dacli.runtime.stepping` runs it).

        With ``stable`` set, every output is computed the same way whatever the length and start of the
        stretch it is computed in and whatever the other rows of the batch (:meth:`rows`; why:
        docs/PERFORMANCE.md, "Exactness"). Without it, a convolution run 'valid' (a push of
        :mod:`dacli.runtime.stepping`) is computed alike if it is undilated."""
        stride, own, dilation = self.conv_args()
        padding = own if padding is None else padding
        if not self.stable and (padding or dilation > 1):  # a push of an undilated one ('valid') as below
            return self._run(x, self.weight, ((1, stride), (0, padding), (1, dilation)), add)
        return self.rows(x, add, padding)

    def rows(self, x, add=None, padding=0):
        """The convolution of :meth:`_probe` of the rows of ``x`` (B, C, 1, L), ``padding`` zeros put on
        each side, each output computed as in a long row of a batch of one: the padding is zeros put in
        place and each row is widened with zeros to a :meth:`stable_width`, the extra outputs dropped;
        or, at stride 1 where that computes no more outputs, the rows are joined end to end into one
        row (a mere view in channels-last memory), whose outputs that straddle two rows are dropped."""
        w, _, stride, k, dilation = self._probe()
        reach, batch, length = (k - 1) * dilation, x.shape[0], x.shape[-1] + 2 * padding
        n = (length - reach - 1) // stride + 1  # outputs per row
        args = ((1, stride), (0, 0), (1, dilation))
        if batch > 1 and stride == 1:
            joined = max(self.stable_width(batch * length - reach), batch * length)  # outputs of the one row
            if (reach == 0 and joined == batch * length) or joined <= batch * self.stable_width(n, batch):
                row = _pad(_join(_pad(x, padding, padding)), 0, joined + reach - batch * length)
                add = add if add is None else _pad(_join(_pad(add, 0, length - n)), 0, joined - batch * length)
                return _split(self._run(row, w, args, add)[..., :batch * length], batch)[..., :n]
        wide = self.stable_width(n, batch) - n  # outputs more, on zeros appended, then dropped
        x = _pad(x, padding, padding + wide * stride)
        add = add if add is None else _pad(add, 0, wide)
        return self._run(x, w, args, add)[..., :n]

    def _probe(self):
        """(weight, input channels, stride, kernel, dilation) of the convolution :meth:`conv` runs
        with ``stable`` set."""
        return self.weight, self.weight.shape[1], self.conv_args()[0], self.kernel_size, self.dilation

    def stable_width(self, n: int, batch: int = 1) -> int:
        """The fewest outputs per row, at least ``n``, that this convolution, as :meth:`conv` runs it
        with ``stable`` set on ``batch`` rows, computes as it computes long rows of a batch of one. Each
        number up to :data:`STABLE_FROM` is tried once per process, for each shape, dtype, stride,
        dilation and batch, the first time a row of it is computed: outputs of random input computed
        in rows of that many against those of a row of ``STABLE_FROM + 1`` alone; where they differ,
        the next number is tried. 1x1 products (transposed convolutions included) in a batch of one are
        the same for any length. What differs where: docs/PERFORMANCE.md, "Exactness"."""
        if n > STABLE_FROM or (batch == 1 and self._probe()[3] == 1):
            return n
        if self._widths is None:
            w, _, stride, _, dilation = self._probe()
            key = (tuple(w.shape), w.dtype, w.device, stride, dilation)
            self._widths = _WIDTHS.setdefault(key, {})
        table = self._widths
        if (n, batch) not in table:
            wide = n
            while wide <= STABLE_FROM and not self._computes_alike(wide, batch, table):
                wide += 1
            table.update(((j, batch), wide) for j in range(n, wide + 1))
        return table[n, batch]

    def _computes_alike(self, n: int, batch: int, table: dict) -> bool:
        """Whether ``batch`` rows of ``n`` outputs compute them as a row of ``STABLE_FROM + 1`` alone
        (see stable_width)."""
        w, channels, stride, k, d = self._probe()
        args, cl = ((1, stride), (0, 0), (1, d)), torch.channels_last
        with torch.no_grad():
            if "reference" not in table:
                g = torch.Generator().manual_seed(0)
                x = torch.randn(1, channels, 1, STABLE_FROM * stride + (k - 1) * d + 1, generator=g)
                x = x.to(device=w.device, dtype=w.dtype).contiguous(memory_format=cl)
                table["reference"] = x, self._run(x, w, args)
            x, whole = table["reference"]
            x = x[..., :(n - 1) * stride + (k - 1) * d + 1].expand(batch, -1, -1, -1).contiguous(memory_format=cl)
            return bool((self._run(x, w, args) == whole[..., :n]).all())

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


def _pair_view(w):
    """A (out, in, 1, 2) channels-last weight as the (out, 2·in, 1, 1) weight of a 1x1 convolution of
    its two taps' inputs stacked along the channels (tap 0's, then tap 1's): in channels-last memory
    an output's taps already lie one after the other, so this is the same memory, no copy."""
    out, cin, _, k = w.shape
    assert k == 2 and w.is_contiguous(memory_format=torch.channels_last)
    return w.as_strided((out, 2 * cin, 1, 1), (2 * cin, 1, 2 * cin, 2 * cin))


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

    def _probe(self):
        return _pair_view(self.weight), 2 * self.weight.shape[1], 1, 1, 1

    def phases(self, y):
        """The (N, s·out, 1, M) output of :meth:`conv` as the (N, out, 1, M·s) signal it interleaves."""
        s, n, m = self.stride, y.shape[0], y.shape[-1]
        out = self.weight.shape[0] // s
        return y.permute(0, 2, 3, 1).reshape(n, 1, m * s, out).permute(0, 3, 1, 2)

    def conv(self, x, add=None, padding=None):
        """The kernel-2 convolution of the input frames, padding 1 (or ``padding``): (N, s·out, 1, L + 1)
        (L + 2·padding − 1). With ``stable`` set (:func:`dacli.runtime.streamable`) or for a push
        (``padding`` 0, :mod:`dacli.runtime.stepping`): as one 1x1 convolution of frames m − 1 and m
        stacked along the channels, the same products in one call, since oneDNN computes a kernel of two
        taps differently for inputs of different lengths, a 1x1 one in a batch of one not (rows
        joined into one: :meth:`FastConv.rows`)."""
        if not self.stable and padding != 0:
            return super().conv(x, padding=padding)
        frames = x if padding == 0 else F.pad(x, (1, 1))
        pair = torch.cat([frames[..., :-1], frames[..., 1:]], 1)  # taps m − 1, m
        return self.rows(pair.contiguous(memory_format=torch.channels_last))

    def forward(self, x):
        length = x.shape[-1]
        y = self.phases(self.conv(x))                                   # (N, out, 1, (L+1)·s), channels-last
        return y[..., self.padding:(length + 1) * self.stride - self.padding]


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
