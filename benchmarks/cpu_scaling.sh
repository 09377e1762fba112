#!/usr/bin/env bash
# Issue 10's measurements at 1 to 16 threads, as one prepared run for a session lent a
# machine with 16 cores (the device machine reaches no registry and does not get
# ../shared). From this machine:
#   mkdir -p device-data && cp ../shared/bench/fair_vs_torch.py device-data/
#   pip download --no-deps -d device-data threadpoolctl   # installed there if it lacks one
# then run `bash benchmarks/cpu_scaling.sh` there, carrying device-data; results go to $OUT
# (or ./cpu-results). Steps: the threaded tests at 16 threads, the fair harness (each
# library in its own process, alternated, medians) at 1, 2, 4, 8 and 16 threads, the
# reference step split by layer kind at 1, 4 and 16, and peak memory. About 5 minutes.
set -uo pipefail
out="${OUT:-cpu-results}"
mkdir -p "$out"
python3 -c "import threadpoolctl" 2> /dev/null ||
    python3 -m pip install -q --no-index --find-links device-data threadpoolctl \
        > "$out/install.log" 2>&1
python3 -m pip install -q --no-build-isolation --no-deps -e . >> "$out/install.log" 2>&1
{
    nproc
    lscpu | grep -E "Model name|Core|Socket|L2|L3"
    env | grep -E "^(OPENBLAS|OMP|MKL)_" || true
    python3 -c "import numpy, torch, threadpoolctl as t; print('numpy', numpy.__version__,
'torch', torch.__version__); print(t.threadpool_info())"
} > "$out/machine.txt" 2>&1
OMP_NUM_THREADS=16 timeout 150 python3 -m pytest -q -p no:cacheprovider \
    tests/test_fast_layers.py tests/test_threads.py > "$out/tests.log" 2>&1
echo "tests exit $?" >> "$out/tests.log"
for threads in 1 2 4 8 16; do
    timeout 100 python3 device-data/fair_vs_torch.py --threads "$threads" --rounds 3 \
        > "$out/fair-$threads.md" 2>&1
done
for threads in 1 4 16; do
    (cd benchmarks && timeout 60 python3 profile_reference.py --threads "$threads" --rounds 3) \
        > "$out/profile-$threads.md" 2>&1
done
(cd benchmarks && timeout 60 python3 peak_memory.py --threads 16) > "$out/memory.md" 2>&1
tail -n 1 "$out"/tests.log "$out"/fair-*.md
