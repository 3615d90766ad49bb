#!/usr/bin/env bash
# Train the shipped default model (SqueezeNet 1.1, from scratch) and the paper's other three
# architectures on one GPU, evaluate each on the test split, compare them, and pack the results.
#
# Runs from the repository root with PYTHONPATH=. (no install needed): only torch, torchvision,
# scikit-learn, matplotlib and tqdm are required; pydicom (for the model card's Device UID) is
# unpacked from .gpu/pydicom.tgz where the machine lacks it.
#
#   MANIFEST=.gpu/data/cxr/manifest.csv OUT=/tmp/out scripts/gpu_train.sh
#
# Environment (defaults in brackets):
#   MANIFEST   manifest CSV [.gpu/data/cxr/manifest.csv]
#   OUT        where results.tar.gz, weights.tar.gz and summary.txt go [$WORK/out]
#   WORK       scratch folder: registry, checkpoints, logs [/tmp/deepcovid-train]
#   SQ_S       training seconds of each SqueezeNet variant [240]
#   BIG_S      training seconds of each larger architecture [240]
#   COMMON     flags added to every `train` [GPU: --device cuda --amp --channels-last]
#   EVAL       flags added to every `evaluate` [--device cuda --threads 2]
#   CMP        flags added to every `compare` [--device cuda --threads 2]
#   ARCHS      which groups to train: "sq big" [sq big]; "sqlong" is round two (see docs)
#   NO_VAL_COMPARE  set to skip the comparison on the val split
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WORK=${WORK:-/tmp/deepcovid-train}
OUT=${OUT:-$WORK/out}
MANIFEST=${MANIFEST:-.gpu/data/cxr/manifest.csv}
SQ_S=${SQ_S:-240}
BIG_S=${BIG_S:-240}
COMMON=${COMMON:---device cuda --amp --channels-last --no-progress --threads 2 --load-workers 4}
EVAL=${EVAL:---device cuda --threads 2}
CMP=${CMP:---device cuda --threads 2}
ARCHS=${ARCHS:-sq big}
REG=$WORK/registry
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
mkdir -p "$WORK/logs" "$WORK/reports" "$OUT"

if ! $PY -c "import pydicom" 2>/dev/null && [ -f .gpu/pydicom.tgz ]; then
    mkdir -p "$WORK/site" && tar xzf .gpu/pydicom.tgz -C "$WORK/site"
    export PYTHONPATH=$PYTHONPATH:$WORK/site
fi
$PY - <<'PYEOF'
import torch, torchvision, sklearn, matplotlib
print("torch", torch.__version__, "torchvision", torchvision.__version__,
      "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", flush=True)
PYEOF

started=$(date +%s)
train() {  # name, then train flags
    local name=$1; shift
    $PY -m training train --manifest "$MANIFEST" --registry "$REG" --version "$name" \
        --run-dir "$WORK/runs/$name" $COMMON "$@" >"$WORK/logs/train-$name.log" 2>&1
    echo "train $name: exit $? after $(( $(date +%s) - started )) s"
}
# Shared recipe for training from scratch: every image augmented, classes balanced, cosine decay
# fitted to the time budget, weight decay and label smoothing against overfitting ~930 images.
# --head-bias 1: SqueezeNet's ReLU head dies from scratch without it (loss stuck at ln 2).
SCRATCH="--head-bias 1 --optimizer adamw --schedule cosine --warmup-epochs 2 --augment all \
 --covid-copies 1 --oversample --label-smoothing 0.1 --weight-decay 5e-4 --fit-epochs-to-time"
VERSIONS=()
if [[ " $ARCHS " == *" sq "* ]]; then
    # The paper's protocol (Adam 1e-4, batch 20, COVID x5 augmented, constant lr) + the head fix.
    train squeezenet1_1-paper --arch squeezenet1_1 --head-bias 1 --epochs 1000 \
        --time-limit-s "$SQ_S" &
    train squeezenet1_1-a --arch squeezenet1_1 $SCRATCH --lr 1e-3 --batch-size 32 \
        --epochs 1000 --time-limit-s "$SQ_S" &
    train squeezenet1_1-b --arch squeezenet1_1 $SCRATCH --lr 3e-4 --batch-size 20 \
        --epochs 1000 --time-limit-s "$SQ_S" &
    train squeezenet1_1-c --arch squeezenet1_1 $SCRATCH --lr 5e-4 --batch-size 32 \
        --rotate-deg 15 --scale 0.8 1.2 --translate 0.08 --epochs 1000 --time-limit-s "$SQ_S" &
    train squeezenet1_1-d --arch squeezenet1_1 $SCRATCH --optimizer sgd --lr 0.01 \
        --batch-size 32 --epochs 1000 --time-limit-s "$SQ_S" &
    VERSIONS+=(squeezenet1_1-paper squeezenet1_1-a squeezenet1_1-b squeezenet1_1-c squeezenet1_1-d)
