#!/usr/bin/env bash
# Installs a build into a scratch prefix and builds consumer.c against it
# three ways: a static link through `pkg-config --static`, a shared link
# through pkg-config (run with LD_LIBRARY_PATH), and CMake's
# find_package(kiln) (the static and the shared target; the consumer project
# does not call find_package(CUDAToolkit) itself, and runs with the CUDA
# toolkit's directories off PATH). Each program prints the devices it sees
# and fails if cuBLASLt is mapped without a CUDA device. No program may
# depend on a shared CUDA library. Usage: check.sh BUILD_DIR
set -euo pipefail
build=$1
here=$(cd "$(dirname "$0")" && pwd)
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
pcdir=$(ls -d "$prefix"/lib*/pkgconfig | head -1)
libdir=$(dirname "$pcdir")
pc() { PKG_CONFIG_PATH=$pcdir pkg-config "$@" kiln; }

# (nm's whole output first: grep -q ending the pipe early would fail it under pipefail)
symbols=$(nm -g "$libdir/libkiln.a" 2>/dev/null || true)
if grep -q ' T kn__cuda_backend_def$' <<<"$symbols"; then cuda=yes; else cuda=no; fi
echo "installed kiln: CUDA backend built: $cuda"
echo "pkg-config --static --libs kiln: $(pc --static --libs)"

fail() { echo "FAIL: $*" >&2; exit 1; }
needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' '; }
# $1 program, $2 yes|no: whether it must need libkiln.so
check_needs() {
  local n; n=$(needed "$1")
  echo "  $(basename "$1") needs: $n"
  case " $n " in *" libcublas"*|*" libcudart"*|*" libcuda."*) fail "$1 depends on a shared CUDA library ($n)" ;; esac
  case " $n " in
    *" libkiln.so"*) [ "$2" = yes ] || fail "$1 was to link libkiln.a statically but needs libkiln.so" ;;
    *) [ "$2" = no ] || fail "$1 was to link libkiln.so but does not need it" ;;
  esac
}

echo "== static link: cc consumer.c \$(pkg-config --static --cflags --libs kiln)"
# Only the archive is visible, so -lkiln cannot pick the shared library.
mkdir "$prefix/hidden"
mv "$libdir"/libkiln.so* "$prefix/hidden/"
cc -std=c11 "$here/consumer.c" -o "$prefix/consumer-static" $(pc --static --cflags --libs)
mv "$prefix/hidden"/libkiln.so* "$libdir/"
check_needs "$prefix/consumer-static" no
"$prefix/consumer-static"

echo "== shared link: cc consumer.c \$(pkg-config --cflags --libs kiln), LD_LIBRARY_PATH"
cc -std=c11 "$here/consumer.c" -o "$prefix/consumer-shared" $(pc --cflags --libs)
check_needs "$prefix/consumer-shared" yes
LD_LIBRARY_PATH=$libdir "$prefix/consumer-shared"

echo "== CMake: find_package(kiln), kiln::kiln_static and kiln::kiln_shared"
# Without the toolkit on PATH: kilnConfig.cmake must find it by itself.
path_without_cuda=$(printf '%s' "$PATH" | tr ':' '\n' | grep -v -i cuda | paste -sd: -)
PATH=$path_without_cuda cmake -S "$here" -B "$prefix/cbuild" -DCMAKE_PREFIX_PATH="$prefix" >"$prefix/cmake.log" 2>&1 ||
  { cat "$prefix/cmake.log"; fail "configuring a find_package(kiln) project"; }
PATH=$path_without_cuda cmake --build "$prefix/cbuild" >"$prefix/build.log" 2>&1 ||
  { cat "$prefix/build.log"; fail "building a find_package(kiln) project"; }
check_needs "$prefix/cbuild/consumer" no
"$prefix/cbuild/consumer"
check_needs "$prefix/cbuild/consumer_shared" yes
LD_LIBRARY_PATH=$libdir "$prefix/cbuild/consumer_shared"

echo "== peak resident memory of the installed kiln (no device is used by --version)"
# With cuBLASLt linked, --version took about 200 MB; without it, about 6 MB.
if [ -x "$prefix/bin/kiln" ]; then
  cc -std=c11 -O1 "$here/peak_rss.c" -o "$prefix/peak_rss"
  v=$("$prefix/peak_rss" "$prefix/bin/kiln" --version)
  d=$("$prefix/peak_rss" "$prefix/bin/kiln" devices)
  echo "  kiln --version: $((v / 1024)) MiB; kiln devices: $((d / 1024)) MiB (peak RSS; devices includes each backend's probe)"
  [ "$v" -le $((32 * 1024)) ] || fail "kiln --version uses $((v / 1024)) MiB (more than 32): a large library is loaded at start"
else
  echo "  SKIPPED: the build installs no kiln program"
fi
echo "install check passed (CUDA backend built: $cuda)"
