#!/usr/bin/env bash
# Issue 4's GPU figures in one run, for a lent GPU machine (docs/benchmarks.md):
#   1. one epoch at 5-core Video_Games size (95K sequences, 25.6K items, hidden 64, full
#      softmax), eager and with torch.compile: sequences per second, seconds, peak memory;
#   2. the paper's Games settings (BCE) against the plain reference, on the GPU;
#   3. quality of the full-softmax loss on the paper's Games data, trained on the GPU.
# Usage, from the repository root: bench/gpu_checks.sh [VIDEO_TXT] [LOG_DIR]
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
# shellcheck disable=SC2086  # five_core is a list of arguments
check epoch_eager 90 bench/train_throughput.py $five_core \
    --hparams '{"loss": "ce", "hidden_size": 64}'
# shellcheck disable=SC2086
check epoch_eager_batch_1024 60 bench/train_throughput.py $five_core \
    --hparams '{"loss": "ce", "hidden_size": 64, "batch_size": 1024}'
check paper_settings 90 bench/train_throughput.py --device cuda --source "$video_txt"
check quality_ce 240 bench/losses.py --source "$video_txt" \
    --config 'ce={"loss": "ce", "device": "cuda", "max_epochs": 80, "patience": 3}' \
    --config 'ce_dropout_0.5={"loss": "ce", "device": "cuda", "max_epochs": 80, "patience": 3, "dropout": 0.5}'
# shellcheck disable=SC2086
check epoch_compiled 180 bench/train_throughput.py $five_core \
    --hparams '{"loss": "ce", "hidden_size": 64, "compile": true}'
