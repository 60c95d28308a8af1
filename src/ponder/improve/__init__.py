"""The generator-verifier loop: rounds of search, outcome-checked data, policy distillation, verifier retraining."""
