"""The ML feed's plain modules: what a clip sounds like, and what makes two clips or prompts
alike (`sound_features`; `ml_dataset` in `dataset/`)."""
