#!/usr/bin/env bash
# The wheel works without the source tree: build it from a copy of the tree, install it into a bare
# folder without dependencies (the venv's torch, aihwkit, ... are reused), then, from another folder,
# run `recipes list`, `pull digits-cnn-msnat-pcm` and a short `certify` on the pulled package.
#   bash scripts/check_wheel.sh            # uses .venv/bin/python (PYTHON=... to choose another)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(cd "$(dirname "${PYTHON:-.venv/bin/python}")" && pwd)/$(basename "${PYTHON:-.venv/bin/python}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar --exclude=./.venv --exclude=./.git --exclude=./runs --exclude=./build --exclude='*.egg-info' -cf - . \
  | (mkdir -p "$work/src" && tar -xf - -C "$work/src")
(cd "$work/src" && "$PY" -m pip wheel --no-deps --no-build-isolation --quiet -w "$work/dist" .)
"$PY" -m pip install --no-deps --quiet --target "$work/site" "$work"/dist/analogai_deploy-*.whl
rm -rf "$work/src"  # nothing of the source tree is left to fall back on
mkdir "$work/elsewhere" && cd "$work/elsewhere"
export PYTHONPATH="$work/site" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg
unset ANALOGAI_ZOO
"$PY" -c "import analogai_deploy as a, sys; p = a.__file__; sys.exit(0 if p.startswith('$work/site') else f'imported {p}')"
"$PY" -m analogai_deploy recipes list | tee recipes.txt
grep -q '^msnat ' recipes.txt
"$PY" -m analogai_deploy zoo list
"$PY" -m analogai_deploy pull digits-cnn-msnat-pcm -o pulled
"$PY" -m analogai_deploy certify pulled --repeats 2 --times 1d --limit 64
test -f pulled/certificate.json
echo "wheel check passed: recipes, the shipped zoo and certify work from the installed wheel"
