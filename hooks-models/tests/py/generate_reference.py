"""The transformers side of the generation tests: `generate` on each prompt alone.

    generate_reference.py MODEL_DIR PROMPTS.json MAX_NEW OUT.json [+ MODEL_DIR ...]

PROMPTS.json holds a list of id lists. For each prompt alone,
`AutoModelForCausalLM.generate(do_sample=False)` runs with no end-of-sequence id, with the KV
cache and without (`use_cache=False`); then, with the cache, with the fourth token of the first
prompt's continuation as the end-of-sequence id. OUT.json gets the new ids of each prompt:
`{"cached": [[...], ...], "uncached": [...], "eos": ID, "with_eos": [...]}`.
"""

import json
import sys

import torch
from transformers import AutoModelForCausalLM


def greedy(model, prompts, max_new, use_cache, eos_ids):
    # The folder's own end-of-sequence id (a random config's default) must not stop the run
    # unless asked.
    model.generation_config.eos_token_id = eos_ids
    model.generation_config.pad_token_id = 0
    outputs = []
    for ids in prompts:
        with torch.no_grad():
            generated = model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                do_sample=False,
                max_new_tokens=int(max_new),
                use_cache=use_cache,
            )
        outputs.append(generated[0, len(ids) :].tolist())
    return outputs


def run(model_dir, prompts_path, max_new, out):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    with open(prompts_path) as f:
        prompts = json.load(f)
    result = {
        "cached": greedy(model, prompts, max_new, True, None),
        "uncached": greedy(model, prompts, max_new, False, None),
    }
    result["eos"] = result["cached"][0][3]
    result["with_eos"] = greedy(model, prompts, max_new, True, [result["eos"]])
    with open(out, "w") as f:
        json.dump(result, f)


def main(argv):
    step = []
    for arg in argv + ["+"]:
        if arg == "+":
            if step:
                run(*step)
            step = []
        else:
            step.append(arg)


if __name__ == "__main__":
    main(sys.argv[1:])
