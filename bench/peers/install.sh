#!/usr/bin/env bash
# Installs make bench's peers from PyPI, each in its own virtual environment under
# $ROUTERO_CACHE/bench-peers/<peer>: TensorZero (its gateway embedded in the Python package) and
# LiteLLM's proxy. A peer that fails to install is reported, its reason kept in
# <peer>.failed, and the bench prints its row as not measured with that reason.
# LiteLLM is pinned to 1.106.12: later releases' `proxy` extra needs `litellm-proxy` (1.110)
# or `litellm-proxy-extras` releases (1.108, 1.109) that the package index here does not have.
set -uo pipefail
dir="${ROUTERO_CACHE:-$HOME/.cache/routero}/bench-peers"
mkdir -p "$dir"

# install PEER REQUIREMENT: a fresh environment unless this requirement is already in it.
install() {
  local venv="$dir/$1" stamp
  stamp="$dir/$1/installed-$(echo "$2" | tr -c 'A-Za-z0-9.\n' '_')"
  [ -e "$stamp" ] && return 0
  rm -rf "$venv" "$dir/$1.failed"
  echo "bench: installing $2 into $venv"
  if python3 -m venv "$venv" && "$venv/bin/pip" install -q "$2" >"$dir/$1.log" 2>&1; then
    touch "$stamp"
  else
    tail -n 3 "$dir/$1.log" >"$dir/$1.failed"
    echo "bench: $1 not installed: $(tail -n 1 "$dir/$1.failed")" >&2
  fi
}

install tensorzero "tensorzero==2026.6.0"
install litellm "litellm[proxy]==1.106.12"
