"""Training: SFT of the policies (recipes under `recipes/`, the walks in `data`), PRM/ORM training, GRPO, and the
shared loop that saves its state every few minutes and resumes a killed run."""
