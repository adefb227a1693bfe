"""Transformer encoders written in plain torch ops: a ViT (Dosovitskiy et al. 2021, "An
Image is Worth 16x16 Words: Transformers for Image Recognition at Scale", ICLR) and a
BERT-style encoder (Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional
Transformers for Language Understanding", NAACL; the block is Vaswani et al. 2017,
"Attention Is All You Need", NeurIPS).

Attention is spelled out op by op instead of ``nn.MultiheadAttention`` (whose export is
one opaque fused path in some exporters): three separate ``Linear`` projections for q, k
and v, each ``Reshape``d from ``[B, T, D]`` to ``[B, T, H, Dh]`` and ``Transpose``d to
``[B, H, T, Dh]``; ``q @ kᵀ`` (a ``MatMul`` between two activations), a scalar scale,
``Softmax`` over the key axis, ``@ v``, transpose back, reshape to ``[B, T, D]`` and an
output ``Linear``. The reshape that splits ``D`` into ``H × Dh`` is what ties channels to
heads for a pruner.

The scale is spelled two ways, as in the code bases these models imitate: ``"mul"``
(timm's ViT: ``(q @ kᵀ) * Dh^-0.5``) and ``"div"`` (Hugging Face's BERT and ViT:
``(q @ kᵀ) / sqrt(Dh)``). onnxruntime's transformer optimizer only recognises the
mask-free attention when it is spelled with ``Div`` (its ``Softmax ← Div ← MatMul``
pattern; ``Mul`` is matched only together with a mask ``Add``), so both registered
models use ``"div"``; ``vit(scale="mul")`` and ``bert(scale="mul")`` build the other one.
Residual ``Add``s take the branch first, also as in Hugging Face's code (see
:class:`PreLNBlock`).

Exported with the TorchScript exporter at opset 17, ``nn.LayerNorm`` is one
``LayerNormalization`` node, ``nn.GELU`` (exact, erf) is ``Div → Erf → Add → Mul → Mul``,
and a ``Linear`` on a 3-D input is ``MatMul`` + ``Add``, never ``Gemm``; without constant
folding the weight reaches the ``MatMul`` through a ``Transpose`` node, with folding it is
a transposed initializer. The head-split ``Reshape`` targets are
``Unsqueeze → Concat`` of constants (static batch) or of ``Shape → Gather`` (dynamic
batch). The dynamo exporter (opset 20) writes ``Gelu`` as one op, keeps
``LayerNormalization``, and gives every ``Reshape`` a constant target.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.common import seeded

VIT_INPUT_SHAPE: tuple[int, int, int, int] = (1, 3, 32, 32)
"""NCHW image for the registry's ViT: 4x4 patches give an 8x8 grid of 64 tokens."""

BERT_INPUT_SHAPE: tuple[int, int, int] = (1, 16, 64)
"""``[B, T, D]`` input embeddings for the registry's BERT encoder: 16 tokens of width 64."""


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention in plain ops (Vaswani et al. 2017, §3.2.2).

    Input and output ``[B, T, dim]``; ``dim = num_heads · head_dim``. ``scale`` is
    ``"div"`` (``scores / sqrt(head_dim)``) or ``"mul"`` (``scores * head_dim ** -0.5``).
    No mask, no dropout.
    """

    def __init__(self, dim: int, num_heads: int, scale: str = "div") -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not a multiple of num_heads {num_heads}")
        if scale not in ("div", "mul"):
            raise ValueError(f"scale must be 'div' or 'mul', not {scale!r}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = scale
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, H·Dh]`` → ``[B, H, T, Dh]``."""
        batch, tokens, _ = x.shape
        return x.reshape(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q = self.split_heads(self.q(x))
        k = self.split_heads(self.k(x))
        v = self.split_heads(self.v(x))
        scores = q @ k.transpose(-2, -1)
        if self.scale == "div":
            scores = scores / math.sqrt(self.head_dim)
        else:
            scores = scores * self.head_dim**-0.5
        weights = scores.softmax(dim=-1)
        context = (weights @ v).transpose(1, 2).reshape(batch, tokens, dim)
        return self.out(context)


class FeedForward(nn.Sequential):
    """Position-wise MLP: ``Linear(dim, hidden) → GELU → Linear(hidden, dim)``.
    Input and output ``[B, T, dim]``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class PreLNBlock(nn.Module):
    """ViT encoder block (Dosovitskiy et al. 2021, Eq. 2-3): ``MSA(LN(x)) + x`` then
    ``MLP(LN(x)) + x``. Input and output ``[B, T, dim]``.

    The branch is the *first* input of the residual ``Add``, as in Hugging Face's ViT:
    onnxruntime's attention fusion looks for the attention output among the Add's inputs
    by taking the first one produced by an ``Add``, and with ``x + MSA(...)`` it picks the
    position-embedding ``Add`` in the first block and leaves that block unfused.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int = 4, scale: str = "div") -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, num_heads, scale)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_ratio * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn(self.norm1(x)) + x
        return self.mlp(self.norm2(x)) + x


