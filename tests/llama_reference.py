"""An independent float32 reference for a llama GGUF: transformers' LlamaForCausalLM (torch, CPU) built from the
raw tensors (mx.load + mx.dequantize), with llama.cpp's Q/K permutation undone for HF's rotate-half RoPE.
Used by tests/test_mlx_backend.py and bench/bench_mlx_decode.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np

NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}


def unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (interleaved RoPE pairs -> HF's rotate-half halves)."""
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def torch_llama(path: Path):
    """transformers' LlamaForCausalLM (float32, eval mode) holding the GGUF file's weights."""
    import mlx.core as mx
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tensors, meta = mx.load(str(path), return_metadata=True)

    def m(key):
        return meta[f"llama.{key}"].item()

    heads, kv_heads = m("attention.head_count"), m("attention.head_count_kv")
    config = LlamaConfig(
        vocab_size=len(meta["tokenizer.ggml.tokens"]),
        hidden_size=m("embedding_length"),
        intermediate_size=m("feed_forward_length"),
        num_hidden_layers=m("block_count"),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        rms_norm_eps=m("attention.layer_norm_rms_epsilon"),
        rope_theta=m("rope.freq_base"),
        max_position_embeddings=m("context_length"),
        tie_word_embeddings="output.weight" not in tensors,
    )
    state = {}
    for name, w in tensors.items():
        if not name.endswith(".weight"):
            continue
        base = name[: -len(".weight")]
        if base + ".scales" in tensors:
            scales = tensors[base + ".scales"]
            bits = w.shape[1] * 32 // (scales.shape[1] * 32)  # GGUF blocks are 32 weights
            w = mx.dequantize(w, scales, tensors[base + ".biases"], group_size=32, bits=bits)
        w = np.array(w.astype(mx.float32))
        parts = base.split(".")
        if parts[0] == "blk":
            if parts[2] in ("attn_q", "attn_k"):
                w = unpermute(w, heads if parts[2] == "attn_q" else kv_heads)
            key = f"model.layers.{parts[1]}.{NAMES[parts[2]]}.weight"
        else:
            key = {
                "token_embd": "model.embed_tokens.weight",
                "output_norm": "model.norm.weight",
                "output": "lm_head.weight",
            }[base]
        state[key] = torch.from_numpy(w)
    model = LlamaForCausalLM(config).eval()
    model.load_state_dict(state, strict=False)
    model.tie_weights()
    return model
