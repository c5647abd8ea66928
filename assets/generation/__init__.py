"""Prompts in: prompt sheets read and checked, each generation's key, the submissions ledger,
the budget, the submission step, and the handover of created tasks to the harvest
(docs/generation.md)."""
