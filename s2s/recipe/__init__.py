"""Stage-numbered recipes (ESPnet-style run.sh) implemented in Python, so they are testable.

recipes/<corpus>/<task>1/run.sh is a thin wrapper around `python -m s2s.cli.recipe`; the
recipe's conf/recipe.yaml (RecipeConfig) says which corpus, fields, sets and configs it uses.
"""
