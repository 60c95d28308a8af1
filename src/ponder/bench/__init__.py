"""Benchmarks and experiment drivers: the top of the stack under the CLI. Each module measures something side by
side in one run (`ponder bench ...`) or drives an experiment that trains and evaluates (STaR); nothing below imports
them."""
