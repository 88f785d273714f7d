"""Make the leak zoo (leak_zoo.py) importable whatever pytest's import mode."""
