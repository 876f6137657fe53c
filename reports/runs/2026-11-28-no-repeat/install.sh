#!/bin/bash
set -uo pipefail
cd /work/run30 && rm -rf searchr3 && git clone -q /work/main searchr3 && cd searchr3 && git log --oneline -1
env -u VIRTUAL_ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin nice -n 10 make install > ../install.log 2>&1; echo "install rc $?"
