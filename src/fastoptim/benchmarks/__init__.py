"""fastoptim's benchmarks (`python -m fastoptim bench`): users of the library,
never imported by it. adam: the protocol and the Adam tables; family: every
optimizer against its own ceiling; seed: the course's NumPy code; cli: the
command line."""
