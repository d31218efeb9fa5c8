#!/usr/bin/env bash
# The PyTorch-vs-MLX runs behind Results.md's side-by-side tables, one training at a time.
#   bash scripts/side_by_side.sh DATA_DIR
# SmallCNN: its recipe (dropout on) for 2 epochs, 3 seeds per framework, each framework's own
# initialisation (small_cnn-2ep), and paired: MLX from each PyTorch run's initial.pt, so both
# start from the same weights and see the same batches (small_cnn-2ep-paired).
# Seeds are far apart so that no two runs share an epoch's data order.
# The fast net: 1 epoch in both frameworks from the same weights (the PyTorch run's initial.pt).
# Then AdamW SmallCNN (paired), the fast Muon recipe (PyTorch, 8 epochs), and the fast recipe
# for 1 epoch in MLX on 2 processes (mlx.launch, ring backend on this machine; 512 images per
# process, so a step sees the recipe's 1,024).
# fit_mlx.py preloads OpenBLAS for mlx[cpu] on Linux by itself (cifar_mlx_adapter/blas.py).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: side_by_side.sh DATA_DIR}
OUT=runs/side-by-side
common=(--data-dir "$DATA" --no-download)
for seed in ${SEEDS:-1111 2222 3333}; do
    python scripts/fit.py --model small_cnn --epochs 2 --seed $seed --accelerator cpu "${common[@]}" \
        --output-dir $OUT/small_cnn-2ep/pytorch-seed$seed
    python scripts/fit_mlx.py --model small_cnn --epochs 2 --seed $seed --cpu "${common[@]}" \
        --output-dir $OUT/small_cnn-2ep/mlx-seed$seed
done
for seed in ${SEEDS:-1111 2222 3333}; do
    python scripts/fit.py --model small_cnn --epochs 2 --seed $seed --accelerator cpu "${common[@]}" \
        --output-dir $OUT/small_cnn-2ep-paired/pytorch-seed$seed
    python scripts/fit_mlx.py --model small_cnn --epochs 2 --seed $seed --cpu "${common[@]}" \
        --weights $OUT/small_cnn-2ep-paired/pytorch-seed$seed/checkpoints/initial.pt \
        --output-dir $OUT/small_cnn-2ep-paired/mlx-seed$seed
done
python scripts/fit.py --model fast --epochs 1 --accelerator cpu "${common[@]}" --output-dir $OUT/fast-1ep/pytorch-seed0
python scripts/fit_mlx.py --model fast --epochs 1 --cpu "${common[@]}" \
    --weights $OUT/fast-1ep/pytorch-seed0/checkpoints/initial.pt --output-dir $OUT/fast-1ep/mlx-seed0
# AdamW (the original MLX project's optimiser) on SmallCNN, paired as above.
for seed in ${SEEDS:-1111 2222 3333}; do
    python scripts/fit.py --model small_cnn --optimizer adamw --epochs 2 --seed $seed --accelerator cpu "${common[@]}" \
        --output-dir $OUT/small_cnn_adamw-2ep-paired/pytorch-seed$seed
    python scripts/fit_mlx.py --model small_cnn --optimizer adamw --epochs 2 --seed $seed --cpu "${common[@]}" \
        --weights $OUT/small_cnn_adamw-2ep-paired/pytorch-seed$seed/checkpoints/initial.pt \
        --output-dir $OUT/small_cnn_adamw-2ep-paired/mlx-seed$seed
done
# The fast net's Muon recipe (airbench94_muon), its full 8 epochs; validation skipped
# (--limit-val-batches 0 changes no weight; it saves 8 passes over the test set).
for seed in ${MUON_SEEDS:-0 1}; do
    python scripts/fit.py --model fast --optimizer muon --seed $seed --accelerator cpu --limit-val-batches 0 \
        "${common[@]}" --output-dir runs/muon/fast_muon-8ep/pytorch-seed$seed
done
# The fast recipe for 1 epoch on 2 MLX processes (data parallel), as the 1-process runs above.
mlx.launch -n 2 --python "$(command -v python)" scripts/fit_mlx.py --model fast --epochs 1 --batch-size 512 --cpu \
    "${common[@]}" --output-dir runs/distributed/fast-1ep/mlx-2proc-seed0
