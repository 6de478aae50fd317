"""Writes what a user feeds `hooks extract` after tokenizing in Python: one JSON object per line
with `input_ids`, `token_type_ids` and `attention_mask` from the model's own tokenizer, padded to
the longest line (`padding=True`) and truncated at sentence-transformers' `max_seq_length`, saved
with a UTF-8 byte-order mark as Windows tools and some editors save it.

Usage: tokenized_jsonl.py MODEL_DIR INPUT OUT_JSONL
"""
import json
import sys

from transformers import AutoTokenizer

model_dir, input_path, out = sys.argv[1:4]
with open(input_path, encoding="utf-8") as f:
    lines = [line.rstrip("\n") for line in f if line.strip()]
with open(f"{model_dir}/sentence_bert_config.json", encoding="utf-8") as f:
    max_length = json.load(f)["max_seq_length"]
batch = AutoTokenizer.from_pretrained(model_dir)(lines, padding=True, truncation=True, max_length=max_length)
assert set(batch.keys()) == {"input_ids", "token_type_ids", "attention_mask"}, batch.keys()
assert any(0 in mask for mask in batch["attention_mask"]), "the batch should need padding"
with open(out, "w", encoding="utf-8-sig") as f:
    for i in range(len(lines)):
        f.write(json.dumps({key: batch[key][i] for key in batch}) + "\n")
