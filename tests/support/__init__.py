"""Helpers every test suite shares: the real daemon and CLI as subprocesses, real databases and
the processes that write them, archives good and hostile, waiting with deadlines. Tests import
them as `support.<module>`; conftest.py files only declare fixtures built from them."""
