"""The three attention forms of NFA-ViT, run on the weights of a transformers `SegformerAttention`.

MiT attention reduces keys and values spatially: a stage with reduction ratio r turns the H x W query grid
into an (H/r) x (W/r) key grid. All tensors here are [batch, heads, tokens, head_dim], tokens in row-major
order. A noise-guided mask is a bool tensor [batch, heads, queries, keys] with True = the query may attend
to the key.

- `dense_attention`: ordinary MiT attention (noise branch).
- `attention_with_least_attended_mask`: ordinary attention that also returns, for each query, its k
  least-attended keys as a mask (last block of each noise-branch stage). The mask is detached.
- `fixed_sparse_attention`: a query attends only to keys of its own (row mod g, column mod g) group, its
  row and column measured on the key grid (image branch, all blocks but the last of a stage).
- `noise_guided_attention`: attention restricted to the keys a noise-guided mask allows (last block of
  each image-branch stage).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.models.segformer.modeling_segformer import SegformerAttention


def project(attention: SegformerAttention, hidden: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
    """Return queries, keys, values and the key grid's height and width for hidden states [B, H*W, C]."""
    batch, tokens, _ = hidden.shape
    heads, head_dim = attention.num_attention_heads, attention.head_dim
    query = attention.q_proj(hidden).view(batch, tokens, heads, head_dim).transpose(1, 2)

    key_height, key_width = height, width
    reduced = hidden
    ratio = attention.sequence_reduction_ratio
    if ratio > 1:
        reduced = attention.sequence_reduction(hidden, height, width)
        key_height, key_width = height // ratio, width // ratio
    key = attention.k_proj(reduced).view(batch, -1, heads, head_dim).transpose(1, 2)
    value = attention.v_proj(reduced).view(batch, -1, heads, head_dim).transpose(1, 2)
    return query, key, value, key_height, key_width


def merge_heads(attention: SegformerAttention, context: torch.Tensor) -> torch.Tensor:
    """Project the attention output [B, heads, N, head_dim] back to hidden states [B, N, C]."""
    batch, _, tokens, _ = context.shape
    return attention.o_proj(context.transpose(1, 2).reshape(batch, tokens, -1))


def _dropout(attention: SegformerAttention) -> float:
    return attention.attention_dropout if attention.training else 0.0


def dense_attention(attention: SegformerAttention, hidden: torch.Tensor, height: int, width: int) -> torch.Tensor:
    query, key, value, _, _ = project(attention, hidden, height, width)
    context = F.scaled_dot_product_attention(query, key, value, dropout_p=_dropout(attention), scale=attention.scaling)
    return merge_heads(attention, context)


