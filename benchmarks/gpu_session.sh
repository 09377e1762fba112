#!/usr/bin/env bash
# Everything issue 11 asks to be checked on a GPU, as one prepared run for a session lent a
# GPU machine (it reaches no registry and does not get ../shared). From this machine:
#   mkdir -p device-data && cp ../shared/datasets/cifar10-train-jpeg.tar.gz device-data/
# then run `bash benchmarks/gpu_session.sh` there, carrying device-data; results go to
# $OUT (or ./gpu-results). Steps: the backend-parametrised tests on CuPy, the GPU step
# benchmark against PyTorch cuDNN and convlab's CPU, and the reference preset on CIFAR-10
# (45,000 / 5,000) with the README's CPU recipe.
set -uo pipefail
out="${OUT:-gpu-results}"
mkdir -p "$out"
python3 -m pip install -q --no-build-isolation --no-deps -e . > "$out/install.log" 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt" 2>&1
python3 -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__)" \
    >> "$out/gpu.txt" 2>&1
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_backend.py -k cupy \
    > "$out/tests.log" 2>&1
echo "tests exit $?" >> "$out/tests.log"
(cd benchmarks && timeout 240 python3 gpu_reference_step.py --rounds 3) > "$out/bench.md" 2>&1
if [ -f device-data/cifar10-train-jpeg.tar.gz ]; then
    /usr/bin/time -v timeout 900 convlab-train --data device-data/cifar10-train-jpeg.tar.gz \
        --model reference --epochs 10 --batch-size 64 --lr 2e-3 --lr-schedule onecycle \
        --weight-decay 5e-4 --device cuda --verbose 2 --out "$out/cifar" \
        > "$out/cifar.log" 2>&1
fi
tail -n 3 "$out"/*.log "$out/bench.md"
