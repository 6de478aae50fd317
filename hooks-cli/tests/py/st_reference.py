"""sentence-transformers' embedding of each line of INPUT, saved to OUT.npz: before
normalisation (Transformer -> Pooling), or with `full`, what `SentenceTransformer.encode` gives
(the whole pipeline, Normalize included).

Usage: st_reference.py MODEL_DIR INPUT OUT [full]
"""
import sys

import numpy as np
from sentence_transformers import SentenceTransformer

model_dir, input_path, out = sys.argv[1:4]
whole_pipeline = sys.argv[4:5] == ["full"]
full = SentenceTransformer(model_dir, device="cpu")
# all-MiniLM-L6-v2 is Transformer -> Pooling(mean) -> Normalize; keep the first two.
names = [type(m).__name__ for m in full]
assert names[:2] == ["Transformer", "Pooling"] and full[1].get_config_dict()["pooling_mode"] == "mean", names
model = full if whole_pipeline else SentenceTransformer(modules=[full[0], full[1]], device="cpu")
with open(input_path, encoding="utf-8") as f:
    lines = [line.rstrip("\n") for line in f if line.strip()]
embeddings = model.encode(lines, batch_size=8, convert_to_numpy=True, normalize_embeddings=False)
np.savez(out, embeddings=embeddings.astype(np.float32))
