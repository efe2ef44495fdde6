#!/usr/bin/env bash
# The main job end to end on the bundled digits: convert -> recover (MSNAT) -> export -> certify on PCM.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
BIN=.venv/bin
OUT=${OUT:-runs/demo}
$BIN/analogai-deploy convert lenet --num-classes 10 -o "$OUT/lenet"
$BIN/analogai-deploy recover "$OUT/lenet" --recipe msnat --data digits -o "$OUT/lenet-msnat"
$BIN/analogai-deploy export "$OUT/lenet-msnat"
$BIN/analogai-deploy certify "$OUT/lenet-msnat" --device PCM --data digits --times 1s,1h,1d,1y
echo "demo package: $OUT/lenet-msnat (certificate.json, certificate.png, model.onnx)"
