"""`cargo xtask bench compare`'s PyTorch peer: lmsi's train benchmark workload, run by PyTorch.

    compare_torch.py MODEL_DIR THREADS

The workload of lmsi's train benchmark (benches/benches/train.rs) on the CPU in f32: batches of 8
sequences of 256 random tokens, the loss on every token after the first, forward, backward,
gradient clipping at norm 1 and an AdamW step (lr 1e-5), 2 warm-up steps then 3 timed. The model is
transformers' Llama on the same Hugging Face directory, in training mode, with its default
attention. Prints tokens/s (8 x 255 loss tokens per step over the mean timed step) as
`bench-result train.smollm2.torch.f32.tokens_per_s V`.
"""

import sys
import time

import torch
import transformers

BATCH, SEQ_LEN = 8, 256


def main():
    model_dir, threads = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(threads)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    generator = torch.Generator().manual_seed(7)
    batch = torch.randint(0, model.config.vocab_size, (BATCH, SEQ_LEN), generator=generator)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    params = sum(p.numel() for p in model.parameters())
    print(f"PyTorch {torch.__version__}, transformers {transformers.__version__}: "
          f"{params / 1e6:.1f}M parameters, {threads} threads, batch {BATCH} x {SEQ_LEN} tokens")
    times = []
    for step in range(1, 6):
        start = time.perf_counter()
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step > 2:
            times.append(time.perf_counter() - start)
    seconds = sum(times) / len(times)
    tokens = BATCH * (SEQ_LEN - 1)
    print(f"{seconds:.2f} s per step, {tokens / seconds:.0f} tokens/s")
    print(f"bench-result train.smollm2.torch.f32.tokens_per_s {tokens / seconds}")


if __name__ == "__main__":
    main()
