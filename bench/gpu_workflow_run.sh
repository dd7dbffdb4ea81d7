#!/usr/bin/env bash
# Issue 25 on the GPU machine, one plan per device call (bench/README.md, "Whole workflow"):
#
#   bash bench/gpu_workflow_run.sh main|cards|fallback|smoke        from the repo root; results under $OUT
#
# Needs the carry built by bench/build_carry.sh in $CARRY (default .gpu/perf; name it in the call's `carry`).
# Unpacks ComfyUI and the missing packages to /tmp/perf (kept while the machine stays warm), writes random
# model files of the real shapes (bench/workflow_assets.py) to /dev/shm when it has room (else /tmp), then:
#   main      single portrait, fast preset, 704x704, one 129-frame window, 2 steps: cold, same prompt again, new
#             seed; then warm 2- and 4-window clips at 1 step; then the VAE decode settings (bench_vae.py configs)
#   cards     the same portrait as on a 24 GiB and a 16 GiB card (memory fraction + ComfyUI's reserve), offload=auto
#   fallback  main's cold + new-seed runs only, 1 step (if main ran out of time or failed late)
#   smoke     the tiny files on the GPU (~1 min): the whole chain (wheels, comfy-aimdo, FA3, ComfyUI, the pack)
# Every plan stops starting work at ~570 s (device calls end at 600 s). Output: $OUT/env.txt, assets.jsonl,
# workflow.jsonl (rows: bench/README.md), comfy.log (ComfyUI's and Python's messages), report.md (the tables of
# bench/workflow_report.py), one noise mp4 if small enough to come back.
set -uo pipefail
PLAN=${1:-main}
OUT=${OUT:-$PWD/out}
CARRY=${CARRY:-.gpu/perf}
END=${END_S:-570}
mkdir -p "$OUT"
say() { echo "[$SECONDS s] $*"; }
export PYTHONUNBUFFERED=1

[ -d /tmp/perf/comfyui/comfy ] || { mkdir -p /tmp/perf/comfyui && tar -xJf "$CARRY/comfyui.tar.xz" -C /tmp/perf/comfyui; } || exit 1
[ -d /tmp/perf/site/av ] || { mkdir -p /tmp/perf/site && tar -xJf "$CARRY/site.tar.xz" -C /tmp/perf/site; } || exit 1
export PYTHONPATH=/tmp/perf/site${PYTHONPATH:+:$PYTHONPATH}
COMFY=/tmp/perf/comfyui
say "unpacked"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; df -h / /tmp /dev/shm; free -g; nproc
  python3 -c "import torch, av, comfy_aimdo, soxr, sqlalchemy, torchsde, pydantic; print('torch', torch.__version__, 'av', av.__version__)"
  python3 -c "import flash_attn_interface; print('FA3 ok')"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

SCALE=full; [ "$PLAN" = smoke ] && SCALE=tiny
SHM=$(df -BG --output=avail /dev/shm 2>/dev/null | tail -1 | tr -dc 0-9)
if [ "${SHM:-0}" -ge 50 ]; then BASE=/dev/shm/wf_$SCALE; else BASE=/tmp/wf_$SCALE; fi
python3 bench/workflow_assets.py --comfyui $COMFY --base $BASE --scale $SCALE --device cuda \
    >> "$OUT/assets.jsonl" 2>> "$OUT/comfy.log" || { say "assets failed"; tail -30 "$OUT/comfy.log"; exit 1; }
cat "$OUT/assets.jsonl"
say "model files in $BASE"

wf() {  # one ComfyUI process; it starts no run that would end after $END s of this call
    python3 bench/workflow_gpu.py --comfyui $COMFY --base $BASE --out "$OUT/workflow.jsonl" --scale $SCALE \
        --deadline-s $((END - SECONDS)) "$@" 2>> "$OUT/comfy.log" || say "workflow_gpu.py exited $? ($*)"
}
PORTRAIT=(--preset fast --image-size 704 --windows 1)
case $PLAN in
    main)     wf --tag fast_704 "${PORTRAIT[@]}" --steps 2 --runs cold same new_seed --long-windows 2 4 --long-steps 1 \
                 --vae-bench template untiled t512 t128 bench channels_last --vae-budget-s 110;;
    cards)    wf --tag card24_fast_704 "${PORTRAIT[@]}" --offload auto --card-gib 24 --steps 2 --runs cold new_seed
              wf --tag card16_fast_704 "${PORTRAIT[@]}" --offload auto --card-gib 16 --steps 2 --runs cold new_seed;;
    fallback) wf --tag fast_704_fallback "${PORTRAIT[@]}" --steps 1 --runs cold new_seed;;
    smoke)    wf --tag smoke --preset fast --image-size 128 --frames 5 --window 2 --steps 2 --runs cold same new_seed \
                 --long-windows 2 --vae-bench template untiled --vae-budget-s 30;;
    *)        say "unknown plan $PLAN"; exit 2;;
esac
MP4=$(find $BASE/output -name '*.mp4' -size -15M 2>/dev/null | head -1)
[ -n "$MP4" ] && cp "$MP4" "$OUT/" && ls -la "$OUT/$(basename "$MP4")"
grep -E "Error|Traceback|error" "$OUT/comfy.log" | tail -5
python3 bench/workflow_report.py "$OUT/workflow.jsonl" > "$OUT/report.md" 2>&1; cat "$OUT/report.md"
say "done ($PLAN)"
