#!/usr/bin/env bash
# The PyTorch-vs-MLX runs behind Results.md's side-by-side tables, one training at a time.
#   bash scripts/side_by_side.sh DATA_DIR
# SmallCNN: its recipe (dropout on) for 2 epochs, 3 seeds per framework, each framework's own
# initialisation. Seeds are far apart so that no two runs share an epoch's data order.
# The fast net: 1 epoch in both frameworks from the same weights (the PyTorch run's initial.pt).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: side_by_side.sh DATA_DIR}
OUT=runs/side-by-side
OPENBLAS=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0
MLX_ENV=()
# mlx[cpu] on Linux ships a slow reference BLAS; Debian's OpenBLAS is ~6x faster
if [ "$(uname -s)" = Linux ] && [ -e "$OPENBLAS" ]; then MLX_ENV=(env LD_PRELOAD="$OPENBLAS"); fi
common=(--data-dir "$DATA" --no-download)
for seed in ${SEEDS:-1111 2222 3333}; do
    python scripts/fit.py --model small_cnn --epochs 2 --seed $seed --accelerator cpu "${common[@]}" \
        --output-dir $OUT/small_cnn-2ep/pytorch-seed$seed
    "${MLX_ENV[@]}" python scripts/fit_mlx.py --model small_cnn --epochs 2 --seed $seed --cpu "${common[@]}" \
        --output-dir $OUT/small_cnn-2ep/mlx-seed$seed
done
python scripts/fit.py --model fast --epochs 1 --accelerator cpu "${common[@]}" --output-dir $OUT/fast-1ep/pytorch-seed0
"${MLX_ENV[@]}" python scripts/fit_mlx.py --model fast --epochs 1 --cpu "${common[@]}" \
    --weights $OUT/fast-1ep/pytorch-seed0/checkpoints/initial.pt --output-dir $OUT/fast-1ep/mlx-seed0
