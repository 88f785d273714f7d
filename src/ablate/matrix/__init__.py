"""The matrix runner: ``python -m ablate.matrix step=V0,V16,V17,V18 --multirun``."""
