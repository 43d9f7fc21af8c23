#!/usr/bin/env bash
# Installs a build into a scratch prefix and builds a program against it two
# ways: pkg-config and CMake's find_package(kiln). Usage: check.sh BUILD_DIR
set -euo pipefail
build=$1
here=$(cd "$(dirname "$0")" && pwd)
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
libdir=$(ls -d "$prefix"/lib*/pkgconfig | head -1)
PKG_CONFIG_PATH=$libdir cc -std=c11 "$here/consumer.c" -o "$prefix/consumer-pc" \
  $(PKG_CONFIG_PATH=$libdir pkg-config --cflags kiln) \
  $(PKG_CONFIG_PATH=$libdir pkg-config --static --libs kiln)
LD_LIBRARY_PATH="$(dirname "$libdir")" "$prefix/consumer-pc"
cmake -S "$here" -B "$prefix/cbuild" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$prefix/cbuild" >/dev/null
"$prefix/cbuild/consumer"
