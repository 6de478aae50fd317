"""transformers' side of the `hooks generate` tests. Steps, separated by `+`:

    build-tokenized DIR      a random Llama over all-MiniLM-L6-v2's WordPiece vocabulary, with its
                             tokenizer.json (so `text` can be decoded), saved to DIR
    compare MODEL PROMPTS.jsonl OURS.jsonl MAX_NEW [ACTS.npz LAYERS] [STEER LAYER VEC.npy SCALE MODE]
                             for each prompt alone: `generate(do_sample=False)` with the KV cache,
                             with a forward hook on LAYER adding SCALE x VEC at every position
                             (MODE `all`), at positions at or past the prompt's length (MODE
                             `generated`) or at positions MODE (`-1:`, `1,3`), then one forward over the final sequence with the same
                             hook and a capture hook on each of LAYERS. Prints one JSON line: ids
                             and text equal or not, the largest difference of each captured layer
                             with ACTS.npz
    chat-templates DIR       gives DIR (a tokenized folder) a chat template in `tokenizer_config.json`
                             and copies DIR to DIR-jinja with another one in `chat_template.jinja`
    chat-ids DIR CONVERSATIONS.jsonl
                             prints one JSON line: the ids of `apply_chat_template(messages,
                             add_generation_prompt=True, tokenize=True)` for each line, and the
                             text (`tokenize=False`)
    contrast MODEL A.txt B.txt LAYER OUT.npy
                             the mean over A's lines of LAYER's output at each line's last
                             token, less the same over B's (each line tokenized and run alone,
                             a forward hook keeping the output): a contrastive steering vector
    sample MODEL PROMPTS.jsonl OURS.jsonl T TOP_P
                             the first token of each line of OURS (the same prompt on every
                             line), against softmax(logits / T) of that prompt: a chi-square
                             statistic with its 0.1% critical value; and with TOP_P < 1 whether
                             every token of every line lies in the nucleus of its own prefix
"""

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def build_tokenized(out_dir):
    torch.manual_seed(0)
    minilm = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts/verify_minilm.py")], check=True, capture_output=True, text=True
    ).stdout.strip()
    config = LlamaConfig(
        vocab_size=30522,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        eos_token_id=None,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    model.save_pretrained(out_dir, safe_serialization=True)
    shutil.copy(os.path.join(minilm, "tokenizer.json"), out_dir)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def in_positions(p, prompt_len, spec):
    """Whether sequence position p is in `spec` (Python indexes and slices over the prompt then the
    generated tokens, negative ones counting from the prompt's end), as `hooks generate` documents."""
    resolve = lambda i: i if i >= 0 else prompt_len + i
    for entry in spec.split(","):
        if ":" in entry:
            start, stop = (int(e) if e.strip() else None for e in entry.split(":"))
            lo = 0 if start is None else max(0, resolve(start))
            if p >= lo and (stop is None or p < resolve(stop)):
                return True
        elif p == resolve(int(entry)):
            return True
    return False


def steering_hook(vector, scale, mode, prompt_len):
    """MODE `all`, `generated` (positions at or past the prompt's length) or a positions spec."""
    seen = [0]

    def hook(_module, _args, output):
        tensor = output[0] if isinstance(output, tuple) else output
        columns = range(seen[0], seen[0] + tensor.shape[1])
        seen[0] += tensor.shape[1]
        if mode == "all":
            at = [True for _ in columns]
        elif mode == "generated":
            at = [p >= prompt_len for p in columns]
        else:
            at = [in_positions(p, prompt_len, mode) for p in columns]
        changed = tensor.clone()
        changed[:, torch.tensor(at)] += scale * vector
        return (changed,) + tuple(output[1:]) if isinstance(output, tuple) else changed

    return hook


def compare(model_dir, prompts_path, ours_path, max_new, *rest):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    acts_path, layers, steer = None, [], None
    rest = list(rest)
    if rest and rest[0] != "steer":
        acts_path, layers, rest = rest[0], rest[1].split(","), rest[2:]
    if rest:
        _, layer, vec_path, scale, mode = rest
        steer = (layer, torch.tensor(np.load(vec_path)), float(scale), mode)
    tokenizer = None
    if os.path.exists(os.path.join(model_dir, "tokenizer.json")):
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=os.path.join(model_dir, "tokenizer.json"))
    ours = read_jsonl(ours_path)
    acts = np.load(acts_path) if acts_path else None
    report = {"ids_equal": True, "text_equal": True, "has_text": "text" in ours[0], "max_diff": {}, "outputs": []}
    prompts = read_jsonl(prompts_path)
    for i, (prompt, line) in enumerate(zip(prompts, ours)):
        ids = prompt["input_ids"] if "input_ids" in prompt else tokenizer(prompt["text"])["input_ids"]
        handles = []
        if steer:
            layer, vector, scale, mode = steer
            handles.append(model.get_submodule(layer).register_forward_hook(steering_hook(vector, scale, mode, len(ids))))
        with torch.no_grad():
            generated = model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                do_sample=False,
                max_new_tokens=int(max_new),
            )
        for handle in handles:
            handle.remove()
        output = generated[0, len(ids) :].tolist()
        report["outputs"].append(output)
        if line["prompt_ids"] != ids or line["output_ids"] != output:
            report["ids_equal"] = False
        if tokenizer is not None and line.get("text") != tokenizer.decode(output, skip_special_tokens=True):
            report["text_equal"] = False
        if acts is not None:
            captured = {}
            handles = []
            if steer:
                layer, vector, scale, mode = steer
                handles.append(
                    model.get_submodule(layer).register_forward_hook(steering_hook(vector, scale, mode, len(ids)))
                )
            for name in layers:

                def keep(_m, _a, out, name=name):
                    captured[name] = (out[0] if isinstance(out, tuple) else out)[0]

                handles.append(model.get_submodule(name).register_forward_hook(keep))
            sequence = ids + output
            with torch.no_grad():
                model(input_ids=torch.tensor([sequence]))
            for handle in handles:
                handle.remove()
            n = len(sequence)
            for name in layers:
                diff = float(np.abs(acts[name][i, :n] - captured[name].numpy()).max())
                past = float(np.abs(acts[name][i, n:]).max()) if acts[name].shape[1] > n else 0.0
                report["max_diff"][name] = max(report["max_diff"].get(name, 0.0), diff, past)
            if acts["input_ids"][i, :n].tolist() != sequence or acts["attention_mask"][i].sum() != n:
                report["ids_equal"] = False
    print(json.dumps(report))


