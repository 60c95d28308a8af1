"""The data engine: labelled steps for verifiers (exact oracle labels, Math-Shepherd Monte-Carlo, OmegaPRM), the
states a policy reaches, and the standard formats (PRM800K, Math-Shepherd, MATH-APS) in and out."""
