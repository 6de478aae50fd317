#!/usr/bin/env bash
# The GPU check, for a machine with a CUDA GPU, torch 2.11 (cu130) under /opt/torch/.venv and no
# Rust toolchain. Build the bundle here first (`make gpu-bundle`), then run from the repo root:
#   bash scripts/gpu-check.sh        # with target/gpu-bundle carried along
# Under 8 minutes in all, it runs:
#   1. the CUDA correctness tests (async copies into pinned memory == blocking copies);
#   2. MiniLM extraction on cuda vs cpu (same values within 1e-3 relative), and in bf16;
#   3. a GPT-2-small-sized random model at 32x512: forward with capture of every block off vs on,
#      and capture throughput vs libtorch's own pinned copy of the same bytes.
# Full logs go to $OUT (or /tmp/gpu-check); a short table is printed last. It changes no GPU
# setting (clocks, power, modes) and never resets the GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
bundle=target/gpu-bundle
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
[ -x "$bundle/bin/hooks" ] || { echo "error: $bundle is missing; build it with \`make gpu-bundle\` and carry it" >&2; exit 2; }

torch_lib=${TORCH_LIB:-$(ls -d /opt/torch/.venv/lib/python3*/site-packages/torch/lib 2>/dev/null | head -n 1)}
[ -n "$torch_lib" ] || torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH=$torch_lib
export HOOKS_REQUIRE_CUDA=1
{ date -u; nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; echo "libtorch: $torch_lib"; } > "$out/0-machine.txt" 2>&1

results=()
step() { # name, log, command...
  local name=$1 log=$2; shift 2
  local start=$SECONDS
  if timeout 300 "$@" > "$out/$log" 2>&1; then
    results+=("ok    $name ($((SECONDS - start)) s)")
  else
    results+=("FAIL  $name ($((SECONDS - start)) s, see $log)")
  fi
}

step "1. CUDA correctness tests" 1-cuda-tests.log "$bundle/bin/cuda_tests" --test-threads=1

layers='encoder.layer.*.output,pooler'
step "2a. MiniLM extract on cpu" 2a-cpu.log "$bundle/bin/hooks" extract --model "$bundle/minilm" --layers "$layers" --device cpu --out "$out/minilm-cpu.npz"
step "2b. MiniLM extract on cuda" 2b-cuda.log "$bundle/bin/hooks" extract --model "$bundle/minilm" --layers "$layers" --device cuda --out "$out/minilm-cuda.npz"
step "2c. cuda == cpu within 1e-3" 2c-compare.log "$bundle/bin/gpu_check" compare "$out/minilm-cpu.npz" "$out/minilm-cuda.npz" 1e-3
step "2d. MiniLM extract on cuda in bf16" 2d-bf16.log "$bundle/bin/hooks" extract --model "$bundle/minilm" --layers "$layers" --device cuda --dtype bf16 --out "$out/minilm-cuda-bf16.npz"
step "2e. bf16 written as f32, near f32" 2e-compare-bf16.log "$bundle/bin/gpu_check" compare "$out/minilm-cpu.npz" "$out/minilm-cuda-bf16.npz" 1e-1

step "3. GPT-2-small 32x512: capture cost and throughput" 3-gpt2.log "$bundle/bin/gpu_check" gpt2 32 512 10

rm -f "$out"/*.npz # large, and reproducible from the commands above
echo
echo "GPU check on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)"
printf '%s\n' "${results[@]}"
echo
grep -h -E '^(test result|compare:|gpt2 |capture throughput)' "$out"/1-cuda-tests.log "$out"/2c-compare.log "$out"/2e-compare-bf16.log "$out"/3-gpt2.log 2>/dev/null
for r in "${results[@]}"; do [[ $r == FAIL* ]] && exit 1; done
exit 0
