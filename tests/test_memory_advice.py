"""The sampler's GPU memory advice (nodes/memory.py): when it speaks, and that it names the fix."""

from __future__ import annotations

from conftest import load_pack

memory = load_pack("nodes.memory")
GIB = 2**30
WEIGHTS_13B_BF16 = 12_991_493_184 * 2  # the reference parameter count, 2 bytes each


def test_the_13b_model_fits_an_80gb_gpu_and_not_a_24gb_one():
    assert memory.does_not_fit(WEIGHTS_13B_BF16, 80 * GIB) is None
    assert memory.does_not_fit(WEIGHTS_13B_BF16, 32 * GIB) is None  # 24.2 + 3 GiB
    text = memory.does_not_fit(WEIGHTS_13B_BF16, 24 * GIB)
    assert text is not None and "24.2 GiB" in text and "24.0 GiB in all" in text
    assert "offload to low_memory" in text and "fp8_e4m3fn" in text
    assert memory.does_not_fit(WEIGHTS_13B_BF16 // 2, 16 * GIB) is None  # fp8 weights (12.1 GiB) on a 16 GB card


def test_out_of_memory_text_says_what_was_being_made_and_the_fix():
    text = memory.out_of_memory(704, 1216, 129, "block_swap")
    assert "1216x704, 129 frames" in text and "offload=block_swap" in text and "low_memory" in text


def test_out_of_memory_advice_fits_each_offload_mode():
    """Never the setting already in use: none -> offload; block_swap -> more blocks or low_memory;
    low_memory -> only fp8 weights or a smaller video."""
    none = memory.out_of_memory(704, 704, 129, "none")
    assert "offload to low_memory" in none and "block_swap" in none and "fp8_e4m3fn" in none
    swap = memory.out_of_memory(704, 704, 129, "block_swap")
    assert "larger swap_blocks" in swap and "offload to low_memory" in swap
    low = memory.out_of_memory(704, 704, 129, "low_memory")
    assert "offload=low_memory" in low and "set offload" not in low and "swap_blocks" not in low
    assert "fp8_e4m3fn" in low and "image_size" in low
    low_fp8 = memory.out_of_memory(704, 704, 129, "low_memory", "fp8_e4m3fn")
    assert "set offload" not in low_fp8 and "weight_dtype" not in low_fp8 and "image_size" in low_fp8
    swap_fp8 = memory.out_of_memory(704, 704, 129, "block_swap", "fp8_e4m3fn_fast")
    assert "weight_dtype" not in swap_fp8 and "low_memory" in swap_fp8


def test_unknown_offload_mode_is_an_error():
    import pytest
    with pytest.raises(ValueError, match="offload"):
        memory.fix("disk")
