"""`cargo xtask bench compare`'s llama.cpp peer: lmsi's generate benchmark workload, run by llama.cpp.

    compare_llama_cpp.py MODEL_GGUF WORKLOAD_JSON THREADS

WORKLOAD_JSON is what lmsi's generate benchmark writes (LMSI_BENCH_PROMPT_OUT): the prompt's token
ids (shared prefix, then the question), the number of paths, the new tokens per path and the
sampling settings. Through llama-cpp-python's bindings of llama.cpp's C API, as llama.cpp's own
`batched` example does it: the prompt is decoded once in sequence 0 and its KV cells shared by
every path (`llama_memory_seq_cp` in a unified KV cache); then each step decodes one token of every
path in one batch and samples each path with its own top-k, temperature and seeded dist sampler
chain. Every path gets exactly the workload's new tokens (end of text is not a stop). Runs it
twice (the first warms up) and prints sampled tokens/s counted as lmsi counts them (all sampled
tokens over the whole call, prompt included), the second run's as
`bench-result generate.llama_cpp.f32.sampled_tokens_per_s V`, and the start of its first path's
text, to show that it is an answer and not noise.
"""

import ctypes
import json
import sys
import time

import llama_cpp as L


@L.llama_log_callback
def quiet(level, text, user_data):
    """llama.cpp's log (every tensor loaded, every buffer made) goes nowhere."""


def main():
    gguf, workload_path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(workload_path) as f:
        w = json.load(f)
    prompt = w["prefix"] + w["question"]
    paths, new_tokens = w["paths"], w["new_tokens"]

    L.llama_log_set(quiet, None)
    L.llama_backend_init()
    model = L.llama_model_load_from_file(gguf.encode(), L.llama_model_default_params())
    if not model:
        sys.exit(f"llama.cpp could not load {gguf}")
    params = L.llama_context_default_params()
    params.n_ctx = len(prompt) + paths * new_tokens + 256
    params.n_batch = params.n_ubatch = max(len(prompt), paths)
    params.n_seq_max = paths
    params.n_threads = params.n_threads_batch = threads
    params.kv_unified = True
    ctx = L.llama_init_from_model(model, params)
    if not ctx:
        sys.exit("llama.cpp could not make a context")
    batch = L.llama_batch_init(max(len(prompt), paths), 0, paths)

    print(f"llama.cpp {L.__version__}: {gguf}, {threads} threads, prompt {len(prompt)} tokens, "
          f"{paths} paths x {new_tokens} new tokens")
    rate, first_path = None, []
    for run in (1, 2):
        seconds, first_path = generate(ctx, batch, prompt, paths, new_tokens, w)
        rate = paths * new_tokens / seconds
        print(f"run {run}: sampled {rate:.1f} tokens/s, {seconds:.1f} s in all")
    print(f"bench-result generate.llama_cpp.f32.sampled_tokens_per_s {rate}")
    print(f"first path: {text(model, first_path)[:160]!r}")
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    L.llama_model_free(model)


def fill(batch, entries, logits):
    """Puts `entries`, (token, position, sequence) triples, in `batch`; `logits(i)` says whether
    the i-th gets its logits computed."""
    batch.n_tokens = len(entries)
    for i, (token, pos, seq) in enumerate(entries):
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = logits(i)


def generate(ctx, batch, prompt, paths, new_tokens, w):
    """One run of the workload; returns its seconds and the first path's tokens."""
    memory = L.llama_get_memory(ctx)
    L.llama_memory_clear(memory, True)
    samplers = []
    for path in range(paths):
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(w["top_k"]))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(w["top_p"], 1))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(w["temperature"]))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(path))
        samplers.append(chain)

    start = time.perf_counter()
    last = len(prompt) - 1
    fill(batch, [(token, pos, 0) for pos, token in enumerate(prompt)], lambda i: i == last)
    check(L.llama_decode(ctx, batch))
    for path in range(1, paths):
        L.llama_memory_seq_cp(memory, 0, path, -1, -1)
    tokens = [L.llama_sampler_sample(s, ctx, last) for s in samplers]
    first_path = [tokens[0]]
    for step in range(1, new_tokens):
        pos = len(prompt) + step - 1
        fill(batch, [(token, pos, path) for path, token in enumerate(tokens)], lambda i: True)
        check(L.llama_decode(ctx, batch))
        tokens = [L.llama_sampler_sample(s, ctx, i) for i, s in enumerate(samplers)]
        first_path.append(tokens[0])
    seconds = time.perf_counter() - start

    for s in samplers:
        L.llama_sampler_free(s)
    return seconds, first_path


def text(model, tokens):
    vocab = L.llama_model_get_vocab(model)
    buf = ctypes.create_string_buffer(256)
    pieces = []
    for token in tokens:
        n = L.llama_token_to_piece(vocab, token, buf, len(buf), 0, False)
        pieces.append(buf.raw[: max(n, 0)])
    return b"".join(pieces).decode("utf-8", errors="replace")


def check(status):
    if status != 0:
        sys.exit(f"llama_decode failed ({status})")


if __name__ == "__main__":
    main()
