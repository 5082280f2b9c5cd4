"""Snake by the C kernel of ``dacli/_snake.c``: one pass over memory instead of torch's five (forward)
or autograd's dozen (forward and backward), sharing one range reduction of the sine.

- inference: :class:`FastSnake1d` on (B, C, 1, L) channels-last float32 / bfloat16 tensors;
- training: :func:`fuse_snakes` swaps each Snake1d for a :class:`FusedSnake1d` whose forward and
  backward run in the kernel ((B, C, L) float32, or bfloat16 under autocast; or (B, C, 1, L)
  channels-last, the layout of :mod:`dacli.runtime.training`).
"""

import torch
from torch import nn

from ..model.layers import SNAKE_GUARD, Snake1d, snake

try:  # absent where dacli was installed without a C compiler
    from .. import _snake as _kernel
except ImportError:
    _kernel = None

# Elements below which the kernel runs on one thread. In OpenMP's team (the kernel built with OpenMP,
# the threads torch's last convolution left spinning) two threads pay from ~8,000 elements (a stream's
# pushes; measured on 2 cores after a convolution: 98k elements 35 µs against 60 on one thread); with
# threads of its own, started per call, only from ~65,000.
MIN_PARALLEL = 1 << 13 if getattr(_kernel, "OPENMP", 0) else 1 << 16


def kernel_available() -> bool:
    return _kernel is not None


def kernel_alpha(alpha):
    """What the kernel takes for α: its C values as float32, and 1/(α + guard) as :func:`snake` has it."""
    alpha = alpha.detach().reshape(-1).float().contiguous()
    return alpha, (alpha + SNAKE_GUARD).reciprocal()


def default_threads(x):
    """Threads for the kernel on ``x``: torch's, or one below MIN_PARALLEL elements."""
    return torch.get_num_threads() if x.numel() >= MIN_PARALLEL else 1


def snake_fused(x, alpha, out=None, threads=None, prepared=None):
    """Snake by the C kernel: ``x`` a float32 or bfloat16 (B, C, 1, L) channels-last CPU tensor,
    ``alpha`` its C values (or ``prepared``: :func:`kernel_alpha` of them); the result goes into
    ``out`` (a new tensor by default; ``x`` itself for in place). The tensors whose bare addresses the
    kernel takes are held here until it returns."""
    out = torch.empty_like(x) if out is None else out
    if x.dtype not in (torch.float32, torch.bfloat16) or out.dtype != x.dtype or out.shape != x.shape or \
            not (x.is_contiguous(memory_format=torch.channels_last) and out.is_contiguous(memory_format=torch.channels_last)):
        raise TypeError("snake_fused: x and out must be channels-last float32 or bfloat16 tensors of one shape")
    alpha, inv = kernel_alpha(alpha) if prepared is None else prepared
    channels = x.shape[1]
    if threads is None:
        threads = default_threads(x)
    _kernel.snake(x.data_ptr(), out.data_ptr(), alpha.data_ptr(), inv.data_ptr(), x.numel() // channels,
                  channels, threads, x.dtype == torch.bfloat16)
    return out


class FastSnake1d(nn.Module):
    """Snake1d for inference on (B, C, 1, L) tensors in ``dtype`` (an input in another dtype is cast
    first: a Snake begins every layer where the "mixed" precision changes). With the kernel
    (``use_kernel``, CPU): B·L rows of C values in one pass, alone ~4x faster than torch's five passes
    in float32 and ~2.5x in bfloat16; end to end 10-20 % off an encode or decode (2 cores, measured).
    Without: the formula in one new tensor, updated in place (3x less memory traffic than the plain
    module)."""

    def __init__(self, snake_module: Snake1d, use_kernel: bool, dtype=torch.float32):
        super().__init__()
        self.alpha = snake_module.alpha
        self.use_kernel, self.dtype = use_kernel, dtype
        self.kernel_alpha = kernel_alpha(self.alpha) if use_kernel else None  # once: a stream calls it often

    def forward(self, x):
        x = x.to(self.dtype)  # the layers before it may run in another precision (no copy where not)
        if self.use_kernel:
            # the encoder's first convolution (one input channel) hands over channels-first
            return snake_fused(x.contiguous(memory_format=torch.channels_last), self.alpha, prepared=self.kernel_alpha)
        alpha = self.alpha.to(x.dtype).view(1, -1, *([1] * (x.dim() - 2)))
        y = x * alpha
        y.sin_().square_().mul_((alpha + SNAKE_GUARD).reciprocal())
        return y.add_(x)


