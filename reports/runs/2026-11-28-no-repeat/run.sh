#!/bin/bash
# make run (default profile) on the fresh clone (installed by install.sh, then fast-forwarded to main), no venv activated, under the CPU lock.
set -uo pipefail
cd /work/run30/searchr3 && git pull -q --ff-only && git log --oneline -1 && git status --short | head
date; env -u VIRTUAL_ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /usr/bin/time -v -o ../make-run-time.txt make run; echo "make run rc $?"; date
