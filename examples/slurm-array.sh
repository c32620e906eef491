#!/bin/bash
# Run one brgen stage as a Slurm job array: each array task is one shard of the stage.
#
# brgen reads SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT, SLURM_ARRAY_TASK_MIN and SLURM_ARRAY_TASK_STEP,
# so task i of an array of N tasks builds shard i/N. Submit one array per stage and chain them with
# dependencies, so that a stage starts only after every task of the stage before it succeeded:
#
#   export BRGEN_ROOT=/data/br-gen
#   jid=$(sbatch --parsable --array=0-7 examples/slurm-array.sh reals --recipe manifests/recipes/br-gen.yaml)
#   jid=$(sbatch --parsable --array=0-7 --dependency=afterok:$jid examples/slurm-array.sh masks)
#   jid=$(sbatch --parsable --array=0-7 --dependency=afterok:$jid examples/slurm-array.sh lama --weights ~/weights/big-lama.pt)
#   sbatch --array=0 --dependency=afterok:$jid examples/slurm-array.sh verify
#
# Usage: sbatch [--array=0-N] examples/slurm-array.sh STAGE [options of `brgen build` or `brgen inpaint`]
#   STAGE: reals, masks or verify, or a method name (lama, opencv-telea, ...) to run `brgen inpaint`.
# Environment: BRGEN_ROOT (required), PYTHON (default: python, the one of the active environment).
# A task that is pre-empted and requeued, or resubmitted, continues where it stopped.
#
#SBATCH --job-name=brgen
#SBATCH --array=0-7
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=8
#SBATCH --gres=gpu:1
#SBATCH --time=12:00:00
#SBATCH --requeue
#SBATCH --output=brgen-%A_%a.log

set -euo pipefail

: "${BRGEN_ROOT:?set BRGEN_ROOT to the dataset root folder}"
if [ $# -lt 1 ]; then
    echo "usage: sbatch examples/slurm-array.sh STAGE [brgen options]" >&2
    exit 2
fi
stage=$1
shift
python=${PYTHON:-python}

case "$stage" in
    reals | masks | verify)
        exec "$python" -m brgen_build build --stage "$stage" --root "$BRGEN_ROOT" --no-progress "$@"
        ;;
    *)
        exec "$python" -m brgen_build inpaint --method "$stage" --root "$BRGEN_ROOT" --no-progress "$@"
        ;;
esac
