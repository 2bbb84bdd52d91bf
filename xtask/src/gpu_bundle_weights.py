"""Makes a Llama model directory with seeded random weights, for the GPU bundle's benchmarks.

    make_weights.py SRC OUT

SRC holds a model's small files (config.json, tokenizer.json, tokenizer_config.json, ...) and no
weights; OUT gets copies of them and model.safetensors: every tensor of the configuration under its
Hugging Face name, f32, norms 1 and everything else normal with standard deviation 0.02
(`initializer_range`), drawn from a fixed seed. With tied embeddings there is no lm_head.

The benchmarks that read it sample a fixed number of tokens and ignore EOS, so their throughput
does not depend on the values. Needs numpy, or torch with safetensors; without either it prints why
it skips and exits 0 without writing model.safetensors.
"""

import json
import math
import os
import shutil
import struct
import sys


def shapes(config):
    """(name, shape) of every tensor of a Llama model, in Hugging Face's names."""
    for flag in ("attention_bias", "mlp_bias"):
        if config.get(flag):
            raise SystemExit(f"make_weights.py: {flag} is not supported")
    d = config["hidden_size"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    head_dim = config.get("head_dim", d // heads)
    inter = config["intermediate_size"]
    vocab = config["vocab_size"]
    out = [("model.embed_tokens.weight", [vocab, d])]
    for i in range(config["num_hidden_layers"]):
        layer = f"model.layers.{i}."
        out += [
            (layer + "input_layernorm.weight", [d]),
            (layer + "self_attn.q_proj.weight", [heads * head_dim, d]),
            (layer + "self_attn.k_proj.weight", [kv_heads * head_dim, d]),
            (layer + "self_attn.v_proj.weight", [kv_heads * head_dim, d]),
            (layer + "self_attn.o_proj.weight", [d, heads * head_dim]),
            (layer + "post_attention_layernorm.weight", [d]),
            (layer + "mlp.gate_proj.weight", [inter, d]),
            (layer + "mlp.up_proj.weight", [inter, d]),
            (layer + "mlp.down_proj.weight", [d, inter]),
        ]
    out.append(("model.norm.weight", [d]))
    if not config.get("tie_word_embeddings", False):
        out.append(("lm_head.weight", [vocab, d]))
    return out


def write_numpy(tensors, std, path):
    """Writes the safetensors file itself: a JSON header, then each tensor's little-endian bytes."""
    import numpy as np

    rng = np.random.default_rng(0)
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in tensors:
        size = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape in tensors:
            if name.endswith("norm.weight"):
                values = np.ones(shape, dtype="<f4")
            else:
                values = (rng.standard_normal(shape, dtype=np.float32) * std).astype("<f4")
            f.write(values.tobytes())


def write_torch(tensors, std, path):
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    values = {}
    for name, shape in tensors:
        if name.endswith("norm.weight"):
            values[name] = torch.ones(shape, dtype=torch.float32)
        else:
            values[name] = torch.randn(shape, dtype=torch.float32) * std
    save_file(values, path, metadata={"format": "pt"})


def main():
    src, out = sys.argv[1], sys.argv[2]
    with open(os.path.join(src, "config.json")) as f:
        config = json.load(f)
    tensors = shapes(config)
    std = config.get("initializer_range", 0.02)
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(src):
        shutil.copy(os.path.join(src, name), os.path.join(out, name))
    path = os.path.join(out, "model.safetensors")
    partial = path + ".partial"
    for how, write in (("numpy", write_numpy), ("torch", write_torch)):
        try:
            write(tensors, std, partial)
        except ImportError as e:
            print(f"{how}: {e}")
            continue
        os.replace(partial, path)
        params = sum(math.prod(shape) for _, shape in tensors)
        size = os.path.getsize(path)
        print(
            f"wrote {path} with {how}: {len(tensors)} tensors, {params / 1e6:.1f}M parameters, "
            f"{size / 1e6:.0f} MB"
        )
        return
    print(f"SmolLM2 weights skipped: {sys.executable} has neither numpy nor torch and safetensors")


if __name__ == "__main__":
    main()
