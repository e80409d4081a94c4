#!/usr/bin/env bash
# Everything this project measures on a GPU, in as few device commands as possible.
#
#   bash benchmarks/gpu_suite.sh speed      # CUDA tests, epoch time of both pipelines (the
#                                           # training issue's target), detection, losses,
#                                           # augmentation: six steps whose time limits add up
#                                           # to 520 s, inside a device command's 10 minutes
#   bash benchmarks/gpu_suite.sh accuracy   # bench_accuracy.py: CE, MOIT, MOIT+ at 40% symmetric, fmnist preset, one seed
#
# It runs from the repository root without installing the package (PYTHONPATH), on an image
# that has torch, torchvision, numpy, pandas, scikit-learn, matplotlib, tqdm, Pillow and
# pytest. The CUDA tests and the accuracy benchmark read Fashion-MNIST from data/; copy it
# there first (`cp -r /usr/share/datasets/fashion-mnist data/`) and carry data/fashion-mnist.
# Each step's output is written to $OUT/<step>.txt (default benchmarks/results/gpu/); a step
# that fails or runs out of its time is reported and the next one still runs. PYTHON names the
# interpreter (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."

what=${1:-speed}
case "$what" in
  speed|accuracy) ;;
  *) echo "usage: bash benchmarks/gpu_suite.sh speed|accuracy" >&2; exit 2 ;;
esac
py=${PYTHON:-python3}
out=${OUT:-benchmarks/results/gpu}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=agg
status=0

step() {  # step NAME SECONDS COMMAND...
  local name=$1 seconds=$2
  shift 2
  echo "== $name (at most ${seconds} s): $*"
  timeout "$seconds" "$@" 2>&1 | tee "$out/$name.txt"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    echo "== $name: exit status $rc$([ "$rc" -eq 124 ] && echo ' (out of time)')" | tee -a "$out/$name.txt"
    status=1
  fi
}

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  nproc
} > "$out/device.txt" 2>&1
cat "$out/device.txt"

case "$what" in
  speed)
    step gpu-tests 100 "$py" -m pytest -q -m gpu tests -p no:cacheprovider
    # the target: a paper-cifar10-shaped MOIT epoch (50,000 x 3x32x32, PreAct ResNet-18,
    # detection included), batched pipeline under torch.compile vs the reference pipeline
    step epoch-compile 200 "$py" benchmarks/bench_epoch.py --compile
    step epoch-eager 80 "$py" benchmarks/bench_epoch.py --pipelines gpu
    step detection 80 "$py" benchmarks/bench_detection.py --backends torch-cuda \
      --sizes 50000 200000 --skip-slider
    step losses 30 "$py" benchmarks/bench_losses.py --device cuda
    step augment 30 "$py" benchmarks/bench_augment.py --device cuda
    ;;
  accuracy)
    step accuracy 570 "$py" benchmarks/bench_accuracy.py --seeds 1 --methods ce,moit,moit+ --settings symmetric:0.4 --runs-root runs/gpu-accuracy --log "$out/accuracy.jsonl" --out "$out/accuracy.md"
    ;;
esac
exit $status
