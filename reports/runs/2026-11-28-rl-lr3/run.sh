#!/bin/bash
# make run (default profile) on a clone of be9db0b that had run make run before (pulled forward; rm -rf checkpoints cache first, so every stage ran and encoded again), no venv activated, under the CPU lock.
set -uo pipefail
cd "${CLONE:?a clone of be9db0b with make install done}" && git log --oneline -1 && git status --short | head
date; env -u VIRTUAL_ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /usr/bin/time -v -o make-run-time.txt make run; echo "make run rc $?"; date
