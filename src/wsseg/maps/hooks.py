"""Hook machinery that always cleans up: eval mode, guided ReLUs, captured layer outputs.

Each helper is a context manager; leaving it (normally or by an exception) removes every hook,
restores every patched module and the model's train/eval mode and requires_grad flags.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from wsseg.errors import WssegError

GUIDED_ACTIVATIONS = (nn.ReLU, nn.ReLU6)


class _GuidedClamp(torch.autograd.Function):
    """clamp(x, 0, upper) whose backward is guided: grad * (x > 0) * (grad > 0).

    The (x > 0) mask is made once in forward and reused by every backward pass (one per class).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, upper: float | None) -> torch.Tensor:  # type: ignore[override]
        if ctx.needs_input_grad[0]:  # no mask where no gradient will flow (below the saliency layers)
            ctx.save_for_backward((x > 0).to(x.dtype))
        return x.clamp(min=0) if upper is None else x.clamp(0, upper)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (positive,) = ctx.saved_tensors
        return grad.clamp(min=0).mul_(positive), None


def prepare_inputs(images: torch.Tensor, requires_grad: bool = True) -> torch.Tensor:
    """A detached copy in channels-last layout (CPU convolutions and their backward passes run
    about 1.4x faster so), as a graph leaf when gradients are wanted."""
    inputs = images.detach().clone().contiguous(memory_format=torch.channels_last)
    return inputs.requires_grad_(requires_grad)


def guided_activation(x: torch.Tensor, upper: float | None = None) -> torch.Tensor:
    return _GuidedClamp.apply(x, upper)


@contextlib.contextmanager
def inference_state(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode, no parameter gradients and true float32 while maps are computed; all restored afterwards.

    No parameter gradients means backward passes stop at the deepest layer asked for and
    nothing is left in ``.grad``. On a GPU, TF32 convolutions and matrix products (cuDNN's
    default on Ampere and later) keep 10 mantissa bits: too few for saliency maps, whose
    differences between classes are small numbers, so they are turned off here.
    """
    modes = {module: module.training for module in model.modules()}
    flags = {param: param.requires_grad for param in model.parameters()}
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        model.eval()
        for param in flags:
            param.requires_grad_(False)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        yield model
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
        for module, mode in modes.items():
            module.training = mode
        for param, flag in flags.items():
            param.requires_grad_(flag)


@contextlib.contextmanager
def guided_relus(model: nn.Module) -> Iterator[int]:
    """Make every nn.ReLU / nn.ReLU6 module back-propagate with the guided rule.

    The module's forward is replaced per instance (not per call), so a module used several
    times in one forward and in-place ReLUs are both handled: each call gets its own autograd
    node, and nothing is computed in place. Yields how many modules were patched.
    """
    patched: list[nn.Module] = []
    try:
        for module in model.modules():
            if isinstance(module, GUIDED_ACTIVATIONS):
                upper = 6.0 if isinstance(module, nn.ReLU6) else None
                module.forward = (lambda x, _upper=upper: guided_activation(x, _upper))  # type: ignore[method-assign]
                patched.append(module)
        yield len(patched)
    finally:
        for module in patched:
            del module.forward  # back to the class's forward


@contextlib.contextmanager
def folded_batchnorm(model: nn.Module) -> Iterator[int]:
    """Fold eval-mode batch norms into the convolutions before them, for the duration of the block.

    Uses the (conv, bn) pairs the model declares (``conv_bn_pairs()``); a model that declares
    none is left as it is. Saves a batch-norm forward and one per backward pass (about 15% of a
    DCSM computation on EfficientNet-Lite0); results change only by float rounding (~1e-4).
    Yields how many pairs were folded.
    """
    pairs = list(model.conv_bn_pairs()) if hasattr(model, "conv_bn_pairs") else []
    patched: list[nn.Module] = []
    try:
        with torch.no_grad():
            for conv, bn in pairs:
                if bn.training or bn.running_var is None:
                    continue
                scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
                shift = (bn.bias if bn.affine else torch.zeros_like(bn.running_mean)) - bn.running_mean * scale
                if conv.bias is not None:
                    shift = shift + conv.bias * scale
                weight = (conv.weight * scale.view(-1, 1, 1, 1)).contiguous(memory_format=torch.channels_last)

                def forward(x: torch.Tensor, _conv=conv, _weight=weight, _bias=shift) -> torch.Tensor:
                    padding = getattr(_conv, "static_padding", None)
                    return _conv._conv_forward(padding(x) if padding is not None else x, _weight, _bias)

                conv.forward = forward  # type: ignore[method-assign]
                bn.forward = _identity  # type: ignore[method-assign]
                patched += [conv, bn]
        yield len(patched) // 2
    finally:
        for module in patched:
            del module.forward


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def resolve_layers(model: nn.Module, names: Sequence[str]) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    missing = [name for name in names if name not in modules]
    if missing:
        sample = ", ".join(list(modules)[1:8])
        raise WssegError(f"unknown layer(s) {missing} in {type(model).__name__} (layers look like: {sample}, ...)")
    return {name: modules[name] for name in names}


class CapturedOutputs:
    """The output tensors of named modules during one forward pass."""

    def __init__(self) -> None:
        self.outputs: dict[str, torch.Tensor] = {}
        self.calls: dict[str, int] = {}

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.outputs[name]


@contextlib.contextmanager
def capture_outputs(model: nn.Module, names: Sequence[str]) -> Iterator[CapturedOutputs]:
    """Record the outputs of the named modules (as graph tensors, for autograd.grad)."""
    captured = CapturedOutputs()
    handles = []

    def make_hook(name: str):
        def hook(_module: nn.Module, _inputs, output):
            if not isinstance(output, torch.Tensor):
                raise WssegError(f"layer {name!r} does not output a single tensor")
            captured.calls[name] = captured.calls.get(name, 0) + 1
            if captured.calls[name] > 1:
                raise WssegError(f"layer {name!r} runs more than once per forward; pick a layer that runs once")
            # a clone, so that a later in-place operation cannot change what we differentiate against;
            # without a graph so far (frozen parameters, input not requiring grad) it becomes the leaf
            # the graph starts from, so nothing below the first captured layer is recorded
            if output.requires_grad or not torch.is_grad_enabled():
                output = output.clone()
            else:
                output = output.detach().clone().requires_grad_(True)
            captured.outputs[name] = output
            return output

        return hook

    try:
        for name, module in resolve_layers(model, names).items():
            handles.append(module.register_forward_hook(make_hook(name)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()
