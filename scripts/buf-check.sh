#!/usr/bin/env bash
# `buf lint` on proto/, then `buf breaking` against the proto/ of the main branch (FILE rules).
# main's proto/ is laid out beside this checkout's buf.yaml and vendored googleapis files, so the
# comparison works whether or not main has a buf.yaml yet; skipped only when main has no proto/.
set -euo pipefail
cd "$(dirname "$0")/.."
buf=node_modules/.bin/buf
"$buf" lint
echo "buf lint: ok"
base=""
for ref in main origin/main; do
  if git rev-parse --verify --quiet "$ref^{commit}" >/dev/null; then base=$ref; break; fi
done
if [ -z "$base" ] || ! git cat-file -e "$base:proto" 2>/dev/null; then
  echo "buf breaking: skipped (no main branch with a proto/ folder to compare with)"
  exit 0
fi
against=$(mktemp -d)
trap 'rm -rf "$against"' EXIT
git archive "$base" proto | tar -x -C "$against"
cp buf.yaml "$against/"
cp -r third_party "$against/"
"$buf" breaking --against "$against"
echo "buf breaking against $base: ok"
