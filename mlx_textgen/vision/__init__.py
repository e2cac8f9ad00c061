"""Vision support: fetching remote images safely (``fetch``), and the mlx-vlm door."""
