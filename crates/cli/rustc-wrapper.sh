#!/bin/sh
# Cargo runs every rustc call for bpm's own crates through this script
# (`build.rustc-workspace-wrapper` in .cargo/config.toml): $1 is rustc, the
# rest are its arguments. Every call passes through unchanged except one:
# the `bpm` binary, built for Linux with glibc, is linked statically and
# position-dependent.
#
# Why: every bpm command is a short-lived process, and loading the C
# library, libm and libgcc_s, with the page faults that brings, was about a
# quarter of a command's start. `bpm --version` took 1.16 ms dynamically
# linked and 0.85 ms static (alternating runs, 300 each); a Rust hello-world
# takes about as long as the static `bpm`. Cargo has no stable way to give
# these flags to one crate only, and as global RUSTFLAGS they would break
# the proc-macro crates, which cannot be linked statically.
#
# The flags only affect the final link: the dependencies stay as compiled.
# A static-PIE (crt-static alone) is no faster than the dynamic binary,
# since its start then applies the relocations itself, hence the static
# relocation model. Set BPM_DYNAMIC=1 (or BPM_PIE=1) to link dynamically;
# the script does so by itself where the C library's static archives are
# missing (Fedora ships them apart, as glibc-static).
#
# One difference a static binary brings: host names (a redis:// URL's host)
# are looked up with what the C library has built in, /etc/hosts and DNS;
# name-service plugins such as mdns or sss may not load. Build with
# BPM_DYNAMIC=1 where a store's host is only known through one of them.
rustc=$1
shift

case " $* " in
*" --crate-name bpm "*" --crate-type bin "*) ;;
*) exec "$rustc" "$@" ;;
esac

on() { [ -n "$1" ] && [ "$1" != 0 ]; }
if on "${BPM_DYNAMIC:-}" || on "${BPM_PIE:-}"; then
    exec "$rustc" "$@"
fi

# The target: --target's value, else the host rustc builds for.
target=
previous=
for arg in "$@"; do
    case $arg in
    --target=*) target=${arg#--target=} ;;
    esac
    if [ "$previous" = --target ]; then target=$arg; fi
    previous=$arg
done
if [ -z "$target" ]; then
    target=$("$rustc" -vV | sed -n 's/^host: //p')
fi
case $target in
*-linux-gnu*) ;;
*) exec "$rustc" "$@" ;;
esac

# cc prints the bare name back when it has no such file.
cc=${CC:-cc}
for archive in libc.a libgcc_eh.a; do
    case $("$cc" -print-file-name="$archive" 2>/dev/null) in
    /*) ;;
    *) exec "$rustc" "$@" ;;
    esac
done

exec "$rustc" "$@" -C target-feature=+crt-static -C relocation-model=static
