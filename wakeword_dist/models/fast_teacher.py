"""Faster forward passes for a *frozen* Wav2Vec2-family teacher (Wav2Vec2, HuBERT, WavLM).

``optimize_teacher(teacher, ...)`` rewrites the HF model inside a ``TeacherModel`` (or a bare HF
``*ForSequenceClassification``) in place and returns the module to call. Every rewrite computes
the same function as the HF code; only the floating-point summation order may change. Each has a
CPU parity test against the plain HF model (tests/bench/test_fast_teacher.py, fp32, 1e-5).

Rewrites (what they save, measured figures in docs/performance.md):

- ``fold_weight_norm`` (exact, bit for bit in the weights' dtype): HF wraps the positional conv
  in ``weight_norm`` and recomputes ``g * v / ||v||`` (768 x 48 x 128 for base) on every call.
  For a frozen teacher the weight is folded once.
- ``fuse_feature_norm`` (same function, other rounding): the first feature-encoder layer is
  conv(1 -> C, kernel K, stride s) + GroupNorm(C groups = per-channel norm over time) + GELU.
  Because the conv has one input channel, each output channel is ``w_c . f_t + b_c`` on the
  K-sample frames f_t, so its mean and variance over time follow from the (K, K) frame
  covariance of the clip: ``mu_c = w_c . mean(f) + b_c``, ``var_c = w_c^T Cov(f) w_c``. The
  normalisation then folds into per-clip conv weights and the layer becomes ONE batched matmul
  (B, C, K) @ (B, K, T) writing its output once, instead of conv (write) + GroupNorm (read twice,
  write) on the largest activation of the network (512 x 3199 per clip for wav2vec2-base, ~1/6
  of its forward time on an H200 according to MEASURED.md).
- ``channels_last_encoder`` (same function, other rounding): the whole conv feature encoder in
  (B, T, C) layout, every conv as one GEMM on its (kernel x C_in) windows (a free reshape for
  wav2vec2's kernel-2 / stride-2 layers), the first layer fused as above, LayerNorm variants
  normalising over C where the data already lies; the encoder's output is a transposed view, so
  HF's own ``transpose(1, 2)`` after it costs nothing. Aims at the conv stack's ~1/3 of the H200
  forward (MEASURED.md): cuDNN's 1-D convs there run far from the GEMM roofline.
- ``dense_pos_conv`` (same function, other rounding): the positional conv (kernel 128, padding
  64, 16 groups) on T = 49 frames (1 s) only ever touches T of its 128 taps per output frame; it
  is rewritten as a per-group (T*Cg x T*Cg) Toeplitz matrix product, built once per T from the
  folded weight: 2.6x fewer multiply-adds than the padded conv and a plain GEMM instead of a
  large-kernel grouped conv. Used only while T < kernel (else the conv is cheaper); the matrix
  (G * (T*Cg)^2 elements: 88 M for base, 177 MB in fp16) is cached per (T, dtype, device). It is
  read once per call, so it pays at GPU batch sizes, not at a CPU batch of 4.
- ``compile``: ``torch.compile`` of the HF model (``compile_mode``; compile time is paid on the
  first call of every new input shape).
- ``cuda_graphs``: capture the whole HF forward once per input shape as a CUDA graph and replay
  it (removes the ~1 k kernel launches per call; needs fixed batch shapes, CUDA only; outputs are
  copied out of the graph's static buffer). A no-op on CPU.

Not done, with the reason (docs/performance.md has the numbers):
- running fewer transformer layers: ``*ForSequenceClassification`` pools the *last* hidden
  state (unless ``use_weighted_layer_sum``), so every layer is needed for the same logits;
  ``truncated_copy`` exists for the benchmark only, to show how far the logits move.

ZeRO-3: fold the weight norm *before* ``place_teacher`` (DeepSpeed partitions the parameters
there); apply the other rewrites only to a replicated teacher, after placement (they read
parameters of sub-modules whose forward they skip, which ZeRO-3 would not have gathered).
"""

from __future__ import annotations

import copy
import logging
from types import SimpleNamespace

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

logger = logging.getLogger(__name__)

__all__ = ["optimize_teacher", "fold_weight_norm", "fuse_feature_norm", "channels_last_encoder", "dense_pos_conv",
           "FusedGroupNormConv", "ChannelsLastFeatureEncoder", "DensePositionalConv", "CudaGraphModel",
           "truncated_copy", "hf_model_of"]


def hf_model_of(teacher: nn.Module) -> nn.Module:
    """The HF ``*ForSequenceClassification`` inside a ``TeacherModel`` (or the module itself)."""
    return teacher.model if hasattr(teacher, "model") and hasattr(teacher, "label_names") else teacher


