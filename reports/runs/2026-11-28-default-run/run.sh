#!/bin/bash
# make run (default profile) on a fresh clone of main, no venv activated, under the CPU lock.
set -uo pipefail
cd /work/run28 && rm -rf searchr3 && git clone -q /work/main searchr3 && cd searchr3 && git log --oneline -1
env -u VIRTUAL_ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin make install > ../install.log 2>&1; echo "install rc $?"
date; env -u VIRTUAL_ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /usr/bin/time -v -o ../make-run-time.txt make run; echo "make run rc $?"; date
