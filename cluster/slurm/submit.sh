#!/usr/bin/env bash
# Submit the committed pipeline to Slurm: one job array per level of the DAG
# (cluster/stage_levels.py), each array task one stage instance, each level starting when the
# one before it has succeeded; the last level is the report. Run it in a checkout on a file
# system the nodes share, on a commit whose params.yaml holds the suite to run. The tasks
# exchange outputs through the default DVC remote (the one beside the checkout works).
#   cluster/slurm/submit.sh [extra sbatch options, e.g. --partition=gpu --gres=gpu:1]
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
if [[ -n "$(git status --porcelain --untracked-files=no)" ]]; then
  echo "error: the checkout has uncommitted changes: commit them (every task runs a clean clone of HEAD)" >&2; exit 1
fi
if ! remote=$(dvc remote default 2>/dev/null); then
  echo "error: no default DVC remote: the tasks exchange outputs through it (dvc remote add -d <name> <url>)" >&2; exit 1
fi
remote_url=$(dvc config "remote.$remote.url")  # resolved here: a path relative to this checkout stays right in the tasks' clones
revision=$(git rev-parse HEAD)
mkdir -p cluster/slurm/logs
level=0 previous=""
while read -r stages; do
  count=$(wc -w <<<"$stages")
  previous=$(sbatch --parsable --job-name="tt-level-$level" --array="0-$((count - 1))" \
    ${previous:+--dependency=afterok:$previous} --output="cluster/slurm/logs/%x-%A_%a.out" "$@" \
    cluster/slurm/stage.sbatch "$level" "$revision" "$remote" "$remote_url")
  echo "level $level: $count stage(s), job $previous"
  level=$((level + 1))
done < <(python cluster/stage_levels.py)
