#!/usr/bin/env bash
# Builds the bare-metal i386 kernel that runs SFBufCore (the package's own source files,
# compiled here as Embedded Swift) and its self-test.
#
#   kernel/build.sh                       -> kernel/build/selftest/sfbuf-kernel.elf
#   kernel/build.sh --mutant no-shootdown -> kernel/build/mutant-no-shootdown/sfbuf-kernel.elf
#
# Mutants (each injects one SFBufCore fault, chosen at build time):
#   no-shootdown          .skipShootdownOnHit   (SFBUF_MUTANT_NO_SHOOTDOWN)
#   no-local-invalidate   .skipLocalInvalidate  (SFBUF_MUTANT_NO_LOCAL_INVALIDATE)
#   keep-cpuset           .keepCPUSetOnRemap    (SFBUF_MUTANT_KEEP_CPUSET)
# Prints the image's path on the last line.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
variant=selftest
defines=()
while [ $# -gt 0 ]; do
  case "$1" in
    --mutant)
      [ $# -ge 2 ] || { echo "build.sh: --mutant needs a name" >&2; exit 2; }
      case "$2" in
        no-shootdown) defines=(-D SFBUF_MUTANT_NO_SHOOTDOWN) ;;
        no-local-invalidate) defines=(-D SFBUF_MUTANT_NO_LOCAL_INVALIDATE) ;;
        keep-cpuset) defines=(-D SFBUF_MUTANT_KEEP_CPUSET) ;;
        *) echo "build.sh: unknown mutant '$2'" >&2; exit 2 ;;
      esac
      variant="mutant-$2"
      shift 2
      ;;
    *) echo "usage: build.sh [--mutant no-shootdown|no-local-invalidate|keep-cpuset]" >&2; exit 2 ;;
  esac
done

# clang and ld.lld from the Swift toolchain: the system ones may not target i386.
swiftc=$(command -v swiftc)
bin=$(dirname "$(readlink -f "$swiftc")")
target=i686-unknown-none-elf
out="$here/build/$variant"
mkdir -p "$out"
rm -f "$out"/*.o

cflags=(-target "$target" -ffreestanding -nostdlib -fno-stack-protector -fno-pic -O2
  -Wall -Wextra -Werror -I "$here/include")
for src in boot.S trampoline.S isr.S libc.c; do
  "$bin/clang" "${cflags[@]}" -c "$here/boot/$src" -o "$out/${src%.*}.o"
done

# -assert-config Debug keeps the messages of fatalError and precondition (Embedded Swift
# drops them otherwise), so misuse caught by the core is reported by name on the console.
swiftflags=(-target "$target" -enable-experimental-feature Embedded -wmo -parse-as-library
  -Osize -assert-config Debug -swift-version 6 -Xfrontend -disable-stack-protector
  -Xcc -ffreestanding)
# The portable core, unchanged, as its own module.
"$swiftc" "${swiftflags[@]}" -module-name SFBufCore \
  -emit-module -emit-module-path "$out/SFBufCore.swiftmodule" \
  -c "$root"/Sources/SFBufCore/*.swift -o "$out/SFBufCore.o"
# The kernel, importing it and the C face (include/module.modulemap).
"$swiftc" "${swiftflags[@]}" -module-name Kernel -I "$out" -I "$here/include" \
  ${defines[@]+"${defines[@]}"} -c "$here"/Sources/*.swift -o "$out/Kernel.o"

"$bin/ld.lld" -m elf_i386 -static -nostdlib --gc-sections -T "$here/boot/linker.ld" \
  -o "$out/sfbuf-kernel.elf" "$out"/*.o
echo "$out/sfbuf-kernel.elf"
