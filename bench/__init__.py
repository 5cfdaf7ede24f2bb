"""Benchmarks: the gateway pair against direct TCP and an stunnel pair (SPEC section 9)."""