def _frozen_parameter(t: Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach(), requires_grad=False)


# ------------------------------------------------------------------------------ weight norm
def fold_weight_norm(model: nn.Module) -> int:
    """Replace every weight-norm parametrisation (new- or old-style) by its current value.

    Returns how many were folded. The folded weight is computed once in the weights' own dtype,
    with the same ops HF runs on every call, so the forward is bit-identical.
    """
    folded = 0
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight") and any(
                isinstance(p, torch.nn.utils.parametrizations._WeightNorm)
                for p in module.parametrizations["weight"]):
            if set(module.parametrizations.keys()) != {"weight"}:
                continue  # other tensors parametrised too: leave the module alone
            with torch.no_grad():
                weight = module.weight.detach().clone()
            # By hand instead of parametrize.remove_parametrizations: that deletes the property
            # from the dynamically made Parametrized* class, which deep copies of the model share
            # (it would break every copy). Restoring the instance's own class touches nothing else.
            module.__class__ = module.__class__.__bases__[0]
            del module._modules["parametrizations"]
            module.weight = _frozen_parameter(weight)
            folded += 1
        elif hasattr(module, "weight_g") and hasattr(module, "weight_v"):  # torch.nn.utils.weight_norm
            with torch.no_grad():
                torch.nn.utils.remove_weight_norm(module)
            module.weight.requires_grad_(False)
            folded += 1
    return folded


# ------------------------------------------------------------------------------ first conv + GroupNorm
def _is_groupnorm_first_layer(layer: nn.Module) -> bool:
    conv, norm = getattr(layer, "conv", None), getattr(layer, "layer_norm", None)
    return (isinstance(conv, nn.Conv1d) and isinstance(norm, nn.GroupNorm)
            and conv.in_channels == 1 and conv.groups == 1 and conv.padding in ((0,), 0)
            and conv.dilation in ((1,), 1) and norm.num_groups == norm.num_channels == conv.out_channels
            and hasattr(layer, "activation"))


class FusedGroupNormConv(nn.Module):
    """conv(1 -> C, kernel K, stride s) + per-channel GroupNorm + activation as one batched matmul.

    (B, 1, S) -> (B, C, T), T = (S - K) // s + 1. Statistics are computed analytically in float32
    from each clip's (K, K) frame covariance; the matmul runs in the input dtype. Owns the
    conv/norm parameters (same ``Parameter`` objects), so ZeRO-3 style per-module gathering and
    ``.to()`` keep working.
    """

    def __init__(self, layer: nn.Module):
        super().__init__()
        conv, norm = layer.conv, layer.layer_norm
        self.kernel, self.stride = conv.kernel_size[0], conv.stride[0]
        self.eps = float(norm.eps)
        self.weight = conv.weight            # (C, 1, K)
        self.bias = conv.bias                # (C,) or None
        self.norm_weight = norm.weight       # (C,) or None (affine=False)
        self.norm_bias = norm.bias
        self.activation = layer.activation

    def _normalised_conv(self, audio: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """audio (B, S) -> frames (B, T, K), per-clip weights (B, C, K), shift (B, C), in audio's dtype."""
        dtype = audio.dtype
        frames = audio.unfold(1, self.kernel, self.stride)  # (B, T, K), a view
        n_frames = frames.shape[1]
        w = self.weight[:, 0, :].float()  # (C, K)
        with torch.autocast(device_type=audio.device.type, enabled=False):
            f32 = frames.float()
            mean_f = f32.mean(dim=1)  # (B, K)
            centred = f32 - mean_f[:, None, :]
            cov = centred.transpose(1, 2) @ centred / n_frames  # (B, K, K), population covariance
            mu = mean_f @ w.t()  # (B, C) without the conv bias, which cancels in y - mean(y)
            var = ((cov @ w.t()) * w.t()).sum(dim=1).clamp_min(0.0)  # (B, C) = w_c^T Cov w_c
            scale = torch.rsqrt(var + self.eps)
            if self.norm_weight is not None:
                scale = scale * self.norm_weight.float()
            shift = -mu * scale
            if self.norm_bias is not None:
                shift = shift + self.norm_bias.float()
            w_eff = w[None] * scale[..., None]  # (B, C, K)
        return frames, w_eff.to(dtype), shift.to(dtype)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 1, S) -> (B, C, T) in x's dtype."""
        frames, w_eff, shift = self._normalised_conv(x[:, 0])
        return self.activation(torch.baddbmm(shift[..., None], w_eff, frames.transpose(1, 2)))

    def forward_channels_last(self, audio: Tensor) -> Tensor:
        """(B, S) -> (B, T, C) contiguous, in audio's dtype."""
        frames, w_eff, shift = self._normalised_conv(audio)
        return self.activation(torch.baddbmm(shift[:, None, :], frames, w_eff.transpose(1, 2)))


