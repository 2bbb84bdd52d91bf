# Runs the independent NumPy forward pass (shared/tools/realmodel/np_generate.py, unchanged) and
# prints, as JSON: the prompt's token ids, the greedy tokens it generated, and its logits at every
# prompt position (computed one token at a time through its own KV cache).
# Usage: np_reference.py NP_GENERATE_PY MODEL_DIR PROMPT NEW_TOKENS POSITIONS(comma-separated)
import contextlib, io, json, sys
import numpy as np

script, model_dir, prompt, new_tokens, positions = sys.argv[1:6]
ns = {"__name__": "np_generate"}
sys.argv = [script, model_dir, prompt, new_tokens]
with contextlib.redirect_stdout(io.StringIO()):
    exec(compile(open(script).read(), script, "exec"), ns)
prompt_ids = [int(t) for t in ns["ids"]]
wanted = [int(p) for p in positions.split(",")]
ns["K"][:] = [None] * ns["L"]
ns["V"][:] = [None] * ns["L"]
logits = {}
for pos, token in enumerate(prompt_ids[: max(wanted) + 1]):
    row = ns["step"](np.array([token]), pos)
    if pos in wanted:
        logits[str(pos)] = [float(v) for v in row]
json.dump({"prompt_ids": prompt_ids, "greedy": [int(t) for t in ns["out"]], "logits": logits}, sys.stdout)
