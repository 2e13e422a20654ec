"""64-bit FNV-1a: the hash both the engine and the C side compute (the rules file's seal, the
launch spec's file name): a few lines each, no library, the same digits in both languages."""

_OFFSET, _PRIME, _MASK = 0xCBF29CE484222325, 0x100000001B3, (1 << 64) - 1


def fnv1a(data: bytes) -> str:
    """The hash of ``data`` as 16 lowercase hex digits."""
    h = _OFFSET
    for b in data:
        h = ((h ^ b) * _PRIME) & _MASK
    return f"{h:016x}"
