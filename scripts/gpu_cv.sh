#!/usr/bin/env bash
# Finish the cross-validation of the reference recipe (squeezenet1_1-c's) on one GPU, in one call:
# the fold runs already made (committed in docs/model-reports/cv/squeezenet1_1-c/folds/) are
# reused, every missing (fold, seed) of seeds 0-2 trains at once as its own process on the one
# GPU, and a last `cv` call per seed writes the summaries. The selection rule in
# docs/training.md ("The rule that picks the default") needs seed 0 on all folds (the screen)
# and seeds 1 and 2 (the confirmation).
#
# Runs from the repository root with PYTHONPATH=. (no install needed), like scripts/gpu_train.sh:
#
#   MANIFEST=.gpu/data/cxr/manifest.csv OUT=$OUT scripts/gpu_cv.sh
#
# Environment (defaults in brackets):
#   MANIFEST  manifest CSV; its sha256 must be the shared one [.gpu/data/cxr/manifest.csv]
#   OUT       the cv folder: folds/, oof.csv, cv.json, cv.md, logs/ [$WORK/out]
#   WORK      scratch folder for the fold models' registry [/tmp/deepcovid-cv]
#   SEEDS     training seeds [0 1 2]
#   FOLDS     folds [0 1 2 3 4]
#   DEVICE    flags of the device [--device cuda --threads 1 --load-workers 2]
#   EPOCHS    epochs of the recipe [121, what squeezenet1_1-c's card records as epochs_run]
#   NEMA      the NEMA sample CR every fold model scores [.gpu/data/dicom/RG1_UNCR.dcm]
#   KEEP      set to 1 to keep every fold model as a registry version (an ensemble candidate)
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WORK=${WORK:-/tmp/deepcovid-cv}
OUT=${OUT:-$WORK/out}
MANIFEST=${MANIFEST:-.gpu/data/cxr/manifest.csv}
SEEDS=${SEEDS:-0 1 2}
FOLDS=${FOLDS:-0 1 2 3 4}
DEVICE=${DEVICE:---device cuda --threads 1 --load-workers 2}
EPOCHS=${EPOCHS:-121}
DONE_HERE=docs/model-reports/cv/squeezenet1_1-c/folds
NEMA=${NEMA:-.gpu/data/dicom/RG1_UNCR.dcm}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT/folds" "$OUT/logs" "$WORK"
if [ -d "$DONE_HERE" ]; then cp -n "$DONE_HERE"/*.json "$OUT/folds/" 2>/dev/null; fi

# squeezenet1_1-c's training_command, with its epochs fixed (docs/training.md, "Commands").
RECIPE="--arch squeezenet1_1 --head-bias 1 --optimizer adamw --schedule cosine --warmup-epochs 2 \
 --augment all --covid-copies 1 --oversample --label-smoothing 0.1 --weight-decay 5e-4 \
 --lr 5e-4 --batch-size 32 --rotate-deg 15 --scale 0.8 1.2 --translate 0.08 --epochs $EPOCHS \
 --amp --channels-last"  # --amp (bf16 on CUDA, ignored on a CPU) is part of the recipe
KEEP_FLAGS=""
if [ -n "${KEEP:-}" ]; then
    KEEP_FLAGS="--keep-models --version-prefix squeezenet1_1-c-cv --registry $WORK/registry"
fi
cv() {  # out-dir, then extra flags
    local out=$1; shift
    # shellcheck disable=SC2086
    $PY -m training cv --manifest "$MANIFEST" --out-dir "$out" --folds 5 --fold-seed 0 \
        --nema-cr "$NEMA" --no-progress $DEVICE $RECIPE $KEEP_FLAGS "$@"
}
[ -f "$NEMA" ] || { echo "no NEMA CR at $NEMA: copy ../shared/data/dicom/RG1_UNCR.dcm there"; exit 2; }

started=$(date +%s)
for seed in $SEEDS; do
    for fold in $FOLDS; do
        if [ -f "$OUT/folds/fold$fold-seed$seed.json" ]; then
            echo "fold $fold seed $seed: done before"
            continue
        fi
        cv "$OUT" --seeds "$seed" --only-folds "$fold" >"$OUT/logs/fold$fold-seed$seed.log" 2>&1 &
    done
done
wait
echo "fold runs done after $(( $(date +%s) - started )) s"
# The screen (seed 0 alone) in $OUT/screen, then every seed together in $OUT (the
# confirmation's results); --summarise trains nothing, a missing fold run is left out.
mkdir -p "$OUT/screen/folds"
cp "$OUT"/folds/*-seed0.json "$OUT/screen/folds/" 2>/dev/null
cv "$OUT/screen" --seeds 0 --summarise >"$OUT/logs/screen.log" 2>&1
# shellcheck disable=SC2086
cv "$OUT" --seeds $SEEDS --summarise >"$OUT/logs/summary.log" 2>&1
tail -n 2 "$OUT/logs/screen.log" "$OUT/logs/summary.log"
echo "all done after $(( $(date +%s) - started )) s"
