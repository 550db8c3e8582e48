"""Exactly what the bento ships: the BentoML service and what it runs per request.

Imports only :mod:`mlops_template.core` and this package (``tests/unit/test_import_boundaries.py``);
the packaging step copies ``core/`` and ``serving/`` into the bento and nothing else.
"""