def contrast(model_dir, a_path, b_path, layer, out):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=os.path.join(model_dir, "tokenizer.json"))
    kept = []
    model.get_submodule(layer).register_forward_hook(
        lambda _m, _a, out: kept.append((out[0] if isinstance(out, tuple) else out)[0, -1].detach().double())
    )

    def mean_last(path):
        kept.clear()
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    with torch.no_grad():
                        model(input_ids=torch.tensor([tokenizer(line.strip())["input_ids"]]))
        return torch.stack(kept).mean(0)

    np.save(out, (mean_last(a_path) - mean_last(b_path)).float().numpy())


def chi_square_critical(df, z=3.0902):
    # Wilson-Hilferty: the 99.9th percentile of chi-square with df degrees of freedom.
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def sample(model_dir, prompts_path, ours_path, temperature, top_p):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    prompt = read_jsonl(prompts_path)[0]["input_ids"]
    ours = read_jsonl(ours_path)
    t, top_p = float(temperature), float(top_p)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt])).logits[0, -1].double()
    probs = torch.softmax(logits / t, -1).numpy()
    counts = np.bincount([line["output_ids"][0] for line in ours], minlength=len(probs)).astype(float)
    n = counts.sum()
    expected = probs * n
    big = expected >= 5
    observed = np.append(counts[big], counts[~big].sum())
    wanted = np.append(expected[big], expected[~big].sum())
    if wanted[-1] < 5:
        observed, wanted = observed[:-2].tolist() + [observed[-2:].sum()], wanted[:-2].tolist() + [wanted[-2:].sum()]
    observed, wanted = np.array(observed), np.array(wanted)
    statistic = float(((observed - wanted) ** 2 / wanted).sum())
    critical = chi_square_critical(len(wanted) - 1) if len(wanted) > 1 else 1e300
    report = {"chi2": statistic, "critical": critical, "bins": len(wanted), "outside_nucleus": 0}
    if top_p < 1:
        for line in ours:
            sequence = prompt + line["output_ids"]
            with torch.no_grad():
                all_logits = model(input_ids=torch.tensor([sequence])).logits[0].double()
            for k, token in enumerate(line["output_ids"]):
                p = torch.softmax(all_logits[len(prompt) - 1 + k] / t, -1)
                sorted_p, order = torch.sort(p, descending=True)
                cumulative = torch.cumsum(sorted_p, 0)
                # The smallest prefix whose mass reaches top_p (1e-9 of slack for rounding).
                size = int((cumulative < top_p - 1e-9).sum()) + 1
                if token not in order[:size].tolist():
                    report["outside_nucleus"] += 1
    print(json.dumps(report))


