#!/bin/bash
# SinkRec probe: ML-1M length 200, equal 30-epoch budget (lr 2e-3, warm-up + cosine, no early stop), 4 runs at once on one H200
# Run on the GPU machine with the ML-1M file on SINKREC_DATA_PATH; writes OUT/probe21.json and one log per run.
export PYTHONPATH=$PWD SINKREC_DATA_PATH=${SINKREC_DATA_PATH:-$PWD/.data} SINKREC_CACHE=/tmp/sinkrec-cache PYTHONUNBUFFERED=1
COMMON="--device cuda --set train.epochs=30 --set train.patience=0 --set train.lr=0.002 --set train.schedule=cosine --set train.warmup_steps=100 --set train.progress=false"
run() { name=$1; shift; timeout ${LIMIT:-290} python3 -m sinkrec.cli train "$@" $COMMON --output /tmp/runs/$name > $OUT/$name.log 2>&1; }
run gdn --config ml-1m-gdn &
run sinkrec-default --config ml-1m-sinkrec &
run sinkrec-nomem-2blocks --config ml-1m-sinkrec --set model.use_memory=false --set model.n_blocks=2 --set model.loops=1 &
run sinkrec-2blocks --config ml-1m-sinkrec --set model.n_blocks=2 --set model.loops=1 &
wait
python3 - <<'PY'
import json, glob, os
rows = {}
for path in glob.glob("/tmp/runs/*/metrics.json"):
    m = json.load(open(path))
    name = path.split("/")[-2]
    rows[name] = {"epochs": len(m.get("history", [])), "best_epoch": m.get("best_epoch"), "valid": m.get("valid"),
                  "test": m.get("test"), "history": [{k: h.get(k) for k in ("epoch", "loss", "valid_ndcg@10", "seconds")} for h in m.get("history", [])]}
json.dump(rows, open(os.environ["OUT"] + "/probe21.json", "w"), indent=1)
for name, r in sorted(rows.items()):
    last = r["history"][-1] if r["history"] else {}
    print(f"{name:<26} epochs {r['epochs']:>3}  best valid ndcg@10 {((r['valid'] or {}).get('ndcg@10') or 0):.4f}  test {((r['test'] or {}).get('ndcg@10') or 0):.4f}  last epoch s {last.get('seconds')}")
PY
