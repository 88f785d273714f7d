"""Make the test helper module (runs_craft) importable whatever pytest's import mode."""
