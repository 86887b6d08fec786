"""Inference: WanPipeline's denoising loop on any DiT call (`sampling.py`) and prompts -> frames
(`text_to_video.py`)."""
