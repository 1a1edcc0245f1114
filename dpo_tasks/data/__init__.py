"""Shipped prompt data (JSONL) and the script that builds it (`build.py`)."""
