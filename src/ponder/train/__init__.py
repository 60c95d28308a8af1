"""Training recipes: SFT of the tiny policies (and, in later steps, PRMs and GRPO)."""
