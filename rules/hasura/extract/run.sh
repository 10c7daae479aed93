#!/bin/sh
# Re-read the Hasura value sets (rules/hasura/*.yaml, releases.tsv) from Hasura's git history:
#   HASURA_V1_GIT=<git dir of a copy with the v1.x tags, e.g. nizar-m/graphql-engine>
#   HASURA_MASTER_GIT=<git dir of upstream master, e.g. hasura/ or nhost/graphql-engine>
#   sh rules/hasura/extract/run.sh
# Regex extraction over every release (Go cobra tree, Haskell enum, TS/JSX literals), not a parser:
# review the diff of the YAML files it writes.
set -e
here=$(cd "$(dirname "$0")" && pwd)
export TW_RULES_HASURA="$here/.."
work=$(mktemp -d)
cp "$here"/*.py "$work"/
cd "$work"
python3 rels.py && python3 clitree.py >/dev/null && python3 ef.py >/dev/null && python3 ff.py >/dev/null \
  && python3 an2.py >/dev/null && python3 redux2.py 2>/dev/null >/dev/null && python3 gen.py
echo "wrote $TW_RULES_HASURA/*.yaml and releases.tsv (work files in $work)"
