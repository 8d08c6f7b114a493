#!/usr/bin/env python3
"""What an fsync costs on the file system of DIR: the floor under a single-client write.

    bench/fsync-probe.py DIR [WRITES]      (default 2000 writes per file)

Each writer appends 300-byte records (about what a 256-byte SET is in the log) to a file of
its own, preallocated like a log segment, and calls fdatasync after each; the probe reports
the latency of those fdatasyncs for one writer alone and for three at once. Three at once is
what a 3-node cluster on one disk does for every write: the leader and both followers each
make the entry durable, and the write commits once two of them have.
"""

import os
import sys
import threading
import time

RECORD = b"x" * 300
SEGMENT = 8 << 20


def writer(path, writes, out, errors):
    try:
        write_loop(path, writes, out)
    except OSError as e:
        errors.append(e)


def write_loop(path, writes, out):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.posix_fallocate(fd, 0, SEGMENT)
        os.fsync(fd)
        latencies = []
        for i in range(writes):
            os.pwrite(fd, RECORD, (i * len(RECORD)) % SEGMENT)
            started = time.perf_counter()
            os.fdatasync(fd)
            latencies.append(time.perf_counter() - started)
        out.extend(latencies)
    finally:
        os.close(fd)
        os.unlink(path)


def run(directory, writers, writes):
    out, errors = [], []
    threads = [
        threading.Thread(
            target=writer,
            args=(os.path.join(directory, f"fsync-probe-{i}"), writes, out, errors),
        )
        for i in range(writers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        sys.exit(f"fsync-probe: {errors[0]}")
    out.sort()
    return out[len(out) // 2] * 1e6, out[len(out) * 9 // 10] * 1e6


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__.strip().splitlines()[2].strip())
    directory = sys.argv[1]
    if not os.path.isdir(directory):
        sys.exit(f"fsync-probe: {directory} is not a directory")
    try:
        writes = int(sys.argv[2]) if len(sys.argv) == 3 else 2000
    except ValueError:
        writes = 0
    if writes < 1:
        sys.exit("fsync-probe: WRITES must be a positive number")
    alone = run(directory, 1, writes)
    three = run(directory, 3, writes)
    print(
        f"fdatasync after a 300-byte append: alone p50 {alone[0]:.0f} us (p90 {alone[1]:.0f}),"
        f" three at once p50 {three[0]:.0f} us (p90 {three[1]:.0f})"
    )


if __name__ == "__main__":
    main()
