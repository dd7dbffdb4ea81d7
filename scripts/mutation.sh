#!/usr/bin/env bash
# Mutation testing of one avatar_core package (developer command, not CI), gently on a shared machine:
#   scripts/mutation.sh sampling            # or train, lora, distributed, conditioning, sampling/resume.py, ...
#   scripts/mutation.sh lora --score-only   # the last run's score and survivors
# Runs mutmut with one worker at low priority in a copy of the pack (see scripts/mutation.py --help);
# PYTHON picks the interpreter (default: the `python` on PATH, which needs mutmut: pip install mutmut).
set -euo pipefail
cd "$(dirname "$0")/.."
exec nice -n "${MUTATION_NICE:-15}" "${PYTHON:-python}" scripts/mutation.py "$@"
