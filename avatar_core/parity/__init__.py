"""Checks of this implementation against fixtures made by running the official code: `python -m avatar_core.parity DIR`.

Folder formats (found by their files, never by case names):
  shared/fixtures/parity  `tiny_config.json`: transformer forward (transformer.py), conditioning
                          pre-processing (conditioning.py), sampler (sampling.py);
  shared/fixtures/text    `tiny_llava_config.json` + `case_*.json`: the LLaVA text conditioning (text.py).
"""
