#!/usr/bin/env bash
# install-npm-package.sh NAME VERSION FILE: installs the npm package NAME@VERSION into
# $ROUTERO_CACHE/NAME-VERSION when FILE (a path inside its node_modules/NAME) is missing, and
# prints where it is. Only the npm registry is reached.
set -euo pipefail
name="$1" version="$2" file="$3"
CACHE="${ROUTERO_CACHE:-$HOME/.cache/routero}"
dir="$CACHE/${name##*/}-$version"
if [ ! -e "$dir/node_modules/$name/$file" ]; then
  echo "setup: installing $name $version" >&2
  npm install --prefix "$dir" --no-save --no-audit --no-fund --silent "$name@$version"
fi
echo "$dir/node_modules/$name/$file"
