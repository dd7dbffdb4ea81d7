"""LoRA for the Avatar transformer: the file format (format.py: every key layout read and the one written)
and patching (apply.py: files -> typed weight patches on the linear layers, model/patches.py)."""

from .apply import LoraError, LoraFile, LoraPatch, backup_bytes, load_lora, set_lora_files, set_loras
from .format import Target, alias_table

__all__ = ["LoraError", "LoraFile", "LoraPatch", "Target", "alias_table", "backup_bytes", "load_lora", "set_lora_files", "set_loras"]
