#!/usr/bin/env bash
# Builds the C library (debug), compiles tests/c/test_api.c with -Wall -Wextra -Werror and
# AddressSanitizer/UBSan against it, starts a Distribution registry on 127.0.0.1, runs the
# test, stops the registry.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --locked --quiet -p oci-packer-c
work=$(mktemp -d)
trap 'kill "${reg_pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s/registry\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$work" "$port" > "$work/registry.yml"
docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 &
reg_pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
cc -std=c11 -Wall -Wextra -Werror -g -fsanitize=address,undefined -fno-omit-frame-pointer -Iinclude \
    tests/c/test_api.c target/debug/liboci_packer.a -lpthread -ldl -lm -o "$work/test_api"
mkdir "$work/data"
RUST_BACKTRACE=0 ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1 "$work/test_api" "$work/data" "127.0.0.1:$port"

# The install: library, header and pkg-config file, used the way a C project would.
PROFILE=debug bash scripts/install-c "$work/prefix" >/dev/null
export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
[ "$(pkg-config --modversion oci_packer)" = "$(sed -n 's/^version = "\(.*\)"/\1/p' bindings/c/Cargo.toml | head -1)" ]
printf '#include <stdio.h>\n#include <string.h>\n#include "oci_packer.h"\nint main(void) { puts(oci_packer_version()); return strlen(oci_packer_version()) == 0; }\n' > "$work/hello.c"
# shellcheck disable=SC2046
cc -Wall -Wextra -Werror "$work/hello.c" $(pkg-config --cflags --libs oci_packer) -o "$work/hello"
LD_LIBRARY_PATH="$work/prefix/lib" "$work/hello"
echo "C API: installed with pkg-config, linked against liboci_packer.so"
