"""The course's training run (`python -m fastoptim train`), a user of the
library never imported by it: datasets (the moons data), nn (the course's
network in NumPy), train (the course's `model` and the command line)."""