class PostLNBlock(nn.Module):
    """BERT encoder layer (Vaswani et al. 2017, §3.1; Devlin et al. 2019):
    ``LN(MSA(x) + x)`` then ``LN(FFN(x) + x)`` (branch first, as in Hugging Face's BERT).
    Input and output ``[B, T, dim]``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int = 4, scale: str = "div") -> None:
        super().__init__()
        self.attn = MultiHeadSelfAttention(dim, num_heads, scale)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, mlp_ratio * dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(self.attn(x) + x)
        return self.norm2(self.ffn(x) + x)


class VisionTransformer(nn.Module):
    """ViT without a class token (mean-pooled, as in Beyer et al. 2022's "simple ViT").

    Input ``(N, 3, image, image)``. A ``patch × patch`` Conv with stride ``patch`` embeds
    the patches: ``(N, dim, g, g)`` with ``g = image / patch``, flattened and transposed
    to ``[N, T = g², dim]``; a learned position embedding ``[1, T, dim]`` is added
    (initialised N(0, 0.02²) like the paper's code). ``depth`` pre-LN blocks, a final
    ``LayerNorm``, the mean over tokens ``[N, dim]``, and a ``Linear`` head → ``(N, num_classes)``.
    """

    def __init__(
        self,
        image: int = 32,
        patch: int = 4,
        dim: int = 64,
        depth: int = 3,
        num_heads: int = 4,
        num_classes: int = 10,
        scale: str = "div",
    ) -> None:
        super().__init__()
        tokens = (image // patch) ** 2
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.blocks = nn.Sequential(*(PreLNBlock(dim, num_heads, scale=scale) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x.mean(dim=1))


class BertEncoder(nn.Module):
    """BERT-style encoder over given input embeddings (no token look-up).

    Input ``[N, T, dim]`` float embeddings → embedding ``LayerNorm`` → ``depth`` post-LN
    layers → BERT's pooler (first token → ``Linear`` → ``Tanh``) → ``Linear`` classifier
    → ``(N, num_classes)``.
    """

    def __init__(
        self, dim: int = 64, depth: int = 2, num_heads: int = 4, num_classes: int = 2, scale: str = "div"
    ) -> None:
        super().__init__()
        self.embed_norm = nn.LayerNorm(dim)
        self.layers = nn.Sequential(*(PostLNBlock(dim, num_heads, scale=scale) for _ in range(depth)))
        self.pooler = nn.Linear(dim, dim)
        self.pool_act = nn.Tanh()
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.embed_norm(x))
        return self.classifier(self.pool_act(self.pooler(x[:, 0])))


def vit(seed: int = 0, scale: str = "div") -> VisionTransformer:
    """ViT with 4x4 patches, D=64, 4 heads, 3 blocks for 32x32 images, seeded and in eval
    mode: ``(1, 3, 32, 32)`` → 64 tokens → ``(1, 10)``."""
    return seeded(lambda: VisionTransformer(scale=scale), VIT_INPUT_SHAPE, seed)


def bert(seed: int = 0, scale: str = "div") -> BertEncoder:
    """BERT-style encoder, D=64, 4 heads, 2 post-LN layers, seeded and in eval mode:
    ``(1, 16, 64)`` embeddings → ``(1, 2)``."""
    return seeded(lambda: BertEncoder(scale=scale), BERT_INPUT_SHAPE, seed)
