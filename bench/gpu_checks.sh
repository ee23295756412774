#!/usr/bin/env bash
# The GPU figures of docs/benchmarks.md in one run, for a lent GPU machine (issues 4 and 16):
#   1. one epoch at 5-core Video_Games size (95K sequences, 25.6K items, hidden 64): today's
#      defaults (sampled softmax), then full softmax (`ce`) eager, at batch 1,024, and with
#      torch.compile at batch 1,024 (issue 16's target: 1.0 s): sequences per second,
#      seconds, peak memory;
#   2. a 0-core `ce` epoch (2.8M sequences, 137.2K items): its batches' logits pass the
#      1 GiB limit, so the loss is computed chunk by chunk and peak memory stays bounded;
#   3. full-catalogue scoring at 0-core size (2.8M users x 137.2K items; target 10 s);
#   4. the paper's Games settings (BCE) against the plain reference, on the GPU;
#   5. quality of the full-softmax loss on the paper's Games data, trained on the GPU;
#   6. the item table's row-wise updates against dense ones (issue 27): 60K users over
#      25.6K, 137.2K (0-core) and 2.75M (Books 0-core) items, 40 batches each.
# Usage, from the repository root: bench/gpu_checks.sh [VIDEO_TXT] [LOG_DIR]
# About 9 minutes on an H100; the checks run most important first, each with its own limit.
set -uo pipefail

video_txt=${1:-../shared/data/sasrec-video/Video.txt}
log_dir=${2:-build/gpu_checks}
mkdir -p "$log_dir"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TQDM_DISABLE=1
python=${PYTHON:-python3}

# Each check has its own time limit, so that one slow check leaves the others their turn.
check() {
    local name=$1 limit=$2
    shift 2
    echo "== $name"
    timeout "$limit" "$python" "$@" 2>&1 | tee "$log_dir/$name.log" | grep -v "^\s*$"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
five_core='--device cuda --synthetic-users 95000 --synthetic-items 25600 --skip-reference'
zero_core='--device cuda --synthetic-users 2800000 --synthetic-items 137200 --skip-reference'
# shellcheck disable=SC2086  # five_core and zero_core are lists of arguments
check epoch_defaults 90 bench/train_throughput.py $five_core --hparams '{"hidden_size": 64}'
check item_table_rows 120 bench/item_table.py --device cuda --batches 40 \
    --items 25600 137200 2750000
# shellcheck disable=SC2086
check epoch_ce_eager 90 bench/train_throughput.py $five_core \
    --hparams '{"loss": "ce", "hidden_size": 64}'
# shellcheck disable=SC2086
check epoch_ce_batch_1024 60 bench/train_throughput.py $five_core \
    --hparams '{"loss": "ce", "hidden_size": 64, "batch_size": 1024}'
# shellcheck disable=SC2086
check epoch_ce_compiled_batch_1024 180 bench/train_throughput.py $five_core \
    --hparams '{"loss": "ce", "hidden_size": 64, "batch_size": 1024, "compile": true}'
# shellcheck disable=SC2086
check epoch_ce_zero_core 240 bench/train_throughput.py $zero_core \
    --hparams '{"loss": "ce", "hidden_size": 64}'
check scoring_zero_core 120 bench/scoring.py --users 2800000 --items 137200 --device cuda
check paper_settings 90 bench/train_throughput.py --device cuda --source "$video_txt"
check quality_ce 240 bench/losses.py --source "$video_txt" \
    --config 'ce={"loss": "ce", "device": "cuda", "max_epochs": 80, "patience": 3}'
