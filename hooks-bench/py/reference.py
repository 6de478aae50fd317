"""The Python side of `make bench`: transformers' BertModel with forward hooks, as the reference
ActivationStore captures (`output.detach().cpu()`), and numpy's own `.npz` writer.

Two modes.

    reference.py serve
        A worker driven by the Rust benchmark (hooks-bench/benches/report): one JSON request per
        line on stdin, one JSON reply per line on stdout. Timings are taken here, around the work
        only, so the pipe costs nothing. Requests (`cmd` and its fields):

        setup    model, threads          load BertModel (its default attention), hook
                                         encoder.layer.0-5; reply with versions and threads
        forward  ids, reps               time `reps` forwards of the [B, T] ids with capture on
        extract  input, batch, out       the reference extraction (below), timed from loaded
                                         ids to file written
        corpus   input, batch, pool, out,    the reference extraction of a corpus of any lengths
                 layers                  (below), in input order, each batch padded to its own
                                         longest with its attention mask; `pool` none or mean
                                         (masked, as sentence-transformers); timed from loaded
                                         ids to file written
        threads  n                       torch.set_num_threads(n)
        load     path                    read every array of an .npz into memory
        savez    out                     time numpy.savez of the loaded arrays (plus fsync)
        quit

    reference.py extract --model DIR --input IDS.jsonl --batch-size N --out FILE --threads N
        One reference extraction in a process of its own, for peak-RSS measurement.

The reference extraction keeps every batch's capture, concatenates each layer with `torch.cat`
at the end and writes the result with `numpy.savez`: what the Python tools we replace do.
"""

import json
import os
import sys
import time
import traceback

import numpy as np
import torch
import transformers
from transformers import BertModel

LAYERS = [f"encoder.layer.{i}" for i in range(6)]


def first_tensor(output):
    return output[0] if isinstance(output, (tuple, list)) else output


class Reference:
    """BertModel with a forward hook on each selected layer, as the reference ActivationStore."""

    def __init__(self, model_dir, threads):
        torch.set_num_threads(threads)
        self.model = BertModel.from_pretrained(model_dir).eval()
        modules = dict(self.model.named_modules())
        # `latest` keeps the last output per layer (forward); `kept` every output (extraction).
        self.latest = {}
        self.kept = None
        for name in LAYERS:
            modules[name].register_forward_hook(self._hook(name))

    def _hook(self, name):
        def hook(_module, _args, output):
            tensor = first_tensor(output).detach().cpu()
            if self.kept is not None:
                self.kept[name].append(tensor)
            else:
                self.latest[name] = tensor

        return hook

    def forward(self, ids, mask=None):
        with torch.no_grad():
            self.model(input_ids=ids, attention_mask=torch.ones_like(ids) if mask is None else mask)

    def corpus(self, rows, batch_size, pool, layers, out):
        """The reference extraction of `rows` (lists of ids of any length), in input order, each
        batch right-padded to its longest: what the seed's `extract_representations` and the
        Python tools do without sorting. Returns the seconds of its phases."""
        self.kept = {name: [] for name in LAYERS}
        try:
            start = time.perf_counter()
            for first in range(0, len(rows), batch_size):
                chunk = rows[first : first + batch_size]
                width = max(len(r) for r in chunk)
                ids = torch.zeros(len(chunk), width, dtype=torch.int64)
                mask = torch.zeros(len(chunk), width, dtype=torch.int64)
                for i, r in enumerate(chunk):
                    ids[i, : len(r)] = torch.tensor(r)
                    mask[i, : len(r)] = 1
                self.forward(ids, mask)
                if pool == "mean":
                    weights = mask.unsqueeze(-1).float()
                    for name in layers:
                        out_ = self.kept[name][-1]
                        self.kept[name][-1] = (out_ * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            forwards = time.perf_counter()
            arrays = {name: torch.cat(self.kept[name]).numpy() for name in layers}
        finally:
            self.kept = None
        concatenated = time.perf_counter()
        np.savez(out, **arrays)
        return {"forwards": forwards - start, "cat": concatenated - forwards, "save": time.perf_counter() - concatenated}

    def extract(self, ids, batch_size, out):
        """The reference extraction; returns the seconds of its three phases."""
        self.kept = {name: [] for name in LAYERS}
        try:
            start = time.perf_counter()
            for first in range(0, len(ids), batch_size):
                self.forward(ids[first : first + batch_size])
            forwards = time.perf_counter()
            arrays = {name: torch.cat(parts).numpy() for name, parts in self.kept.items()}
        finally:
            self.kept = None
        concatenated = time.perf_counter()
        np.savez(out, **arrays)
        return {"forwards": forwards - start, "cat": concatenated - forwards, "save": time.perf_counter() - concatenated}


def read_ids(path):
    with open(path) as f:
        return torch.tensor([json.loads(line)["input_ids"] for line in f if line.strip()], dtype=torch.int64)


class Worker:
    """The state `serve` keeps between requests; one method per command."""

    def __init__(self):
        self.reference = None
        self.arrays = None
        self.ids = {}

    def setup(self, model, threads):
        self.reference = Reference(model, threads)
        return {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "numpy": np.__version__,
            "threads": torch.get_num_threads(),
            "attn_implementation": self.reference.model.config._attn_implementation,
        }

    def forward(self, ids, reps):
        ids = torch.tensor(ids, dtype=torch.int64)
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            self.reference.forward(ids)
            times.append(time.perf_counter() - start)
        return {"seconds": times}

    def extract(self, input, batch, out):
        if input not in self.ids:
            self.ids[input] = read_ids(input)
        start = time.perf_counter()
        phases = self.reference.extract(self.ids[input], batch, out)
        return {"seconds": time.perf_counter() - start, **phases}

    def corpus(self, input, batch, pool, layers, out):
        if input not in self.ids:
            with open(input) as f:
                self.ids[input] = [json.loads(line)["input_ids"] for line in f if line.strip()]
        start = time.perf_counter()
        phases = self.reference.corpus(self.ids[input], batch, pool, layers, out)
        return {"seconds": time.perf_counter() - start, **phases}

    def threads(self, n):
        torch.set_num_threads(n)
        return {"threads": torch.get_num_threads()}

    def load(self, path):
        with np.load(path) as npz:
            self.arrays = {name: npz[name] for name in npz.files}
        return {"bytes": sum(a.nbytes for a in self.arrays.values())}

    def savez(self, out):
        start = time.perf_counter()
        with open(out, "wb") as f:
            np.savez(f, **self.arrays)
            # Our writer fsyncs (its writes are atomic and durable); make numpy's equal.
            f.flush()
            os.fsync(f.fileno())
        return {"seconds": time.perf_counter() - start}


def serve():
    # Replies go to the real stdout; anything a library prints goes to stderr instead.
    replies, sys.stdout = sys.stdout, sys.stderr
    worker = Worker()
    for line in sys.stdin:
        request = json.loads(line)
        cmd = request.pop("cmd")
        if cmd == "quit":
            return
        try:
            reply = getattr(worker, cmd)(**request)
        except Exception:  # reported to the driver, which stops with it
            reply = {"error": traceback.format_exc()}
        print(json.dumps(reply), file=replies, flush=True)


def extract_once(argv):
    import argparse

    parser = argparse.ArgumentParser(prog="reference.py extract")
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args(argv)
    reference = Reference(args.model, args.threads)
    reference.extract(read_ids(args.input), args.batch_size, args.out)


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve()
    elif sys.argv[1:2] == ["extract"]:
        extract_once(sys.argv[2:])
    else:
        sys.exit(__doc__)
