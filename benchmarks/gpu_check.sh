#!/bin/bash
# The CUDA path, measured in one short run on a lent GPU machine (see benchmarks/RESULTS.md).
# Expects, in the repository root: .whl/ (the efficientnet wheels, for the machine's Python) and
# .gpu/ (data-shapes, data-glyphs, and pseudo-<benchmark>-dcsm-crf[-confident] made by `wsseg segment`).
# Writes its results under $OUT.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0), 'bf16', torch.cuda.is_bf16_supported())"
# 1. stage 2: head choice on train, then the goals (pseudo vs ground truth), 20 epochs each
timeout 380 python3 benchmarks/stage2_goals.py train --data-shapes .gpu/data-shapes --data-glyphs .gpu/data-glyphs \
    --pseudo-root .gpu --work /tmp/s2 --device cuda --json $OUT/stage2_goals.json --with-plain
# 2. stage-2 inference on CUDA (one forward per image, batches of 8), glyphs val
timeout 60 python3 -m wsseg segment --quiet --run /tmp/s2/glyphs-full-pseudo --data .gpu/data-glyphs --split val \
    --method seg --out /tmp/segval --device cuda
timeout 60 python3 -m wsseg segment --quiet --run /tmp/s2/glyphs-full-pseudo --data .gpu/data-glyphs --split val \
    --method seg --tta --out /tmp/segval-tta --device cuda
# 3. the classifier's training on CUDA (bf16 autocast), 3 epochs of shapes
timeout 120 python3 -m wsseg train --quiet --data .gpu/data-shapes --out /tmp/clf --epochs 3 --device cuda && \
    cp /tmp/clf/history.json $OUT/classifier_history.json
# 4. DCSM maps on CUDA, shapes val
timeout 90 python3 -m wsseg maps --quiet --run /tmp/clf --data .gpu/data-shapes --split val --method dcsm \
    --out /tmp/maps --device cuda
ls $OUT
