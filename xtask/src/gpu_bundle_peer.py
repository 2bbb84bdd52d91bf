"""The GPU bundle's peer: lmsi's generate benchmark workload with PyTorch and transformers.

    peer.py MODEL_DIR WORKLOAD_JSON

WORKLOAD_JSON is what lmsi's generate benchmark writes (LMSI_BENCH_PROMPT_OUT): the prompt's token
ids (shared prefix, then the question), the number of paths, the new tokens per path and the
sampling settings. Runs `model.generate` on the model in bf16 on the GPU, every path of exactly that
many new tokens (EOS suppressed by `min_new_tokens`), once short to warm up and twice timed, and
prints sampled tokens/s counted as lmsi counts them (all sampled tokens over the whole call,
prompt included), the last run's as `bench-result generate.torch.bf16.sampled_tokens_per_s V`.
Without torch, transformers or a CUDA device it prints why it skips and exits 0.
"""

import json
import os
import sys
import time


def main():
    model_dir, workload_path = sys.argv[1], sys.argv[2]
    try:
        import torch
        import transformers
    except Exception as e:  # noqa: BLE001 - any import failure means no peer here
        print(f"PyTorch comparison skipped: cannot import torch and transformers: {e}")
        return
    if not torch.cuda.is_available():
        print(f"PyTorch comparison skipped: torch {torch.__version__} sees no CUDA device")
        return
    if not os.path.exists(workload_path):
        print(f"PyTorch comparison skipped: no workload ({workload_path}): lmsi's benchmark did not run")
        return
    with open(workload_path) as f:
        w = json.load(f)
    prompt = w["prefix"] + w["question"]
    paths, new_tokens = w["paths"], w["new_tokens"]

    # Loaded in f32 then converted, which every transformers version does the same way.
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    model = model.to(device="cuda", dtype=torch.bfloat16).eval()
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{torch.cuda.get_device_name()}, "
        f"attention {getattr(model.config, '_attn_implementation', 'default')}, "
        f"prompt {len(prompt)} tokens, {paths} paths x {new_tokens} new tokens"
    )
    ids = torch.tensor([prompt], device="cuda")
    eos = model.config.eos_token_id
    sampling = dict(
        attention_mask=torch.ones_like(ids),
        do_sample=True,
        temperature=w["temperature"],
        top_k=w["top_k"],
        top_p=w["top_p"],
        num_return_sequences=paths,
        pad_token_id=eos[0] if isinstance(eos, list) else eos,
    )
    torch.manual_seed(0)
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=8, min_new_tokens=8, **sampling)
        for run in (1, 2):
            torch.cuda.synchronize()
            start = time.perf_counter()
            out = model.generate(
                ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **sampling
            )
            torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            sampled = out.shape[0] * (out.shape[1] - ids.shape[1])
            assert sampled == paths * new_tokens, out.shape
            print(f"run {run}: sampled {sampled / seconds:.1f} tokens/s, {seconds:.2f} s in all")
    print(f"bench-result generate.torch.bf16.sampled_tokens_per_s {sampled / seconds}")


if __name__ == "__main__":
    main()
