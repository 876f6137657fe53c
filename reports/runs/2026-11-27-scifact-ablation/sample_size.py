"""docgrad_gc model: scifact-dev nDCG@10 over the full corpus and over document samples (cached doc vectors).

Run in the run folder (cache/embeddings from `searchr3 evaluate`, data/, the delta at /work/sfeval/delta)."""
import json, csv, glob, math, random, numpy as np
from dataclasses import replace
from searchr3.model.embedder import Embedder
from searchr3.model.config import ModelConfig
D = np.load(glob.glob('cache/embeddings/*.npy')[0])
ids = [json.loads(l)['_id'] for l in open('/work/shared/data/scifact/corpus.jsonl')]
e = Embedder.from_pretrained('/work/sfeval/delta', config=replace(ModelConfig(), max_doc_tokens=256), base='models/base')
qr = {}
for row in list(csv.reader(open('data/eval/scifact-dev/qrels/dev.tsv'), delimiter='\t'))[1:]:
    qr.setdefault(row[0], set()).add(row[1])
Q = {json.loads(l)['_id']: json.loads(l)['text'] for l in open('data/eval/scifact-dev/queries.jsonl')}
qids = sorted(qr); V = e.encode_queries([Q[q] for q in qids]).vectors; S = V @ D.T
def ndcg(ranked, rel):
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(ranked[:10]) if d in rel)
    return dcg / sum(1 / math.log2(i + 2) for i in range(min(len(rel), 10)))
def score(cols):
    sub = S[:, cols]; order = np.argsort(-sub, axis=1)[:, :10]
    return np.mean([ndcg([ids[cols[j]] for j in order[i]], qr[q]) for i, q in enumerate(qids)])
print('dev full corpus (5183):', round(score(list(range(len(ids)))), 4))
posset = set().union(*qr.values()); posidx = [i for i, d in enumerate(ids) if d in posset]
others = [i for i in range(len(ids)) if ids[i] not in posset]
for n in (300, 1000, 2500):
    vals = [score(sorted(posidx + random.Random(s).sample(others, n - len(posidx)))) for s in range(3)]
    print(f'dev over {n}-doc samples (3 seeds):', [round(v, 4) for v in vals])
# hard distractors: each dev query's BM25 top-k (title + text as the corpus file has them), then random fill
from searchr3.data.bm25 import Bm25Index
corpus = [json.loads(l) for l in open('/work/shared/data/scifact/corpus.jsonl')]
bm = Bm25Index([(c.get('title', '') + ' ' + c['text']).strip() for c in corpus])
idx, _ = bm.retrieve(bm.tokenize([Q[q] for q in qids]), 50)
for k, n in ((2, 300), (5, 300), (5, 600), (10, 1000), (20, 1500)):
    hard = sorted(set(posidx) | {int(j) for row in idx for j in row[:k]})
    rest = [i for i in range(len(ids)) if i not in set(hard)]
    cols = sorted(hard + random.Random(0).sample(rest, max(0, n - len(hard))))
    print(f'dev over positives + BM25 top-{k} ({len(hard)} docs) + random fill to {len(cols)}:', round(score(cols), 4))
