"""Vision-language models through mlx-vlm: images in chat content, fetched safely (fetch.py),
decoded and hashed here, processed in the HTTP process (numpy only), run by the engine
(see vision/model.py)."""
