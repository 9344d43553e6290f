#!/usr/bin/env bash
# Bring your own embeddings: fit a transform, backfill a gallery and gate the update in CI,
# from .npz files that compatctl did not make.
#   bash examples/byo_embeddings/run.sh [WORK_DIR]
set -euo pipefail
work=${1:-runs/byo}
here=$(dirname "$0")
python "$here/make_embeddings.py" "$work"

# 1. Learn old -> new on the items both models embedded (the train split), with FastFill uncertainty.
compatctl fit-transform "$work/old_train.npz" "$work/new_train.npz" --out "$work/transform.safetensors" \
    uncertainty=true
compatctl fit-transform "$work/old_train.npz" "$work/new_train.npz" --out "$work/linear.safetensors" kind=linear

# 2. Day one: transform the stored old gallery; new-model queries search it at once.
compatctl backfill "$work/old_test.npz" --transform "$work/transform.safetensors" --out "$work/gallery_h"

# 3. Re-embed the 30 % of items the transform is least sure about (here: merged from new_test.npz).
compatctl backfill "$work/old_test.npz" --transform "$work/transform.safetensors" --out "$work/gallery_30" \
    --budget 0.3 --order uncertainty --new-embeddings "$work/new_test.npz"

# 4. Evaluate: old/old, new/old (no transform), new/h(old), and after the 30 % backfill.
compatctl eval "$work/old_test.npz" "$work/old_test.npz" --json "$work/old_old.json"
compatctl eval "$work/new_test.npz" "$work/gallery_h" --json "$work/new_h.json"
compatctl eval "$work/new_test.npz" "$work/gallery_30" --json "$work/new_30.json"
# The backfill curve from the transformed gallery to the new one, uncertainty order vs random.
compatctl eval "$work/new_test.npz" "$work/gallery_h" --backfill-with "$work/new_test.npz" --order uncertainty --steps 10
compatctl eval "$work/new_test.npz" "$work/gallery_h" --backfill-with "$work/new_test.npz" --order random --steps 10

# 5. The CI gate: ship only if new queries against the partly backfilled gallery beat old/old.
old_top1=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['metrics']['top1'])" "$work/old_old.json")
compatctl eval "$work/new_test.npz" "$work/gallery_30" --fail-under "top1=$old_top1"
echo "gate passed: new/backfilled top-1 is at least old/old ($old_top1)"
