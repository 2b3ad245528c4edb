"""Self-service knowledge base: articles from a folder and links, searched at intake and by agents (#21)."""