class TrainableSnake(torch.autograd.Function):
    """Snake's forward and backward by the C kernel ((B, C, L) contiguous, float32 or bfloat16; α and
    its gradient float32): two passes over memory instead of autograd's dozen, and only the input kept
    for the backward. A bfloat16 input (a convolution's output under autocast) gives a bfloat16
    output, computed in float32 and rounded once."""

    @staticmethod
    def forward(ctx, x, alpha):
        x = x.contiguous()
        alpha, inv = kernel_alpha(alpha)
        y = torch.empty_like(x)
        batch, channels, length = x.shape
        _kernel.train_forward(x.data_ptr(), y.data_ptr(), alpha.data_ptr(), inv.data_ptr(), batch * channels,
                              length, channels, torch.get_num_threads(), x.dtype == torch.bfloat16)
        ctx.save_for_backward(x, alpha, inv)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, alpha, inv = ctx.saved_tensors
        grad = grad.to(x.dtype).contiguous()
        batch, channels, length = x.shape
        grad_x = torch.empty_like(x)
        grad_rows = torch.empty(batch, channels, dtype=torch.float32)  # ∂L/∂α per (item, channel)
        _kernel.train_backward(x.data_ptr(), grad.data_ptr(), grad_x.data_ptr(), grad_rows.data_ptr(),
                               alpha.data_ptr(), inv.data_ptr(), batch * channels, length, channels,
                               torch.get_num_threads(), x.dtype == torch.bfloat16)
        return grad_x, grad_rows.sum(0).view(1, -1, 1)


class TrainableSnakeChannelsLast(torch.autograd.Function):
    """:class:`TrainableSnake` for (B, C, 1, L) channels-last tensors (B·L rows of C values): the forward
    is inference's kernel, the backward sums ∂L/∂α per channel and thread."""

    @staticmethod
    def forward(ctx, x, alpha):
        y = snake_fused(x, alpha)
        ctx.save_for_backward(x, *kernel_alpha(alpha))
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, alpha, inv = ctx.saved_tensors
        grad = grad.to(x.dtype).contiguous(memory_format=torch.channels_last)
        channels = x.shape[1]
        rows = x.numel() // channels
        if rows == 0:
            return torch.zeros_like(x), torch.zeros(1, channels, 1)
        threads = max(1, min(default_threads(x), 64, rows))  # one row of ∂L/∂α sums per thread
        grad_x = torch.empty_like(x)
        grad_parts = torch.zeros(threads, channels, dtype=torch.float32)  # ∂L/∂α per (thread, channel)
        _kernel.train_backward_cl(x.data_ptr(), grad.data_ptr(), grad_x.data_ptr(), grad_parts.data_ptr(),
                                  alpha.data_ptr(), inv.data_ptr(), rows, channels, threads,
                                  x.dtype == torch.bfloat16)
        return grad_x, grad_parts.sum(0).view(1, -1, 1)


def snake_trainable(x, alpha):
    """:func:`~dacli.model.snake` with the C kernel's forward and backward where it applies ((B, C, L)
    float32 or bfloat16 CPU tensors, ``alpha`` (1, C, 1) float32): the same values and gradients to
    float32 rounding (bfloat16: to one rounding of the result; the formula would give a float32 result,
    which the next convolution under autocast rounds to bfloat16 in the same way). Elsewhere (no
    compiler at install, CUDA) it is :func:`~dacli.model.snake`."""
    kernel_takes = _kernel is not None and x.device.type == "cpu" and x.dim() in (3, 4) and \
        x.dtype in (torch.float32, torch.bfloat16) and alpha.dtype == torch.float32 and \
        alpha.shape == (1, x.shape[1], 1)
    if x.dim() == 4:  # (B, C, 1, L): the channels-last training layout (:mod:`dacli.runtime.training`)
        if kernel_takes and x.is_contiguous(memory_format=torch.channels_last):
            return TrainableSnakeChannelsLast.apply(x, alpha)
        return snake(x, alpha[..., None])
    return TrainableSnake.apply(x, alpha) if kernel_takes else snake(x, alpha)


class FusedSnake1d(Snake1d):
    """A :class:`~dacli.model.Snake1d` whose forward and backward run in the C kernel
    (:func:`snake_trainable`); same parameter, same values and gradients."""

    def forward(self, x):
        return snake_trainable(x, self.alpha)


def fuse_snakes(model):
    """Replace every Snake1d of ``model`` in place by a :class:`FusedSnake1d` sharing its ``alpha``
    (state-dict keys and optimiser parameters are unchanged). Snake's autograd graph was ~20 % of a
    training step; fused it costs ~3.5x less (benchmarks/train_step.py)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is Snake1d:
                fused = FusedSnake1d(child.alpha.shape[1])
                fused.alpha = child.alpha
                setattr(parent, name, fused)
    return model
