"""LoRA for the Avatar transformer: key layouts (keys.py), weight access (weights.py), patching (apply.py)."""

from .apply import LoraError, LoraFile, LoraPatch, backup_bytes, load_lora, set_lora_files, set_loras
from .keys import Target, alias_table

__all__ = ["LoraError", "LoraFile", "LoraPatch", "Target", "alias_table", "backup_bytes", "load_lora", "set_lora_files", "set_loras"]
