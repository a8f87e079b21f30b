#!/bin/sh
# Regenerate fs.runs, the filesystem inside the example1 disk.
#
# The filesystem is ext2 (4 KiB blocks, label "example1", one file,
# hello.txt), made reproducible with a fixed UUID, hash seed and time.
# fs.runs stores only its non-zero bytes: repeated records of
#   u64 offset (little-endian, from the start of the partition)
#   u32 length (little-endian)
#   the bytes
# after an 8-byte header "NBDKRUNS". Needs mke2fs (e2fsprogs) and python3.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/root"
printf 'Hello from the nbdkit example1 disk.\n' > "$tmp/root/hello.txt"
touch -d @1700000000 "$tmp/root/hello.txt" "$tmp/root"
# 202752 sectors: the partition from sector 2048 to the end of 100 MiB.
truncate -s $((202752 * 512)) "$tmp/fs.img"
uuid=6e626b69-742d-6578-616d-706c65310000
E2FSPROGS_FAKE_TIME=1700000000 mke2fs -q -t ext2 -b 4096 -m 0 -L example1 \
    -U "$uuid" -E "hash_seed=$uuid,root_owner=0:0,lazy_itable_init=0" \
    -d "$tmp/root" -F "$tmp/fs.img"
python3 - "$tmp/fs.img" "$here/fs.runs" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
out = [b"NBDKRUNS"]
i, n = 0, len(data)
while i < n:
    if data[i] == 0:
        i += 1
        continue
    # A run ends at 16 zero bytes in a row (or the end).
    j, zeros = i, 0
    while j < n and zeros < 16:
        zeros = zeros + 1 if data[j] == 0 else 0
        j += 1
    end = j - zeros
    out.append(struct.pack("<QI", i, end - i) + data[i:end])
    i = j
open(sys.argv[2], "wb").write(b"".join(out))
PY
