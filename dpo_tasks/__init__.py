"""Persona DPO: one DPO-aligned LoRA adapter per user persona, kept fresh by Airflow."""

__version__ = "0.1.0"