# Llama-2-like, in tokenizer_config.json: special tokens, `trim`, a Python string method,
# `raise_exception`.
INST_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}<<SYS>>\n{{ message['content'] | trim }}\n<</SYS>>\n"
    "{% elif message['role'] == 'user' %}[INST] {{ message['content'].strip() }} [/INST]\n"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] }}{{ eos_token }}\n"
    "{% else %}{{ raise_exception('Conversation roles must be system, user or assistant') }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

# ChatML, in chat_template.jinja: block tags on their own lines (trim_blocks and lstrip_blocks),
# whitespace control, `loop.first`.
CHATML_TEMPLATE = """{% for message in messages %}
    {% if loop.first and message['role'] != 'system' %}
<|im_start|>system
You are helpful.<|im_end|>
    {% endif %}
<|im_start|>{{ message['role'] }}
{{ message['content'] }}<|im_end|>
{% endfor %}
{% if add_generation_prompt %}
<|im_start|>assistant
{% endif %}
"""


def chat_templates(directory):
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "[CLS]",
                "eos_token": {"__type": "AddedToken", "content": "[SEP]", "special": True},
                "chat_template": INST_TEMPLATE,
            },
            f,
        )
    jinja = directory + "-jinja"
    shutil.copytree(directory, jinja)
    with open(os.path.join(jinja, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "[CLS]", "eos_token": "[SEP]"}, f)
    with open(os.path.join(jinja, "chat_template.jinja"), "w") as f:
        f.write(CHATML_TEMPLATE)


def chat_ids(directory, conversations):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    result = {"ids": [], "text": []}
    for line in read_jsonl(conversations):
        ids = tokenizer.apply_chat_template(line["messages"], add_generation_prompt=True, tokenize=True)
        if hasattr(ids, "keys"):
            ids = ids["input_ids"]
        result["ids"].append(list(ids))
        result["text"].append(
            tokenizer.apply_chat_template(line["messages"], add_generation_prompt=True, tokenize=False)
        )
    print(json.dumps(result))


STEPS = {
    "build-tokenized": build_tokenized,
    "chat-templates": chat_templates,
    "chat-ids": chat_ids,
    "compare": compare,
    "contrast": contrast,
    "sample": sample,
}


def main(argv):
    step = []
    for arg in argv + ["+"]:
        if arg == "+":
            if step:
                STEPS[step[0]](*step[1:])
            step = []
        else:
            step.append(arg)


if __name__ == "__main__":
    main(sys.argv[1:])
