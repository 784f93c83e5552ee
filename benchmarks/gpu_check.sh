#!/usr/bin/env bash
# The GPU check: one short run on a lent CUDA machine (python3 with torch, torch_geometric, transformers;
# no network, no copy of the data). Prepare here first:
#     .venv/bin/python benchmarks/gpu_prepare.py --out .gpu      # data, MiniLM features (git-ignored)
#     pip download ... -d .whl pykeen tensorly ...               # packages the machine lacks (see RESULTS.md)
# then run on the machine, from the repository root, carrying .gpu and .whl:
#     OUT=<results folder> bash benchmarks/gpu_check.sh [part ...]
# Parts (default: all, in this order): tests imf-steps synthetic imdb fb15k237 umls. Each part has its own time
# limit and writes into $OUT; a part that fails or times out does not stop the others, and a part is skipped
# once BUDGET seconds (default 450) have passed, so the whole run stays inside one device call.
# Measured on one H100 (2026-11-27, benchmarks/RESULTS.md "On a GPU"): tests 24 s, imf-steps 19 s, synthetic 63 s,
# imdb about 40 s per seed of the four models (hence IMDB_SEEDS 3), fb15k237 about 30 s per epoch plus loading,
# umls 82 s.
set -u
OUT=${OUT:-/tmp/gpu_check}
BUDGET=${BUDGET:-450}
mkdir -p "$OUT"
START=$(date +%s)
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 MPLBACKEND=Agg

WHEELS=${WHEELS:-.whl}  # folder of wheels to install first; "none" to skip
if [ "$WHEELS" != none ] && compgen -G "$WHEELS/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
    || echo "wheel install failed"
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
if [ -f .gpu/data.tar.gz ]; then
  mkdir -p /tmp/data && tar --overwrite -xzf .gpu/data.tar.gz -C /tmp/data
  export IMF_KG_SHARED_DATA=/tmp/data
fi
export IMF_KG_CACHE=/tmp/imf_kg_cache

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch, torch_geometric, transformers, sys; print(sys.version.split()[0], 'torch', torch.__version__, 'pyg', torch_geometric.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee "$OUT/env.txt"

part() {  # part NAME LIMIT_S COMMAND...
  local name=$1 limit=$2; shift 2
  local elapsed=$(( $(date +%s) - START ))
  if (( elapsed + 20 > BUDGET )); then echo "== $name: skipped (${elapsed}s of ${BUDGET}s used)" | tee -a "$OUT/summary.txt"; return; fi
  (( limit > BUDGET - elapsed )) && limit=$(( BUDGET - elapsed ))
  local t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name: rc=$rc, $(( $(date +%s) - t0 ))s (limit ${limit}s)" | tee -a "$OUT/summary.txt"
  tail -n 25 "$OUT/$name.log"
}

PARTS=("$@")
all() {  # all NAME: true when no parts were named, or NAME is one of them
  [ ${#PARTS[@]} -eq 0 ] && return 0
  local p; for p in "${PARTS[@]}"; do [ "$p" = "$1" ] && return 0; done; return 1
}
DEVICE=${DEVICE:-cuda} SEEDS=${SEEDS:-5} STEPS=${STEPS:-200}  # IMDB_MODELS, IMDB_SEEDS, TESTS, FB_EPOCHS: the parts

# 1. the tests that need CUDA (they skip elsewhere) and the device-dependent test files around them
TESTS=${TESTS:-tests/test_training_device.py tests/test_encoders_structure.py tests/test_encoders_image.py \
tests/test_imf_model.py tests/test_scorers.py tests/test_node_layers.py}
# shellcheck disable=SC2086
all tests && part tests 120 $PY -m pytest -q -p no:cacheprovider -m "" --timeout 300 $TESTS

# 2. IMF steps on FB15k-237 (real MiniLM features): fp32 vs bf16 autocast, then the full filtered test evaluation
all imf-steps && part imf-steps 120 $PY benchmarks/imf_steps.py --device $DEVICE --data /tmp/data/kg/FB15k-237 \
  --text-features .gpu/fb_text.npy --text-ids .gpu/fb_text_ids.txt --steps $STEPS --warmup 20 --json "$OUT/imf_steps.json"

# 3. HGNN-IMA against HGT early / late fusion on the synthetic default, 5 seeds, on the GPU (bf16 autocast: amp auto)
all synthetic && part synthetic 120 $PY -m node_tasks compare --dataset synthetic --seeds $SEEDS \
  --models ima,hgt-early,hgt-late --set train.device=$DEVICE --out "$OUT/synthetic"

# 4. IMDB (real data), the same models and the MLP, IMDB_SEEDS seeds (3); MiniLM text features carried from here
all imdb && part imdb 180 $PY -m node_tasks compare --dataset imdb --seeds ${IMDB_SEEDS:-3} \
  --models ${IMDB_MODELS:-ima,hgt-early,hgt-late,mlp} \
  --set train.device=$DEVICE --set data_options.text_encoder=.gpu/imdb_text.npz --out "$OUT/imdb"

# 5. IMF on FB15k-237 for FB_EPOCHS (3) epochs (the config's model and precision), validation and test at the end
all fb15k237 && part fb15k237 150 $PY -m imf_kg train --config configs/imf/fb15k237.yaml --run-dir /tmp/fb \
  --overwrite --no-progress --set data.dataset=/tmp/data/kg/FB15k-237 --set data.text=null \
  --set "data.features={text: .gpu/fb_text.npy}" --set "data.feature_ids={text: .gpu/fb_text_ids.txt}" \
  --set train.device=$DEVICE --set train.epochs=${FB_EPOCHS:-3} --set train.eval_every=${FB_EPOCHS:-3}
[ -d /tmp/fb ] && cp /tmp/fb/metrics.jsonl "$OUT/fb15k237_metrics.jsonl" 2>/dev/null

# 6. the main job (make run's command) on the GPU
#    (entity-name features carried too: the machine has no MiniLM model)
all umls && part umls 150 $PY -m imf_kg train --config configs/imf/umls.yaml --run-dir /tmp/umls --overwrite \
  --no-progress --set train.device=$DEVICE --set data.text=null --set "data.features={text: .gpu/umls_text.npy}" \
  --set "data.feature_ids={text: .gpu/umls_text_ids.txt}"

echo "total $(( $(date +%s) - START ))s" | tee -a "$OUT/summary.txt"
# the device tool brings back at most 8 files: with PACK=1 (default) everything travels as one archive
if [ "${PACK:-1}" = 1 ]; then
  tar -czf /tmp/gpu_check.tar.gz -C "$OUT" . && find "$OUT" -mindepth 1 ! -name summary.txt -delete \
    && mv /tmp/gpu_check.tar.gz "$OUT/"
fi
