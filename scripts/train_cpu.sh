#!/usr/bin/env bash
# Train the anti-shortcut recipe on the CPU (2 threads, about 25 minutes), then evaluate the new
# version on the val and test splits (report folders, metrics recorded in the card).
#
#   scripts/train_cpu.sh REGISTRY [VERSION]
#
# Why this recipe (docs/training.md, "Training against shortcuts"): the public collections
# confound source and label, so the run erases source cues (border crop and erasing, resolution,
# blur, JPEG, noise), flattens the source mix (temperature 2), visits the Cohen set's non-COVID
# pneumonias three times, and keeps the epoch with the best *within-source* validation AUC.
# SqueezeNet 1.1 at 128 px is the cheapest network per epoch on two cores; the cosine schedule
# is fitted to the time budget after epoch 2, so the run ends on time on a busy machine too.
#
# Environment (defaults in brackets):
#   MANIFEST      manifest CSV [../shared/data/cxr/manifest.csv]
#   PYTHON        interpreter with torch, torchvision, scikit-learn, matplotlib [python3]
#   THREADS       torch CPU threads [2]
#   TRAIN_S       training seconds (epochs incl. validation; loading is extra) [1260]
#   PREPROCESS    PreprocessSpec flags [--lung-crop --equalise clahe]; set empty on a build whose
#                 PreprocessSpec lacks those fields (train then stops at once and says so)
#   EXTRA         more train flags, appended (later flags win), e.g. "--seed 1"
#   EVAL_EXTRA    more evaluate flags, appended
#   RUNS          checkpoints and reports go under this folder [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
REGISTRY=${1:?usage: scripts/train_cpu.sh REGISTRY [VERSION]}
VERSION=${2:-squeezenet1_1-sc-$(date +%Y%m%d-%H%M)}
PY=${PYTHON:-python3}
MANIFEST=${MANIFEST:-../shared/data/cxr/manifest.csv}
THREADS=${THREADS:-2}
TRAIN_S=${TRAIN_S:-1260}
PREPROCESS=${PREPROCESS---lung-crop --equalise clahe}
EXTRA=${EXTRA:-}
EVAL_EXTRA=${EVAL_EXTRA:-}
RUNS=${RUNS:-runs}
export OMP_NUM_THREADS=$THREADS PYTHONUNBUFFERED=1
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$RUNS/reports"

started=$(date +%s)
# shellcheck disable=SC2086  # PREPROCESS and EXTRA are flag lists
$PY -m training train --manifest "$MANIFEST" --registry "$REGISTRY" --version "$VERSION" \
    --run-dir "$RUNS/$VERSION" --device cpu --threads "$THREADS" --load-workers "$THREADS" \
    --no-progress \
    --arch squeezenet1_1 --input-size 128 --head-bias 1 \
    --optimizer adamw --lr 5e-4 --weight-decay 5e-4 --schedule cosine --warmup-epochs 1 \
    --label-smoothing 0.1 --batch-size 32 \
    --augment all --covid-copies 1 --rotate-deg 15 --scale 0.8 1.2 --translate 0.08 \
    --border-crop 0.08 --border-erase 2 --downscale 0.5 --blur-sigma 1.0 \
    --jpeg-quality 30 --jpeg-p 0.3 --noise-std 0.02 \
    --source-sampling temperature --source-temperature 2 --hard-negative-copies 3 \
    --select-by within_source_auc \
    --epochs 60 --time-limit-s "$TRAIN_S" --fit-epochs-to-time \
    $PREPROCESS $EXTRA
echo "train $VERSION: $(( $(date +%s) - started )) s"

for split in val test; do
    # shellcheck disable=SC2086
    $PY -m training evaluate --registry "$REGISTRY" --model "$VERSION" --split "$split" \
        --manifest "$MANIFEST" --device cpu --threads "$THREADS" --load-workers "$THREADS" \
        --out "$RUNS/reports/$VERSION-$split" --record-in-card $EVAL_EXTRA
done
echo "done $VERSION after $(( $(date +%s) - started )) s; reports in $RUNS/reports/$VERSION-{val,test}"
