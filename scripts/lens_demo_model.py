"""Trains a tiny Llama on the bundled sentences, so that the logit lens has something to show.

    lens_demo_model.py OUT_DIR

No model hub is reachable here, so the README's logit-lens figure comes from a model made on the
spot: a 4-block `LlamaForCausalLM` (hidden 128, untied head) over all-MiniLM-L6-v2's WordPiece
vocabulary, trained for next-token prediction on `data/sentences.txt` (about a minute on 2 CPU
cores, seeded). It learns those sentences well, so its later layers predict the next word with
confidence and its earlier ones do not: what the lens shows of real models, in miniature. The
folder gets `config.json`, `model.safetensors` and MiniLM's `tokenizer.json`, so `hooks lens`
reads text and labels the figure with words.
"""

import os
import shutil
import subprocess
import sys

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(out_dir):
    torch.manual_seed(0)
    minilm = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts/verify_minilm.py")], check=True, capture_output=True, text=True
    ).stdout.strip()
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    with open(os.path.join(ROOT, "data/sentences.txt")) as f:
        sentences = [line.strip() for line in f if line.strip()]
    batch = tokenizer(sentences, padding=True, truncation=True, max_length=32, return_tensors="pt")
    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    for step in range(200):
        idx = torch.randint(0, len(sentences), (16,))
        loss = model(
            input_ids=batch["input_ids"][idx], attention_mask=batch["attention_mask"][idx], labels=labels[idx]
        ).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 49:
            print(f"step {step + 1}: loss {loss.item():.3f}", file=sys.stderr)
    model.save_pretrained(out_dir, safe_serialization=True)
    shutil.copy(os.path.join(minilm, "tokenizer.json"), out_dir)


if __name__ == "__main__":
    main(*sys.argv[1:])
