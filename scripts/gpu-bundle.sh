#!/usr/bin/env bash
# Builds, here, everything scripts/gpu-check.sh runs on the GPU machine (which has libtorch but no
# Rust toolchain), into target/gpu-bundle/ (64 MiB at most, the most a run can carry):
#   bin/hooks        the CLI, release
#   bin/gpu_check    hooks-cli/examples/gpu_check.rs, release
#   bin/cuda_tests   tests/cuda.rs, release
#   minilm/          all-MiniLM-L6-v2 with its weights stored as f16 (45 MB instead of 90; both
#                    devices load the same f16 values into f32, so cpu vs cuda stays a fair check)
# Run it through `make gpu-bundle`, which sets up the venv and the libtorch build environment.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/gpu-bundle
rm -rf "$out"
mkdir -p "$out/bin" "$out/minilm"

cargo build --release -p hooks-cli --bin hooks --example gpu_check
cuda_tests=$(cargo test --release -p hooks --test cuda --no-run --message-format=json \
  | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cuda" and m.get("executable"):
        print(m["executable"])')
cp target/release/hooks "$out/bin/hooks"
cp target/release/examples/gpu_check "$out/bin/gpu_check"
cp "$cuda_tests" "$out/bin/cuda_tests"
strip "$out"/bin/*

minilm=$(.venv/bin/python scripts/verify_minilm.py)
cp "$minilm/config.json" "$minilm/tokenizer.json" "$out/minilm/"
.venv/bin/python - "$minilm/model.safetensors" "$out/minilm/model.safetensors" <<'PY'
import sys
from safetensors.torch import load_file, save_file
tensors = load_file(sys.argv[1])
save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}, sys.argv[2])
PY

du -ab "$out" | sort -k2 | awk '{printf "%10.1f MiB  %s\n", $1 / 1048576, $2}'
total=$(du -sb "$out" | cut -f1)
if [ "$total" -gt $((64 * 1024 * 1024)) ]; then
  echo "error: the bundle is $((total / 1048576)) MiB; a run carries 64 MiB at most" >&2
  exit 1
fi
echo "ok: $out is $((total / 1048576)) MiB; run it with scripts/gpu-check.sh on the GPU machine"
