"""The transformers side of section 10 of `make bench`: generation as a transformers user writes
it, and the check that `hooks generate`'s tokens are the model's greedy choices.

    generate.py run --model DIR --input IDS.jsonl --batch-size N --threads N --max-new-tokens M --out FILE
        AutoModelForCausalLM.from_pretrained(DIR) (its default attention, sdpa); the lines of
        IDS.jsonl (prompts of equal length: no padding) in batches of N, in input order, each
        through `model.generate(ids, attention_mask, do_sample=False, max_new_tokens=M)` under
        `no_grad` (the KV cache on, transformers' default); one JSON line per prompt,
        `{"prompt_ids": [...], "output_ids": [...]}`, written and fsynced.

    generate.py check --model DIR --ours OUT.jsonl [--theirs FILE]
        One forward of transformers over each final sequence of OURS (prompt + output): every
        output token must be the arg-max of the logits that predict it, or within 1e-4 of it in
        log-probability (a tie, which float rounding may break either way); otherwise exit 1 with
        the reason. With --theirs, also counts the output tokens both files hold alike. Prints one
        JSON line.

The caller times the whole `run` process, imports and model load included, as `hooks generate` is
timed.
"""

import argparse
import json
import os
import sys

import torch

# Two log-probabilities this close are a tie.
TIE = 1e-4


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def run(args):
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    prompts = [row["input_ids"] for row in read_jsonl(args.input)]
    if len({len(p) for p in prompts}) != 1:
        sys.exit("generate.py run takes prompts of one length (no padding)")
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    lines = []
    for start in range(0, len(prompts), args.batch_size):
        batch = torch.tensor(prompts[start : start + args.batch_size])
        with torch.no_grad():
            out = model.generate(
                batch,
                attention_mask=torch.ones_like(batch),
                do_sample=False,
                max_new_tokens=args.max_new_tokens,
                pad_token_id=0,
            )
        for prompt, row in zip(batch.tolist(), out.tolist()):
            lines.append(json.dumps({"prompt_ids": prompt, "output_ids": row[len(prompt) :]}))
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
        f.flush()
        os.fsync(f.fileno())


def check(args):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    ours = read_jsonl(args.ours)
    tokens, argmax, largest_gap = 0, 0, 0.0
    for row in ours:
        prompt, output = row["prompt_ids"], row["output_ids"]
        sequence = torch.tensor([prompt + output])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=sequence).logits[0].float(), dim=-1)
        for step, token in enumerate(output):
            row_lp = logprobs[len(prompt) - 1 + step]
            gap = float(row_lp.max() - row_lp[token])
            tokens += 1
            argmax += gap == 0.0
            largest_gap = max(largest_gap, gap)
    reply = {"tokens": tokens, "argmax": argmax, "largest_gap": largest_gap}
    if args.theirs:
        theirs = read_jsonl(args.theirs)
        alike = sum(
            a == b for r, s in zip(ours, theirs) for a, b in zip(r["output_ids"], s["output_ids"])
        )
        reply["alike"] = alike
        reply["theirs_tokens"] = sum(len(s["output_ids"]) for s in theirs)
    if largest_gap > TIE:
        sys.exit(f"a generated token is {largest_gap:.2e} below the arg-max: not the model's greedy choice")
    print(json.dumps(reply))


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--model", required=True)
    r.add_argument("--input", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--batch-size", type=int, required=True)
    r.add_argument("--threads", type=int, required=True)
    r.add_argument("--max-new-tokens", type=int, required=True)
    c = sub.add_parser("check")
    c.add_argument("--model", required=True)
    c.add_argument("--ours", required=True)
    c.add_argument("--theirs")
    args = parser.parse_args()
    {"run": run, "check": check}[args.cmd](args)


if __name__ == "__main__":
    main()
