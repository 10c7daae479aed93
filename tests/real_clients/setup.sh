#!/usr/bin/env bash
# Install the real clients the real-client tests drive (Next.js with React, the Prisma CLI) into a
# cache outside the repository, once: ${TELEWARDEN_REALCLIENTS:-~/.cache/telewarden-realclients}.
# Idempotent; .ci/run calls it before the suite. Versions are pinned so a run is reproducible.
set -euo pipefail
cache=${TELEWARDEN_REALCLIENTS:-$HOME/.cache/telewarden-realclients}
NEXT_VERSION=${TELEWARDEN_NEXT_VERSION:-15.5.29}
NEXT16_VERSION=${TELEWARDEN_NEXT16_VERSION:-16.0.3}  # the next generation: Turbopack builds by default
PRISMA_VERSION=${TELEWARDEN_PRISMA_VERSION:-6.19.3}
if ! command -v npm >/dev/null 2>&1; then
  echo "real clients: npm not found, skipping the install (the real-client tests will skip)" >&2
  exit 0
fi
install() {  # folder, stamp, packages...
  local dir=$1 stamp=$2; shift 2
  if [ -f "$dir/$stamp" ]; then return 0; fi
  mkdir -p "$dir"
  # a package.json without "type": "commonjs" (npm init -y writes it, and `next build` breaks on it)
  [ -f "$dir/package.json" ] || printf '{"name":"%s","version":"1.0.0","private":true}\n' "$(basename "$dir")" >"$dir/package.json"
  echo "real clients: npm install $* in $dir" >&2
  # one retry; if the registry still fails, say so and go on: the real-client tests then skip,
  # naming the reason, instead of the whole CI run failing here
  if (cd "$dir" && npm install --no-audit --no-fund --loglevel=error "$@" >&2) ||
     (sleep 5 && cd "$dir" && npm install --no-audit --no-fund --loglevel=error "$@" >&2); then
    touch "$dir/$stamp"
  else
    echo "real clients: npm install $* failed; the real-client tests will skip" >&2
  fi
}
install "$cache/next" ".installed-$NEXT_VERSION" "next@$NEXT_VERSION" react@19 react-dom@19
install "$cache/next16" ".installed-$NEXT16_VERSION" "next@$NEXT16_VERSION" react@19 react-dom@19
install "$cache/prisma" ".installed-$PRISMA_VERSION" "prisma@$PRISMA_VERSION"
echo "$cache"
