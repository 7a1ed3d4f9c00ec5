#!/usr/bin/env bash
# Builds the C library (debug, with the test hooks), compiles tests/c/test_api.c with
# -Wall -Wextra -Werror and AddressSanitizer/UBSan against it, starts two Distribution
# registries on 127.0.0.1 (one open, one with htpasswd), runs the test, stops them. Then
# installs the release library with scripts/install-c and checks it the way a C project
# would: pkg-config, a program linked against it, and no test hook among its symbols.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --locked --quiet -p oci-packer-c --features test-hooks
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# start_registry NAME PORT [AUTH-YAML]
start_registry() {
    printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s/%s\nhttp:\n  addr: 127.0.0.1:%s\n%s' \
        "$work" "$1" "$2" "${3:-}" > "$work/$1.yml"
    docker-registry serve "$work/$1.yml" > "$work/$1.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return; sleep 0.1; done
    echo "registry $1 did not start"; cat "$work/$1.log"; exit 1
}
port=$(free_port)
start_registry open "$port"
auth_port=$(free_port)
htpasswd -Bbn c-user c-secret > "$work/htpasswd"
start_registry auth "$auth_port" "auth:
  htpasswd:
    realm: c-test
    path: $work/htpasswd
"
cc -std=c11 -Wall -Wextra -Werror -g -fsanitize=address,undefined -fno-omit-frame-pointer -Iinclude \
    tests/c/test_api.c target/debug/liboci_packer.a -lpthread -ldl -lm -o "$work/test_api"
mkdir "$work/data"
RUST_BACKTRACE=0 ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1 \
    "$work/test_api" "$work/data" "127.0.0.1:$port" "127.0.0.1:$auth_port" c-user c-secret

# The install: release library, header and pkg-config file, used the way a C project would.
bash scripts/install-c "$work/prefix" >/dev/null
export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
[ "$(pkg-config --modversion oci_packer)" = "$(sed -n 's/^version = "\(.*\)"/\1/p' bindings/c/Cargo.toml | head -1)" ]
if nm -D --defined-only "$work/prefix/lib/liboci_packer.so" | grep -q test_panic; then
    echo "the release library exports a test hook"; exit 1
fi
if grep -q test_panic "$work/prefix/include/oci_packer.h"; then
    echo "the public header declares a test hook"; exit 1
fi
printf '#include <stdio.h>\n#include <string.h>\n#include "oci_packer.h"\nint main(void) { puts(oci_packer_version()); return strlen(oci_packer_version()) == 0; }\n' > "$work/hello.c"
# shellcheck disable=SC2046
cc -Wall -Wextra -Werror "$work/hello.c" $(pkg-config --cflags --libs oci_packer) -o "$work/hello"
"$work/hello"
echo "C API: release library installed with pkg-config (no test hook exported), linked and run"
