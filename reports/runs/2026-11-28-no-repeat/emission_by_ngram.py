"""Greedy reasoning traces of one model on one set under each n-gram ban: emission, lengths, the traces that never
closed.  usage: python emission_by_ngram.py MODEL_DIR BEIR_FOLDER SPLIT [fp32|bf16] [N ...]  (default N: 0 3 4 6)"""
import sys
import time

from searchr3.data.beir import load_beir
from searchr3.model.embedder import Embedder

model, folder, split = sys.argv[1:4]
precision = sys.argv[4] if len(sys.argv) > 4 else "fp32"
ngrams = [int(n) for n in sys.argv[5:]] or [0, 3, 4, 6]
e = Embedder.from_pretrained(model, precision=precision)
rs = load_beir(folder, split=split)
texts = [rs.queries[q] for q in sorted(rs.judged_queries())]
cap = e.config.max_new_tokens
for n in ngrams:
    t = time.time()
    r = e.generate_reasoning(texts, no_repeat_ngram=n)
    lens = [len(g) for g in r.generated]
    print(f"n={n} emission {1 - r.fallbacks / len(texts):.4f} fallbacks {r.fallbacks} mean_len {sum(lens) / len(lens):.2f} "
          f"at_cap {sum(x >= cap for x in lens)} {time.time() - t:.0f}s", flush=True)
    for i, emitted in enumerate(r.emitted):
        if not emitted:
            print(f"   {texts[i][:50]!r} -> {e.tokenizer.decode(r.generated[i])[:140]!r}")
