"""Search served as an OpenAI-compatible model (`ponder serve`), and the search-tree viewer."""