def fuse_feature_norm(model: nn.Module) -> int:
    """Swap the GroupNorm first feature-encoder layer for ``FusedGroupNormConv``; returns 0 or 1."""
    for module in model.modules():
        layers = getattr(module, "conv_layers", None)
        if isinstance(layers, nn.ModuleList) and len(layers) and _is_groupnorm_first_layer(layers[0]):
            layers[0] = FusedGroupNormConv(layers[0])
            return 1
    return 0


# ------------------------------------------------------------------------------ channels-last feature encoder
def _conv_as_gemm(x: Tensor, conv: nn.Conv1d) -> Tensor:
    """Conv1d (no padding, no groups, no dilation) on channels-last x (B, T, C_in) -> (B, T_out, C_out).

    Kernel == stride (wav2vec2's k2 s2 layers): a free reshape, then one GEMM. Otherwise the
    (B, T_out, K, C_in) windows are gathered (a copy of K/s times the input), then one GEMM.
    """
    x = x.contiguous()
    b, t, c = x.shape
    k, s = conv.kernel_size[0], conv.stride[0]
    t_out = (t - k) // s + 1
    if k == s:
        windows = x[:, : t_out * s].reshape(b, t_out, k * c)
    else:
        windows = x.as_strided((b, t_out, k, c), (t * c, s * c, c, 1)).reshape(b, t_out, k * c)
    w = conv.weight.permute(2, 1, 0).reshape(k * c, -1)  # rows (k, c_in) like the windows
    out = windows @ w
    return out + conv.bias if conv.bias is not None else out


