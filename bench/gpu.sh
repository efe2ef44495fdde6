#!/usr/bin/env bash
# The GPU bench, one script, aimed at about 15 minutes on one H100 / H200 (BENCHMARKS.md, "GPU"):
#   1. bench/speed.py --gpu: ResNet-18 (3x32x32, batch 512) noise-injected step vs digital step and vs
#      aihwkit's HWA step, an MSNAT round vs the compute it needs (full digits training split), both
#      certify engines on ResNet-18 and the MiniLM (certify runs on the CPU, all cores: aihwkit's
#      inference tiles and the fast engine are CPU code here);
#      and SmolLM2-135M's text training steps (rows (f): the hardware-matched noise step and an MSNAT client
#      step, each beside the digital step it is measured against);
#   2. the seed's example: its CIFAR-form ResNet-18 (resnet18_cifar) converted, MSNAT-trained for 3
#      rounds on digits-as-CIFAR (3x32x32) on cuda, then certified (fast engine, 1 d, 5 repeats);
#   3. SmolLM2-135M: one MSNAT round with all 5 FI clients and the feedback loops on generated:256 on cuda
#      (on 2 CPU cores only one client fits the memory: BENCHMARKS.md section 6), certified before and after
#      (fast engine on every CPU core, 1 s / 1 d, 3 repeats, 8 built-in sentences, next-token agreement and
#      perplexity ratio against the package's reference).
# Results: runs/bench/gpu/{speed.md,speed.json,example.json,lm.json}; paste speed.md into BENCHMARKS.md.
#
#   bench/gpu.sh            # on a machine with CUDA
#   bench/gpu.sh --smoke    # the same steps at tiny sizes on the CPU (~3-5 min on 2 busy cores): checks the script
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-runs/bench/gpu}
mkdir -p "$OUT"
start=$(date +%s)

if [ "${1:-}" = "--smoke" ]; then
  export OMP_NUM_THREADS=1
  SPEED=(--n 1 --threads 1 --batch 16 --step-models lenet --hwa-models "" --msnat-models lenet
         --certify-models lenet --certify-limit 32 --text-models lm30k --text-batch 4 --no-text-torch-path
         --no-peak-memory --no-startup)
  DEVICE=cpu ROUNDS=1 BATCH=64 REPEATS=2 LIMIT=(--limit 32) SHAPE=3,8,8
  LM=lm30k GEN=16 LM_EXTRA=(training.use_FL=false)  # a 2M-parameter LM (30k vocabulary) for SmolLM2
  # two clients, no feedback passes: the same code path at a CPU's pace
  EXTRA=(recovery.noise_2=null recovery.noise_3=null recovery.noise_4=null training.use_FL=false)
else
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: run bench/gpu.sh --smoke')"
  CORES=$(nproc)
  SPEED=(--gpu --n 7 --threads "$CORES" --step-models resnet18 --hwa-models resnet18 --msnat-models resnet18
         --msnat-samples 1257 --certify-models resnet18,minilm --text-models smollm2 --text-batch 8
         --no-text-torch-path --no-peak-memory --no-startup)
  DEVICE=cuda ROUNDS=3 BATCH=256 REPEATS=5 LIMIT=() SHAPE=3,32,32 EXTRA=()
  LM=smollm2 GEN=256 LM_EXTRA=()
fi

echo "== speed bench (${SPEED[*]})"
timeout 360 "$PY" bench/speed.py "${SPEED[@]}" --agreement-repeats 0 --markdown "$OUT/speed.md" --json "$OUT/speed.json"

echo "== the seed's CIFAR-form ResNet-18, MSNAT on digits-as-CIFAR ($DEVICE)"
rm -rf "$OUT/r18" "$OUT/r18-msnat" "$OUT/r18-msnat.partial"
"$PY" -m analogai_deploy convert resnet18_cifar -o "$OUT/r18" --num-classes 10 --input-shape "$SHAPE" --json > /dev/null
timeout 180 "$PY" -m analogai_deploy recover "$OUT/r18" --recipe msnat --data digits -o "$OUT/r18-msnat" --json \
  "training.device=$DEVICE" "training.rounds=$ROUNDS" "training.batch_size=$BATCH" "${EXTRA[@]}" > "$OUT/recover.json"
timeout 120 "$PY" -m analogai_deploy certify "$OUT/r18-msnat" --engine fast --times 1d --repeats "$REPEATS" \
  "${LIMIT[@]}" --json > "$OUT/certify.json"
"$PY" - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
rec, cert = json.load(open(f"{out}/recover.json")), json.load(open(f"{out}/certify.json"))
t = rec["training"]
example = {"rounds": t["rounds"], "seconds": t["seconds"], "device": t["device"], "best": t["best"],
           "certify_1d": {k: cert["results"][0][k] for k in ("mean", "ci95")}, "digital": cert["digital"],
           "certify_per_eval_s": cert["timing"]["per_eval_s"]}
json.dump(example, open(f"{out}/example.json", "w"), indent=1)
print(json.dumps(example, indent=1))
EOF

echo "== $LM: one MSNAT round on generated:$GEN ($DEVICE), certified before and after"
rm -rf "$OUT/lm" "$OUT/lm-msnat" "$OUT/lm-msnat.partial"
"$PY" -c "import sys; from pathlib import Path; from analogai_deploy.benchmarks.speed_workloads import text_package
print(text_package(sys.argv[1], Path(sys.argv[2])))" "$LM" "$OUT/lm-src" > "$OUT/lm-path"
rm -rf "$OUT/lm" && mv "$(cat "$OUT/lm-path")" "$OUT/lm" && rm -rf "$OUT/lm-src" "$OUT/lm-path"
timeout 300 "$PY" -m analogai_deploy recover "$OUT/lm" --recipe msnat --data "generated:$GEN" -o "$OUT/lm-msnat" --json \
  "training.device=$DEVICE" training.rounds=1 training.batch_size=8 "${LM_EXTRA[@]}" > "$OUT/lm-recover.json"
for pkg in lm lm-msnat; do
  for metric in next_token_agreement perplexity_ratio; do
    timeout 150 "$PY" -m analogai_deploy certify "$OUT/$pkg" --engine fast --times 1s,1d --repeats 3 --data sentences \
      --limit 8 --metric "$metric" --json > "$OUT/$pkg-$metric.json"
  done
done
"$PY" - "$OUT" "$LM" <<'EOF'
import json, sys
out, lm = sys.argv[1:]
t = json.load(open(f"{out}/lm-recover.json"))["training"]
row = {"model": lm, "round_s": t["seconds"], "device": t["device"], "best": t["best"]}
for pkg in ("lm", "lm-msnat"):
    for metric in ("next_token_agreement", "perplexity_ratio"):
        cert = json.load(open(f"{out}/{pkg}-{metric}.json"))
        row[f"{pkg}/{metric}"] = {r["time"]: {k: r[k] for k in ("mean", "ci95")} for r in cert["results"]}
json.dump(row, open(f"{out}/lm.json", "w"), indent=1)
print(json.dumps(row, indent=1))
EOF
echo "== done in $(( $(date +%s) - start )) s; results in $OUT"