fi
if [[ " $ARCHS " == *" sqlong "* ]]; then
    # Second round: recipe c (the best by val AUC in round one) with more epochs per second.
    train squeezenet1_1-c2 --arch squeezenet1_1 $SCRATCH --lr 1e-3 --batch-size 64 \
        --rotate-deg 15 --scale 0.8 1.2 --translate 0.08 --epochs 1000 --time-limit-s "$SQ_S" &
    train squeezenet1_1-c3 --arch squeezenet1_1 $SCRATCH --lr 5e-4 --batch-size 32 --seed 1 \
        --rotate-deg 15 --scale 0.8 1.2 --translate 0.08 --epochs 1000 --time-limit-s "$SQ_S" &
    train squeezenet1_1-c4 --arch squeezenet1_1 $SCRATCH --lr 7e-4 --batch-size 48 \
        --rotate-deg 15 --scale 0.8 1.2 --translate 0.08 --epochs 1000 --time-limit-s "$SQ_S" &
    VERSIONS+=(squeezenet1_1-c2 squeezenet1_1-c3 squeezenet1_1-c4)
fi
if [[ " $ARCHS " == *" big "* ]]; then
    for arch in resnet18 resnet50 densenet121; do
        train "$arch-a" --arch "$arch" $SCRATCH --lr 1e-3 --batch-size 32 \
            --epochs 1000 --time-limit-s "$BIG_S" &
    done
    VERSIONS+=(resnet18-a resnet50-a densenet121-a)
fi
wait
echo "training done after $(( $(date +%s) - started )) s"
# Pack the weights now, so a time-out during evaluation still returns the models.
(cd "$WORK" && tar czf "$OUT/weights.tar.gz" registry/squeezenet1_1-*/weights.pt \
    registry/*/model_card.json logs runs/*/history.json 2>/dev/null)

DONE=()
for v in "${VERSIONS[@]}"; do
    [ -f "$REG/$v/model_card.json" ] || { echo "no version $v"; continue; }
    DONE+=("$v")
    $PY -m training evaluate --registry "$REG" --model "$v" --split test --manifest "$MANIFEST" \
        --out "$WORK/reports/$v" --record-in-card $EVAL >"$WORK/logs/eval-$v.log" 2>&1 &
done
wait
for v in "${DONE[@]}"; do tail -n 1 "$WORK/logs/eval-$v.log"; done
if [ ${#DONE[@]} -gt 1 ]; then
    $PY -m training compare "${DONE[@]}" --registry "$REG" --split test --manifest "$MANIFEST" \
        --out "$WORK/reports/compare" $CMP 2>&1 | tail -n 12
    if [ -z "${NO_VAL_COMPARE:-}" ]; then
        $PY -m training compare "${DONE[@]}" --registry "$REG" --split val \
            --manifest "$MANIFEST" --out "$WORK/reports/compare-val" $CMP 2>&1 | tail -n 12
    fi
fi
echo "evaluation done after $(( $(date +%s) - started )) s"

if [ -f benchmarks/bench_models.py ] && grep -q -- "--device" benchmarks/bench_models.py; then
    timeout 90 $PY benchmarks/bench_models.py --device cuda --out "$OUT/bench_gpu.md" \
        >"$WORK/logs/bench.log" 2>&1
    echo "bench: exit $?"
fi

# Pack: reports, cards, logs, histories; weights of the SqueezeNets only (the others are large).
(
    cd "$WORK" || exit 1
    tar czf "$OUT/results.tar.gz" reports logs registry/*/model_card.json runs/*/history.json \
        runs/*/config.json 2>/dev/null
    tar czf "$OUT/weights.tar.gz" registry/squeezenet1_1-*/weights.pt \
        registry/*/model_card.json 2>/dev/null
)
for v in "${DONE[@]}"; do
    grep -h "saved version" "$WORK/logs/train-$v.log"
done >"$OUT/summary.txt"
cat "$OUT/summary.txt"
ls -la "$OUT"
echo "all done after $(( $(date +%s) - started )) s"
