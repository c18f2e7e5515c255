"""Importable apps that tests run in worker subprocesses (``tests.apps.<module>:app``)."""
