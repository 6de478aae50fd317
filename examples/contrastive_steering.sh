#!/usr/bin/env bash
# Contrastive steering, the first experiment to run with `hooks generate`.
#
# A steering vector is the difference of a layer's mean activation over two sets of prompts, at
# each prompt's last token (happy sentences minus sad ones, in data/steering/). The script builds
# it with `hooks extract --pool last`, then generates from the same prompts without it and with
# it, and prints the two continuations side by side.
#
# Usage: examples/contrastive_steering.sh MODEL_DIR LAYER SCALE [OUT_DIR]
#   MODEL_DIR  a Hugging Face causal LM folder with its tokenizer.json
#   LAYER      the layer to read and steer, e.g. model.layers.6 (`hooks layers --model DIR`)
#   SCALE      how far to push, e.g. 4 (negative pushes the other way)
#   OUT_DIR    where the files go (default out/steering): happy.npz, sad.npz, vector.npy,
#              plain.jsonl, steered.jsonl
# Environment: HOOKS (default `hooks`; `target/release/hooks` after `cargo build --release -p
# hooks-cli`), PYTHON (default python3, with numpy), DATA (default data/steering), NEW_TOKENS
# (default 30).
set -euo pipefail

if [ $# -lt 3 ]; then
    sed -n '9,14p' "$0" >&2
    exit 2
fi
model=$1 layer=$2 scale=$3 out=${4:-out/steering}
case $layer in
    *[*,]*) echo "error: LAYER is one layer name, like model.layers.6; \`$layer\` is a pattern or a list" >&2; exit 2 ;;
esac
case $layer in
    *[*,]*) echo "error: LAYER is one layer name, like model.layers.6; \`$layer\` is a pattern or a list" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
data=${DATA:-$here/../data/steering}
hooks=${HOOKS:-hooks}
python=${PYTHON:-python3}
new_tokens=${NEW_TOKENS:-30}
mkdir -p "$out"

# 1. The layer at each prompt's last token, for both sets.
"$hooks" extract --model "$model" --input "$data/happy.txt" --layers "$layer" --pool last --out "$out/happy.npz"
"$hooks" extract --model "$model" --input "$data/sad.txt" --layers "$layer" --pool last --out "$out/sad.npz"

# 2. The vector: mean(happy) - mean(sad), float32.
"$python" - "$out" "$layer" <<'PY'
import sys
import numpy as np
out, layer = sys.argv[1:]
happy, sad = np.load(f"{out}/happy.npz")[layer], np.load(f"{out}/sad.npz")[layer]
vector = (happy.mean(axis=0) - sad.mean(axis=0)).astype(np.float32)
np.save(f"{out}/vector.npy", vector)
print(f"vector: {vector.shape[0]} values, norm {np.linalg.norm(vector):.3f}")
PY

# 3. Generate without it and with it (at every position, prompt and new tokens).
"$hooks" generate --model "$model" --input "$data/prompts.txt" --max-new-tokens "$new_tokens" \
    --out "$out/plain.jsonl"
"$hooks" generate --model "$model" --input "$data/prompts.txt" --max-new-tokens "$new_tokens" \
    --steer "$layer=$out/vector.npy@$scale" --out "$out/steered.jsonl"

# 4. Side by side.
"$python" - "$data/prompts.txt" "$out/plain.jsonl" "$out/steered.jsonl" "$scale" <<'PY'
import json
import sys
prompts_path, plain_path, steered_path, scale = sys.argv[1:]
prompts = [line.strip() for line in open(prompts_path, encoding="utf-8") if line.strip()]
read = lambda path: [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
for prompt, plain, steered in zip(prompts, read(plain_path), read(steered_path)):
    print(f"\n{prompt}\n  plain:       {plain.get('text', plain['output_ids'])}\n  steered x{scale}: {steered.get('text', steered['output_ids'])}")
PY
