"""The `ml_dataset` snapshot: its spec, selection, similarity groups, splits, exports, card."""
