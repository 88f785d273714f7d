"""Make the test helper module (report_factory) importable whatever pytest's import mode."""