class ChannelsLastFeatureEncoder(nn.Module):
    """The conv feature encoder run in (B, T, C) layout, each conv as one GEMM (tensor cores, no
    cuDNN layout conversions), the GroupNorm first layer fused (``FusedGroupNormConv``), a
    LayerNorm layer (``feat_extract_norm="layer"``) normalising over C where the data already is.

    (B, S) -> (B, C, T) as HF's encoder returns, but as a transposed view of (B, T, C) memory, so
    HF's following ``transpose(1, 2)`` costs nothing.
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.conv_layers = encoder.conv_layers
        first = self.conv_layers[0]
        self.first = FusedGroupNormConv(first) if _is_groupnorm_first_layer(first) else None

    @staticmethod
    def supports(encoder: nn.Module) -> bool:
        layers = getattr(encoder, "conv_layers", None)
        if not isinstance(layers, nn.ModuleList) or not len(layers):
            return False
        for i, layer in enumerate(layers):
            conv, norm = getattr(layer, "conv", None), getattr(layer, "layer_norm", None)
            if not (isinstance(conv, nn.Conv1d) and conv.groups == 1 and conv.padding in ((0,), 0)
                    and conv.dilation in ((1,), 1) and hasattr(layer, "activation")):
                return False
            if norm is not None and not isinstance(norm, nn.LayerNorm) and not (i == 0 and _is_groupnorm_first_layer(layer)):
                return False
        return True

    def forward(self, input_values: Tensor) -> Tensor:
        x = input_values
        for i, layer in enumerate(self.conv_layers):
            if i == 0 and self.first is not None:
                x = self.first.forward_channels_last(x)
                continue
            if i == 0:  # one input channel: the conv is a GEMM on the (B, T, K) frames
                conv = layer.conv
                frames = x.unfold(1, conv.kernel_size[0], conv.stride[0])
                x = frames @ conv.weight[:, 0, :].t()
                x = x + conv.bias if conv.bias is not None else x
            else:
                x = _conv_as_gemm(x, layer.conv)
            if getattr(layer, "layer_norm", None) is not None:
                x = layer.layer_norm(x)
            x = layer.activation(x)
        return x.transpose(1, 2)


def channels_last_encoder(model: nn.Module) -> int:
    """Swap the conv feature encoder for ``ChannelsLastFeatureEncoder``; returns 0 or 1."""
    for module in model.modules():
        enc = getattr(module, "feature_extractor", None)
        if enc is not None and not isinstance(enc, ChannelsLastFeatureEncoder) and ChannelsLastFeatureEncoder.supports(enc):
            module.feature_extractor = ChannelsLastFeatureEncoder(enc)
            return 1
    return 0


# ------------------------------------------------------------------------------ positional conv
class DensePositionalConv(nn.Module):
    """HF positional conv embedding (B, T, C) -> (B, T, C) as per-group Toeplitz matmuls when T < K.

    out[t] = sum_s W[:, :, s - t + P] x[s] + b (P = K // 2, taps outside [0, K) are zero, the
    trailing frame of an even kernel dropped as HF's SamePad does). For T >= K the conv is run.
    """

    def __init__(self, pos_conv: nn.Module, max_matrix_bytes: int = 1 << 30):
        super().__init__()
        conv = pos_conv.conv
        self.conv = conv
        self.padding = pos_conv.padding
        self.activation = pos_conv.activation
        self.kernel, self.groups = conv.kernel_size[0], conv.groups
        self.pad = conv.padding[0]
        self.max_matrix_bytes = max_matrix_bytes
        self._matrices: dict = {}

    @torch.compiler.disable  # built eagerly once per shape; a compiled forward calls it as a black box
    def _matrix(self, n_frames: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        key = (n_frames, dtype, device)  # frozen weights: they change only with .to(dtype / device)
        m = self._matrices.get(key)
        if m is None:
            self._matrices.clear()
            w = self.conv.weight.detach().float()  # (C, Cg, K)
            c, cg, k = w.shape
            g = self.groups
            w = w.reshape(g, c // g, cg, k)  # (G, Cg_out, Cg_in, K)
            t = torch.arange(n_frames, device=w.device)
            tap = t[None, :] - t[:, None] + self.pad  # (T_out, T_in): tap used by output t for input s
            valid = (tap >= 0) & (tap < k)
            taps = w[..., tap.clamp(0, k - 1)] * valid  # (G, O, I, T_out, T_in)
            # rows (t_in, i), cols (t_out, o): x (.., T_in*I) @ m -> (.., T_out*O)
            m = taps.permute(0, 4, 2, 3, 1).reshape(g, n_frames * cg, n_frames * (c // g))
            m = m.to(device=device, dtype=dtype).contiguous()
            self._matrices[key] = m
        return m

    def forward(self, hidden_states: Tensor) -> Tensor:
        b, n_frames, c = hidden_states.shape
        g, cg = self.groups, c // self.groups
        bytes_needed = g * (n_frames * cg) ** 2 * hidden_states.element_size()
        if n_frames >= self.kernel or bytes_needed > self.max_matrix_bytes:
            x = self.conv(hidden_states.transpose(1, 2))
            return self.activation(self.padding(x)).transpose(1, 2)
        m = self._matrix(n_frames, hidden_states.dtype, hidden_states.device)
        x = hidden_states.reshape(b, n_frames, g, cg).permute(2, 0, 1, 3).reshape(g, b, n_frames * cg)
        out = torch.bmm(x, m).reshape(g, b, n_frames, cg).permute(1, 2, 0, 3).reshape(b, n_frames, c)
        if self.conv.bias is not None:
            out = out + self.conv.bias
        return self.activation(out)


def _is_pos_conv(module: nn.Module) -> bool:
    conv = getattr(module, "conv", None)
    pad = getattr(module, "padding", None)
    return (isinstance(conv, nn.Conv1d) and hasattr(pad, "num_pad_remove") and hasattr(module, "activation")
            and not hasattr(module, "batch_norm") and conv.stride in ((1,), 1) and conv.dilation in ((1,), 1)
            and conv.padding[0] == conv.kernel_size[0] // 2
            and pad.num_pad_remove == (1 if conv.kernel_size[0] % 2 == 0 else 0)
            and not parametrize.is_parametrized(conv))


def dense_pos_conv(model: nn.Module) -> int:
    """Swap weight-folded positional conv embeddings for ``DensePositionalConv``; returns the count."""
    count = 0
    for module in model.modules():
        pos = getattr(module, "pos_conv_embed", None)
        if pos is not None and not isinstance(pos, DensePositionalConv) and _is_pos_conv(pos):
            module.pos_conv_embed = DensePositionalConv(pos)
            count += 1
    return count


# ------------------------------------------------------------------------------ CUDA graphs
class CudaGraphModel(nn.Module):
    """Replays a CUDA graph of ``model(input_values=x).logits`` per input (shape, dtype, device).

    Stands in for the HF model inside a ``TeacherModel`` (takes ``input_values``, returns an object
    with ``.logits``). Inputs not on CUDA, or shapes beyond ``max_graphs``, run eagerly. Each graph
    keeps its activations in a private memory pool (about one forward's worth).
    """

    def __init__(self, model: nn.Module, max_graphs: int = 4, warmup: int = 2):
        super().__init__()
        self.inner = model
        self.max_graphs = max_graphs
        self.warmup = warmup
        self._graphs: dict = {}

    @property
    def config(self):
        return self.inner.config

    def _capture(self, x: Tensor):
        static_in = x.clone()
        stream = torch.cuda.Stream(device=x.device)
        stream.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(stream), torch.no_grad():
            for _ in range(self.warmup):  # lazy inits (cuBLAS handles, SDPA choice) outside capture
                self.inner(input_values=static_in)
        torch.cuda.current_stream(x.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.no_grad():
            static_out = self.inner(input_values=static_in).logits
        return graph, static_in, static_out

    def forward(self, input_values: Tensor, **kwargs):
        x = input_values
        key = (tuple(x.shape), x.dtype, x.device)
        if kwargs or x.device.type != "cuda" or torch.is_grad_enabled() or (
                key not in self._graphs and len(self._graphs) >= self.max_graphs):
            return self.inner(input_values=x, **kwargs)
        if key not in self._graphs:
            self._graphs[key] = self._capture(x)
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(x)
        graph.replay()
        return SimpleNamespace(logits=static_out.clone())


# ------------------------------------------------------------------------------ entry point
def optimize_teacher(teacher: nn.Module, *, fold_weight_norm: bool = True, fuse_feature_norm: bool = False,
                     channels_last_encoder: bool = False, dense_pos_conv: bool = False, compile: bool = False,
                     compile_mode: str | None = None, cuda_graphs: bool = False) -> nn.Module:
    """Rewrite a frozen teacher for speed, in place; returns the module to call.

    Args:
        teacher: a frozen ``TeacherModel`` (audio (B, S) -> logits (B, C)) or a bare HF
            ``*ForSequenceClassification``. Call before or after ``.to(device, dtype)``.
        fold_weight_norm: fold the positional conv's weight norm (exact).
        fuse_feature_norm: first conv + GroupNorm as one batched matmul (see module docstring).
        channels_last_encoder: the whole conv feature encoder in (B, T, C) with GEMM convs; includes
            the fused first layer, so ``fuse_feature_norm`` is implied.
        dense_pos_conv: positional conv as Toeplitz matmuls while frames < kernel; implies folding.
        compile: ``torch.compile`` the HF model (``compile_mode`` passed through; None = default).
        cuda_graphs: replay the HF forward as a CUDA graph per input shape (CUDA inputs only).
    Returns ``teacher`` itself for a ``TeacherModel`` (its ``.model`` swapped), else the new module.
    ``teacher.fast_teacher`` (or ``module.fast_teacher``) records what was applied.
    """
    if compile and cuda_graphs:
        raise ValueError("compile and cuda_graphs are exclusive; use compile_mode='reduce-overhead' "
                         "for compiled CUDA graphs")
    hf = hf_model_of(teacher)
    applied: dict = {}
    if (fold_weight_norm or dense_pos_conv) and not getattr(teacher, "fast_teacher", {}).get("fold_weight_norm"):
        applied["fold_weight_norm"] = _fold(hf)  # (not again: a second call would find nothing)
    if channels_last_encoder:
        applied["channels_last_encoder"] = channels_last_encoder_(hf)
    if fuse_feature_norm and not applied.get("channels_last_encoder"):
        applied["fuse_feature_norm"] = _fuse(hf)
    if dense_pos_conv:
        applied["dense_pos_conv"] = _dense(hf)
    new_hf = hf
    if compile:
        new_hf = torch.compile(hf, mode=compile_mode, dynamic=False)
        applied["compile"] = compile_mode or "default"
    elif cuda_graphs:
        new_hf = CudaGraphModel(hf)
        applied["cuda_graphs"] = True
    missing = [k for k, v in applied.items() if v == 0]
    if missing:
        logger.warning("optimize_teacher: %s found nothing to rewrite in %s", missing, type(hf).__name__)
    if new_hf is hf:
        out = teacher
    elif hf is teacher:
        out = new_hf
    else:
        teacher.model = new_hf
        out = teacher
    out.fast_teacher = {**getattr(out, "fast_teacher", {}), **applied}  # a second call adds to the record
    return out


_fold, _fuse, _dense, channels_last_encoder_ = fold_weight_norm, fuse_feature_norm, dense_pos_conv, channels_last_encoder


def truncated_copy(teacher: nn.Module, num_layers: int) -> nn.Module:
    """A deep copy running only the first ``num_layers`` transformer layers. NOT the same function:
    the classifier pools the last hidden state. For the benchmark's logit-error figure only."""
    out = copy.deepcopy(teacher)
    hf = hf_model_of(out)
    encoder = hf.base_model.encoder
    encoder.layers = encoder.layers[:num_layers]
    return out