def attention_with_least_attended_mask(
    attention: SegformerAttention, hidden: torch.Tensor, height: int, width: int, topk_ratio: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ordinary attention and return its output and the noise-guided mask of the k least-attended keys.

    k = max(1, int(topk_ratio * number of keys)). The attention probabilities are computed in float32 so
    that bf16 rounding does not create ties among the least-attended keys.
    """
    query, key, value, _, _ = project(attention, hidden, height, width)
    scores = torch.matmul(query.float(), key.float().transpose(-2, -1)) * attention.scaling
    probabilities = scores.softmax(dim=-1)

    count = max(1, int(topk_ratio * key.shape[-2]))
    least_attended = probabilities.topk(count, dim=-1, largest=False).indices
    mask = torch.zeros(probabilities.shape, dtype=torch.bool, device=probabilities.device)
    mask.scatter_(-1, least_attended, True)

    probabilities = F.dropout(probabilities, p=_dropout(attention), training=attention.training)
    context = torch.matmul(probabilities.to(value.dtype), value)
    return merge_heads(attention, context), mask.detach()


def noise_guided_attention(attention: SegformerAttention, hidden: torch.Tensor, height: int, width: int, mask: torch.Tensor) -> torch.Tensor:
    query, key, value, _, _ = project(attention, hidden, height, width)
    if mask.shape[-2:] != (query.shape[-2], key.shape[-2]):
        raise ValueError(f"noise-guided mask of shape {tuple(mask.shape)} does not fit {query.shape[-2]} queries and {key.shape[-2]} keys")
    context = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=_dropout(attention), scale=attention.scaling)
    return merge_heads(attention, context)


def fixed_sparse_attention(attention: SegformerAttention, hidden: torch.Tensor, height: int, width: int, groups: int) -> torch.Tensor:
    """Run attention in which each query attends only to keys of its own (row mod groups, column mod groups) group.

    A query's row and column are those of the key cell it falls in (query row // reduction ratio). When
    the grids split evenly into groups, the tokens are regrouped and each group runs as its own dense
    attention, which costs 1/groups**2 of the full attention. Otherwise a [queries, keys] mask is used.
    """
    query, key, value, key_height, key_width = project(attention, hidden, height, width)
    ratio = attention.sequence_reduction_ratio
    if height % (groups * ratio) == 0 and width % (groups * ratio) == 0:
        grouped_query = _group_queries(query, height, width, ratio, groups)
        grouped_key = _group_keys(key, key_height, key_width, groups)
        grouped_value = _group_keys(value, key_height, key_width, groups)
        context = F.scaled_dot_product_attention(grouped_query, grouped_key, grouped_value, dropout_p=_dropout(attention), scale=attention.scaling)
        context = _ungroup_queries(context, query.shape, height, width, ratio, groups)
    else:
        mask = fixed_sparse_mask(height, width, key_height, key_width, ratio, groups, query.device)
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=_dropout(attention), scale=attention.scaling)
    return merge_heads(attention, context)


def fixed_sparse_mask(height: int, width: int, key_height: int, key_width: int, ratio: int, groups: int, device: torch.device | None = None) -> torch.Tensor:
    """Return the bool [height*width, key_height*key_width] mask of fixed sparse attention (True = attend)."""
    query_rows = (torch.arange(height, device=device) // ratio).clamp(max=key_height - 1)
    query_columns = (torch.arange(width, device=device) // ratio).clamp(max=key_width - 1)
    query_group = ((query_rows[:, None] % groups) * groups + query_columns[None, :] % groups).flatten()

    key_rows = torch.arange(key_height, device=device)
    key_columns = torch.arange(key_width, device=device)
    key_group = ((key_rows[:, None] % groups) * groups + key_columns[None, :] % groups).flatten()
    return query_group[:, None] == key_group[None, :]


def _group_queries(query: torch.Tensor, height: int, width: int, ratio: int, groups: int) -> torch.Tensor:
    # A query row is (block * groups + group) * ratio + offset; sort rows and columns by group.
    batch, heads, _, head_dim = query.shape
    blocks_down, blocks_across = height // (groups * ratio), width // (groups * ratio)
    query = query.reshape(batch, heads, blocks_down, groups, ratio, blocks_across, groups, ratio, head_dim)
    query = query.permute(0, 1, 3, 6, 2, 4, 5, 7, 8)
    return query.reshape(batch, heads * groups * groups, -1, head_dim)


def _ungroup_queries(context: torch.Tensor, shape: torch.Size, height: int, width: int, ratio: int, groups: int) -> torch.Tensor:
    batch, heads, _, head_dim = shape
    blocks_down, blocks_across = height // (groups * ratio), width // (groups * ratio)
    context = context.reshape(batch, heads, groups, groups, blocks_down, ratio, blocks_across, ratio, head_dim)
    context = context.permute(0, 1, 4, 2, 5, 6, 3, 7, 8)
    return context.reshape(shape)


def _group_keys(key: torch.Tensor, key_height: int, key_width: int, groups: int) -> torch.Tensor:
    # A key row is block * groups + group.
    batch, heads, _, head_dim = key.shape
    key = key.reshape(batch, heads, key_height // groups, groups, key_width // groups, groups, head_dim)
    key = key.permute(0, 1, 3, 5, 2, 4, 6)
    return key.reshape(batch, heads * groups * groups, -1, head_dim)
